/*
 * A list whose response is cut short: a proxy in front of the API server closes the connection in
 * the middle of the EndpointSlice list's body (as socat did to the bench's churn agent under
 * emulation, and as a load balancer can). node-fetch 2 never settles such a body, so without a
 * list timeout KubeSource.start() never resolved and the agent never synced, saying nothing. With
 * it, the list is abandoned, the informer restarted, and start() resolves with everything.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeSource, type InformerRestart } from '../../src/sources/kube.js';
import { loadKubeConfig } from '../../src/sources/kubeconfig.js';
import { rawEndpointSlice, rawNode, rawService } from '../fake-apiserver/fixtures.js';
import { writeKubeconfig } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';

const SLICES_PATH = '/apis/discovery.k8s.io/v1/endpointslices';

/** Forwards to `upstream`; the first non-watch EndpointSlice list gets half its body, then a closed connection. */
function cuttingProxy(upstream: string): { server: Server; cut: () => number } {
  let cuts = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', upstream);
    const up = request(url, { method: req.method, headers: req.headers }, (upRes) => {
      const cutThis = cuts === 0 && url.pathname === SLICES_PATH && url.searchParams.get('watch') === null;
      if (!cutThis) {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        return;
      }
      cuts += 1;
      const chunks: Buffer[] = [];
      upRes.on('data', (c: Buffer) => chunks.push(c));
      upRes.on('end', () => {
        const body = Buffer.concat(chunks);
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
        res.write(body.subarray(0, Math.floor(body.length / 2)));
        setTimeout(() => res.socket?.destroy(), 20);
      });
    });
    req.pipe(up);
  });
  return { server, cut: () => cuts };
}

describe('KubeSource: a list cut short by the connection closing', () => {
  let api: FakeApiServer;
  let proxy: ReturnType<typeof cuttingProxy>;
  let source: KubeSource | null = null;

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    for (let i = 0; i < 50; i++) {
      api.createOrUpdate(rawService(`svc-${i}`, { clusterIP: `10.96.0.${i + 10}` }));
      api.createOrUpdate(rawEndpointSlice(`svc-${i}-1`, `svc-${i}`, ['10.0.0.1', '10.0.0.2']));
    }
    api.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10'] }));
    proxy = cuttingProxy(api.url);
    await new Promise<void>((r) => proxy.server.listen(0, '127.0.0.1', r));
  });

  afterEach(async () => {
    await source?.stop();
    source = null;
    proxy.server.closeAllConnections();
    await new Promise<void>((r) => proxy.server.close(() => r()));
    await api.stop();
  });

  test('the list is abandoned after listTimeoutMs, the informer restarts, start() resolves with every slice', async () => {
    const url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`;
    const dir = mkdtempSync(join(tmpdir(), 'vipr-kc-test-'));
    let config;
    try {
      ({ config } = loadKubeConfig({ kubeconfig: writeKubeconfig(url, dir), env: {} }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const restarts: InformerRestart[] = [];
    source = new KubeSource({
      kubeConfig: config,
      nodeName: 'node-a',
      restartBackoff: { initial: 20, max: 160 },
      listTimeoutMs: 500,
      onRestart: (r) => restarts.push(r),
    });
    const started = Date.now();
    await source.start();
    expect(proxy.cut()).toBe(1);
    expect(source.current().endpointSlices.size).toBe(50);
    expect(source.current().services.size).toBe(50);
    expect(restarts).toEqual([
      { resource: 'endpointslices', attempt: 1, delayMs: 20, error: 'endpointslices: the list did not complete within 0.5 s' },
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect(api.listRequests(SLICES_PATH)).toHaveLength(2);
  });
});
