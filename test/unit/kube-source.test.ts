/*
 * KubeSource with the real @kubernetes/client-node informers against the fake API server:
 * initial lists, propagation, kube-proxy's label selector, and the failure modes the 1.x informer
 * does not handle by itself (dropped connections, API down, 410 after compaction).
 */
import { oneLineConfigError } from '../helpers/errors.js';
import type { ObjectDeltas } from '../../src/sources/types.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterObjects } from '../../src/model/k8s.js';
import type { NodeInfo } from '../../src/model/types.js';
import { ApiException } from '@kubernetes/client-node';
import {
  KubeSource,
  SERVICE_PROXY_LABEL_SELECTOR,
  describeKubeError,
  nodeInfoFrom,
  type InformerRestart,
} from '../../src/sources/kube.js';
import { loadKubeConfig } from '../../src/sources/kubeconfig.js';
import { rawEndpointSlice, rawNode, rawService } from '../fake-apiserver/fixtures.js';
import { kubeconfigFor, writeKubeconfig } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';

const HEADLESS = { 'service.kubernetes.io/headless': '' };
const OTHER_PROXY = { 'service.kubernetes.io/service-proxy-name': 'someone-else' };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function serviceNames(o: ClusterObjects): string[] {
  return [...o.services.keys()].sort();
}

function sliceIPs(o: ClusterObjects, key: string): string[] {
  return (o.endpointSlices.get(key)?.endpoints ?? []).flatMap((e) => e.addresses);
}

describe('KubeSource against the fake API server', () => {
  let server: FakeApiServer;
  const kubeconfigDir = mkdtempSync(join(tmpdir(), 'vipr-kc-test-'));
  afterAll(() => rmSync(kubeconfigDir, { recursive: true, force: true }));
  let source: KubeSource | null = null;
  /** The source's whole view at each announcement, and the deltas announced. */
  let changes: ClusterObjects[];
  let deltas: ObjectDeltas[];
  let nodeChanges: NodeInfo[];
  let restarts: InformerRestart[];

  function newSource(): KubeSource {
    const kubeconfig = writeKubeconfig(server.url, mkdtempSync(join(kubeconfigDir, 'k-')));
    const { config } = loadKubeConfig({ kubeconfig, env: {} });
    const s = new KubeSource({
      kubeConfig: config,
      nodeName: 'node-a',
      restartBackoff: { initial: 20, max: 160 },
      onRestart: (r) => restarts.push(r),
    });
    s.onChange((d) => {
      deltas.push(d);
      changes.push(s.current());
    });
    s.onNodeChange((n) => nodeChanges.push(n));
    source = s;
    return s;
  }

  beforeEach(async () => {
    changes = [];
    deltas = [];
    nodeChanges = [];
    restarts = [];
    server = new FakeApiServer();
    await server.start();
    server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
    server.createOrUpdate(rawService('db', { namespace: 'prod', clusterIP: '10.96.0.20' }));
    server.createOrUpdate(rawService('headless', { labels: HEADLESS, clusterIP: '10.96.0.30' }));
    server.createOrUpdate(rawService('elsewhere', { labels: OTHER_PROXY, clusterIP: '10.96.0.40' }));
    server.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.0.0.1', '10.0.0.2']));
    server.createOrUpdate(rawEndpointSlice('headless-1', 'headless', ['10.0.0.9'], { labels: HEADLESS }));
    server.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10'], externalIPs: ['203.0.113.5'], zone: 'zone-1' }));
    server.createOrUpdate(rawNode('node-b', { internalIPs: ['192.168.1.11'] }));
  });

  afterEach(async () => {
    await source?.stop();
    source = null;
    await server.stop();
  });

  test('initial list: filtered by the kube-proxy selector, node facts known, start() after lists', async () => {
    const s = newSource();
    await s.start();
    const objs = s.current();
    expect(serviceNames(objs)).toEqual(['default/web', 'prod/db']);
    expect([...objs.endpointSlices.keys()]).toEqual(['default/web-1']);
    expect(sliceIPs(objs, 'default/web-1')).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(objs.services.get('prod/db')?.clusterIPs).toEqual(['10.96.0.20']);
    expect(s.node()).toEqual({ name: 'node-a', zone: 'zone-1', ips: ['192.168.1.10', '203.0.113.5'] });

    // Selectors were sent on both list and watch.
    for (const path of ['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices']) {
      expect(server.listRequests(path).map((r) => r.query.labelSelector)).toEqual([SERVICE_PROXY_LABEL_SELECTOR]);
      await waitFor(() => server.watchRequests(path).length === 1, `watch of ${path}`);
      expect(server.watchRequests(path)[0]?.query.labelSelector).toBe(SERVICE_PROXY_LABEL_SELECTOR);
    }
    expect(server.listRequests('/api/v1/nodes').map((r) => r.query.fieldSelector)).toEqual(['metadata.name=node-a']);
    expect(changes).toEqual([]); // the initial state is what start() returns, not a change
  });

  test('IPv6 and dual-stack objects pass through: cluster IPs of both families, IPv6 slices, canonical addresses', async () => {
    const dual = rawService('dual', { clusterIP: '10.96.0.60' });
    Object.assign(dual.spec as Record<string, unknown>, {
      clusterIPs: ['10.96.0.60', 'FD00:10:96:0:0:0:0:60'],
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
    });
    server.createOrUpdate(dual);
    server.createOrUpdate({ ...rawEndpointSlice('dual-v6', 'dual', ['fd00:10:244:0:0:0:0:7']), addressType: 'IPv6' });
    const s = newSource();
    await s.start();
    expect(s.current().services.get('default/dual')).toMatchObject({
      clusterIPs: ['10.96.0.60', 'fd00:10:96::60'],
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
    });
    expect(s.current().endpointSlices.get('default/dual-v6')).toMatchObject({ addressType: 'IPv6', endpoints: [{ addresses: ['fd00:10:244::7'] }] });
    // And as a watch event.
    server.createOrUpdate({ ...rawEndpointSlice('dual-v6', 'dual', ['fd00:10:244::7', 'fd00:10:244::8']), addressType: 'IPv6' });
    await waitFor(() => changes.length === 1, 'IPv6 slice update');
    expect(sliceIPs(changes[0]!, 'default/dual-v6')).toEqual(['fd00:10:244::7', 'fd00:10:244::8']);
  });

  test('adds, updates and deletes propagate; no-op updates and invalid objects do not', async () => {
    const s = newSource();
    await s.start();

    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    await waitFor(() => changes.length === 1, 'add');
    expect(serviceNames(changes[0]!)).toEqual(['default/api', 'default/web', 'prod/db']);
    // Only the object that changed is announced, with what it was before.
    expect([...deltas[0]!.services].map(([k, c]) => [k, c.previous, c.current?.clusterIPs[0]])).toEqual([['default/api', null, '10.96.0.50']]);
    expect(deltas[0]!.endpointSlices.size).toBe(0);

    server.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.0.0.1', '10.0.0.3']));
    await waitFor(() => changes.length === 2, 'slice update');
    expect(sliceIPs(changes[1]!, 'default/web-1')).toEqual(['10.0.0.1', '10.0.0.3']);

    // Same content, new resourceVersion: a MODIFIED event that changes nothing.
    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    await sleep(150);
    expect(changes).toHaveLength(2);

    // Invalid: logged and skipped, the previous valid version stays.
    const broken = rawService('api', { clusterIP: '10.96.0.50' });
    (broken.spec as { ports: Array<{ port: number }> }).ports[0]!.port = 70000;
    server.createOrUpdate(broken);
    await sleep(150);
    expect(changes).toHaveLength(2);
    expect(s.current().services.get('default/api')?.ports[0]?.port).toBe(80);

    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50', port: 8443 }));
    await waitFor(() => changes.length === 3, 'valid update after an invalid one');
    expect(changes[2]!.services.get('default/api')?.ports[0]?.port).toBe(8443);

    server.delete('Service', 'default', 'api');
    await waitFor(() => changes.length === 4, 'delete');
    expect(serviceNames(changes[3]!)).toEqual(['default/web', 'prod/db']);
    expect([...deltas[3]!.services].map(([k, c]) => [k, c.previous?.ports[0]?.port, c.current])).toEqual([['default/api', 8443, null]]);
    expect(restarts).toEqual([]);
  });

  test('a service that becomes headless or proxied elsewhere disappears; and comes back', async () => {
    const s = newSource();
    await s.start();
    server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10', labels: OTHER_PROXY }));
    await waitFor(() => changes.length === 1, 'filtered out');
    expect(serviceNames(s.current())).toEqual(['prod/db']);
    server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
    await waitFor(() => changes.length === 2, 'back');
    expect(serviceNames(s.current())).toEqual(['default/web', 'prod/db']);
    // Objects that never match are never seen.
    server.createOrUpdate(rawService('another-headless', { labels: HEADLESS }));
    await sleep(100);
    expect(changes).toHaveLength(2);
  });

  test("node address and zone changes reach onNodeChange; other nodes' do not", async () => {
    const s = newSource();
    await s.start();
    server.createOrUpdate(rawNode('node-b', { internalIPs: ['192.168.1.99'] }));
    server.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10', '192.168.1.12'], zone: 'zone-2' }));
    await waitFor(() => nodeChanges.length === 1, 'node change');
    expect(nodeChanges[0]).toEqual({ name: 'node-a', zone: 'zone-2', ips: ['192.168.1.10', '192.168.1.12'] });
    await sleep(100);
    expect(nodeChanges).toHaveLength(1);
    expect(changes).toEqual([]);
  });

  test('dropped connections: informers restart, resume from their resourceVersion, catch up', async () => {
    const s = newSource();
    await s.start();
    await waitFor(() => server.activeWatches === 3, 'three watches');
    const listsBefore = server.listRequests().length;

    server.dropConnections();
    // Written before the informers reconnect: must arrive through the replay.
    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    await waitFor(() => changes.length >= 1 && changes.at(-1)!.services.has('default/api'), 'catch up');
    expect(s.restarts).toBeGreaterThanOrEqual(3);
    expect(restarts.map((r) => r.resource).sort()).toEqual(['endpointslices', 'node', 'services']);
    expect(restarts.every((r) => r.attempt === 1 && r.delayMs === 20)).toBe(true);
    expect(server.listRequests().length).toBe(listsBefore); // resumed, not relisted
    await waitFor(() => server.activeWatches === 3, 'watches re-established');

    server.createOrUpdate(rawEndpointSlice('api-1', 'api', ['10.0.1.1']));
    await waitFor(() => s.current().endpointSlices.has('default/api-1'), 'live after restart');
  });

  test('API down for a while: nothing changes meanwhile, backoff grows, it catches up after up()', async () => {
    const s = newSource();
    await s.start();
    const before = s.current();
    await server.down();
    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    server.delete('Service', 'prod', 'db');
    await sleep(1200);
    expect(changes).toEqual([]);
    expect(s.current()).toEqual(before);
    const attempts = restarts.filter((r) => r.resource === 'services').map((r) => r.delayMs);
    expect(attempts.slice(0, 4)).toEqual([20, 40, 80, 160]);
    expect(Math.max(...attempts)).toBe(160); // capped

    await server.up();
    await waitFor(() => changes.length >= 1, 'catch up after up()');
    await sleep(100);
    expect(serviceNames(s.current())).toEqual(['default/api', 'default/web']);
    expect(changes).toHaveLength(1); // both changes in one announcement (one replayed burst)
  });

  test('410 after compaction: relist, and no onChange when nothing changed', async () => {
    const s = newSource();
    await s.start();
    await waitFor(() => server.activeWatches === 3, 'three watches');
    // A write the informers do not see (filtered out) leaves their resourceVersion behind.
    server.createOrUpdate(rawService('hidden', { labels: HEADLESS }));
    server.compact();
    const servicesLists = server.listRequests('/api/v1/services').length;
    const sliceLists = server.listRequests('/apis/discovery.k8s.io/v1/endpointslices').length;
    server.endWatches();
    await waitFor(
      () => server.listRequests('/api/v1/services').length === servicesLists + 1 &&
        server.listRequests('/apis/discovery.k8s.io/v1/endpointslices').length === sliceLists + 1,
      'relists after 410',
    );
    await waitFor(() => server.activeWatches === 3, 'watches re-established');
    await sleep(100);
    expect(changes).toEqual([]);
    expect(restarts).toEqual([]); // a clean end and a 410 are handled by the informer itself
    expect(serviceNames(s.current())).toEqual(['default/web', 'prod/db']);

    // Objects rewritten without a real change while the client could not see it: the relist
    // delivers them as updates (new resourceVersions), and still nothing is announced.
    await server.down();
    server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
    server.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.0.0.1', '10.0.0.2']));
    server.compact();
    const listsBefore = server.listRequests().length;
    await server.up();
    await waitFor(() => server.listRequests().length >= listsBefore + 3, 'three relists');
    await waitFor(() => server.activeWatches === 3, 'watches re-established');
    await sleep(100);
    expect(changes).toEqual([]);

    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    await waitFor(() => changes.length === 1, 'live after relist');
  });

  test('bookmarks keep the resourceVersion fresh: after compaction a resumed watch needs no relist', async () => {
    const s = newSource();
    await s.start();
    await waitFor(() => server.activeWatches === 3, 'three watches');
    expect(server.watchRequests().every((r) => r.query.allowWatchBookmarks === 'true')).toBe(true);
    server.createOrUpdate(rawService('hidden', { labels: HEADLESS }));
    server.bookmark();
    await sleep(100);
    server.compact();
    const lists = server.listRequests().length;
    const watchesBefore = server.watchRequests().length;
    server.endWatches();
    await waitFor(() => server.watchRequests().length === watchesBefore + 3, 'resumed watches');
    await waitFor(() => server.activeWatches === 3, 'watches re-established');
    expect(server.listRequests().length).toBe(lists);
    expect(changes).toEqual([]);
  });

  test('410 after compaction with real changes: the relists announce the difference', async () => {
    const s = newSource();
    await s.start();
    await server.down();
    server.delete('Service', 'prod', 'db');
    server.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.0.0.2']));
    server.compact();
    await sleep(100);
    expect(changes).toEqual([]);
    const listsBefore = server.listRequests().length;
    await server.up();
    await waitFor(
      () => serviceNames(s.current()).join() === 'default/web' && sliceIPs(s.current(), 'default/web-1').join() === '10.0.0.2',
      'relisted state',
    );
    await sleep(100);
    // Services and slices relisted (each informer on its own: one announcement each at most,
    // none from the unchanged node), and every announcement is a real difference.
    expect(server.listRequests().length - listsBefore).toBeGreaterThanOrEqual(2);
    expect(changes.length).toBeGreaterThanOrEqual(1);
    expect(changes.length).toBeLessThanOrEqual(2);
    const last = changes.at(-1)!;
    expect(serviceNames(last)).toEqual(['default/web']);
    expect(sliceIPs(last, 'default/web-1')).toEqual(['10.0.0.2']);
    if (changes.length === 2) expect(changes[0]).not.toEqual(changes[1]);
  });

  test('start() waits for an API that is down at first', async () => {
    await server.down();
    const s = newSource();
    let started = false;
    const starting = s.start().then(() => {
      started = true;
    });
    await sleep(300);
    expect(started).toBe(false);
    expect(s.restarts).toBeGreaterThan(0);
    await server.up();
    await starting;
    expect(serviceNames(s.current())).toEqual(['default/web', 'prod/db']);
  });

  test('stop() closes every watch and nothing is announced afterwards', async () => {
    const s = newSource();
    await s.start();
    await waitFor(() => server.activeWatches === 3, 'three watches');
    await s.stop();
    await waitFor(() => server.activeWatches === 0, 'watches closed');
    server.createOrUpdate(rawService('api', { clusterIP: '10.96.0.50' }));
    await sleep(100);
    expect(changes).toEqual([]);
    expect(restarts).toEqual([]);
  });
});

describe('KubeSource helpers', () => {
  test('describeKubeError: one line for API exceptions, fetch errors and statuses', () => {
    const forbidden = new ApiException(
      403,
      'Unknown API Status Code!',
      JSON.stringify({ kind: 'Status', message: 'services is forbidden: User "x" cannot list', code: 403 }),
      {},
    );
    expect(describeKubeError(forbidden)).toBe('HTTP 403: services is forbidden: User "x" cannot list');
    const refused = Object.assign(new Error('request to http://127.0.0.1:1/api failed'), { code: 'ECONNREFUSED' });
    expect(describeKubeError(refused)).toBe('request to http://127.0.0.1:1/api failed (ECONNREFUSED)');
    expect(describeKubeError(Object.assign(new Error('Forbidden'), { statusCode: 403 }))).toBe('Forbidden (403)');
  });

  test('nodeInfoFrom: InternalIPs before ExternalIPs, both families canonical, no duplicates, zone label', () => {
    expect(
      nodeInfoFrom('n', {
        metadata: { name: 'n', labels: { 'topology.kubernetes.io/zone': 'z' } },
        status: {
          addresses: [
            { type: 'ExternalIP', address: '203.0.113.1' },
            { type: 'InternalIP', address: 'FD00:0:0:0:0:0:0:1' },
            { type: 'InternalIP', address: '10.0.0.1' },
            { type: 'Hostname', address: 'n' },
            { type: 'ExternalIP', address: '10.0.0.1' },
            { type: 'ExternalIP', address: 'fd00::1' },
          ],
        },
      }),
    ).toEqual({ name: 'n', zone: 'z', ips: ['fd00::1', '10.0.0.1', '203.0.113.1'] });
    expect(nodeInfoFrom('n', null)).toEqual({ name: 'n', zone: null, ips: [] });
  });
});

describe('loadKubeConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vipr-kc-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('--kubeconfig wins over $KUBECONFIG', () => {
    const a = writeKubeconfig('http://127.0.0.1:1111', mkdtempSync(join(dir, 'a-')));
    const b = writeKubeconfig('http://127.0.0.1:2222', mkdtempSync(join(dir, 'b-')));
    const loaded = loadKubeConfig({ kubeconfig: a, env: { KUBECONFIG: b } });
    expect(loaded.config.getCurrentCluster()?.server).toBe('http://127.0.0.1:1111');
    expect(loaded.origin).toBe(`--kubeconfig ${a}`);
  });

  test('$KUBECONFIG path list: the first file decides the context, later ones are merged', () => {
    const a = writeKubeconfig('http://127.0.0.1:1111', mkdtempSync(join(dir, 'a-')));
    const other = join(dir, 'other');
    writeFileSync(other, kubeconfigFor('http://127.0.0.1:3333').replaceAll('fake', 'other'));
    const loaded = loadKubeConfig({ env: { KUBECONFIG: `${a}:${other}` } });
    expect(loaded.config.getCurrentCluster()?.server).toBe('http://127.0.0.1:1111');
    expect(loaded.config.getClusters().map((c) => c.name).sort()).toEqual(['fake', 'other']);
    // Duplicate names: the first file's definition wins, as kubectl.
    const again = loadKubeConfig({ env: { KUBECONFIG: `${other}:${a}` } });
    expect(again.config.getCurrentCluster()?.server).toBe('http://127.0.0.1:3333');
    expect(again.config.getUsers().map((u) => u.name)).toEqual(['anonymous']);
  });

  test('in-cluster when KUBERNETES_SERVICE_HOST is set and a token is mounted', () => {
    const root = mkdtempSync(join(dir, 'sa-'));
    mkdirSync(join(root, 'var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
    writeFileSync(join(root, 'var/run/secrets/kubernetes.io/serviceaccount/token'), 'token');
    // The cluster CA, as the kubelet mounts it next to the token (loading checks it is a certificate).
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(root, 'ca.key'), '-out', join(root, 'var/run/secrets/kubernetes.io/serviceaccount/ca.crt'), '-days', '1', '-subj', '/CN=cluster-ca'], { stdio: 'ignore' });
    const loaded = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
      serviceAccountRoot: root,
    });
    expect(loaded.config.getCurrentCluster()?.server).toBe('https://10.96.0.1:443');
    expect(loaded.origin).toBe('in-cluster service account');
  });

  test('clear one-line errors', () => {
    const oneLine = oneLineConfigError;
    expect(oneLine(() => loadKubeConfig({ env: {} }))).toMatch(/no Kubernetes API configuration found: pass --kubeconfig/);
    expect(oneLine(() => loadKubeConfig({ kubeconfig: join(dir, 'missing'), env: {} }))).toBe(
      `cannot load kubeconfig ${join(dir, 'missing')}: no such file`,
    );
    const noContext = join(dir, 'no-context');
    writeFileSync(noContext, kubeconfigFor('http://127.0.0.1:1').replace('current-context: fake', ''));
    expect(oneLine(() => loadKubeConfig({ kubeconfig: noContext, env: {} }))).toMatch(/no current-context set/);
    expect(
      oneLine(() =>
        loadKubeConfig({
          env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
          serviceAccountRoot: join(dir, 'nowhere'),
        }),
      ),
    ).toMatch(/in-cluster config: no service-account token at .*nowhere/);
  });
});
