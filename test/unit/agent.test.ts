/*
 * The agent's sync loop: the first sync and node changes rebuild everything; later syncs name
 * only the Services whose objects changed, and keep the others' entries as they were.
 */
import { Agent } from '../../src/sync/agent.js';
import type { Dataplane, SyncResult } from '../../src/model/dataplane.js';
import type { DesiredState } from '../../src/model/types.js';
import type { EndpointSliceObject, ServiceObject } from '../../src/model/k8s.js';
import type { Logger } from '../../src/log.js';
import { DEFAULT_BUILD_OPTIONS } from '../../src/model/build.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { serviceObject } from '../helpers/objects.js';

interface Call { full: boolean; changed: string[] | null; keys: string[]; endpoints: Record<string, string[]> }

class RecordingDataplane implements Dataplane {
  readonly mode = 'recording';
  readonly calls: Call[] = [];
  private waiters: Array<() => void> = [];
  async sync(state: DesiredState, full: boolean, changed: ReadonlySet<string> | null = null): Promise<SyncResult> {
    this.calls.push({
      full,
      changed: changed === null ? null : [...changed].sort(),
      keys: state.services.map((s) => s.key),
      endpoints: Object.fromEntries(state.services.map((s) => [s.key, s.endpoints.map((e) => e.ip)])),
    });
    this.waiters.splice(0).forEach((w) => w());
    return { services: state.services.length, backends: 0, writes: 0, deletes: 0, failed: [], changed: [] };
  }
  next(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }
  async close(): Promise<void> {}
}

function slice(name: string, ips: string[], addressType: 'IPv4' | 'IPv6' = 'IPv4'): EndpointSliceObject {
  return {
    namespace: 'default', name: `${name}-${addressType === 'IPv4' ? 1 : 6}`, serviceName: name, addressType,
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: null, zone: null, zoneHints: null })),
  };
}

/** An agent whose first sync of Services a and b (one endpoint each) is done. */
async function startedWithTwoServices(): Promise<{ plane: RecordingDataplane; agent: Agent; a: ServiceObject; b: ServiceObject }> {
  const plane = new RecordingDataplane();
  const agent = new Agent({ dataplane: plane, node: { name: 'n', zone: null, ips: [] }, minSyncPeriodMs: 0, syncPeriodMs: 3_600_000 });
  const a = serviceObject({ name: 'a', clusterIPs: ['10.0.0.1'] });
  const b = serviceObject({ name: 'b', clusterIPs: ['10.0.0.2'] });
  const synced = plane.next();
  agent.updateObjects(clusterObjects([a, b], [slice('a', ['10.1.0.1']), slice('b', ['10.2.0.1'])]));
  agent.start();
  agent.sourceSynced();
  await synced;
  return { plane, agent, a, b };
}

test('partial syncs name only the changed Services; the first sync and a node change rebuild all', async () => {
  const { plane, agent, a, b } = await startedWithTwoServices();
  let synced: Promise<void>;
  expect(plane.calls[0]).toMatchObject({ full: true, changed: null, keys: ['default/a:http', 'default/b:http'] });

  synced = plane.next();
  agent.updateObjects(clusterObjects([a, b], [slice('a', ['10.1.0.1']), slice('b', ['10.2.0.1', '10.2.0.2'])]));
  await synced;
  expect(plane.calls[1]).toEqual({
    full: false,
    changed: ['default/b'],
    keys: ['default/a:http', 'default/b:http'],
    endpoints: { 'default/a:http': ['10.1.0.1'], 'default/b:http': ['10.2.0.1', '10.2.0.2'] },
  });

  // A removed Service is named too, and its entries are gone.
  synced = plane.next();
  agent.updateObjects(clusterObjects([b], [slice('b', ['10.2.0.1', '10.2.0.2'])]));
  await synced;
  expect(plane.calls[2]).toMatchObject({ full: false, changed: ['default/a'], keys: ['default/b:http'] });

  // The node decides which endpoints are local: everything is rebuilt.
  synced = plane.next();
  agent.updateNode({ name: 'n', zone: 'z1', ips: ['192.168.1.1'] });
  await synced;
  expect(plane.calls[3]).toMatchObject({ full: false, changed: null, keys: ['default/b:http'] });
  await agent.stop();
});

test('deltas from a source reach the tracker directly: the sync names only their Services', async () => {
  const { plane, agent, a, b } = await startedWithTwoServices();
  let synced: Promise<void>;

  synced = plane.next();
  const previous = slice('b', ['10.2.0.1']);
  agent.applyDeltas({
    services: new Map(),
    endpointSlices: new Map([['default/b-1', { previous, current: slice('b', ['10.2.0.1', '10.2.0.9']) }]]),
  });
  await synced;
  expect(plane.calls[1]).toMatchObject({ full: false, changed: ['default/b'], endpoints: { 'default/a:http': ['10.1.0.1'], 'default/b:http': ['10.2.0.1', '10.2.0.9'] } });

  // A delta that changes nothing (the same object again) queues no sync.
  agent.applyDeltas({ services: new Map([['default/a', { previous: a, current: { ...a } }]]), endpointSlices: new Map() });
  await new Promise((r) => setTimeout(r, 50));
  expect(plane.calls).toHaveLength(2);
  await agent.stop();
});

/** Captures warn/error lines (message only). */
function recordingLogger(lines: string[]): Logger {
  const record = (...args: unknown[]): void => {
    const message = args.find((a) => typeof a === 'string');
    if (typeof message === 'string') lines.push(message);
  };
  return { warn: record, error: record, info: () => undefined, debug: () => undefined, trace: () => undefined } as unknown as Logger;
}

test('a dual-stack Service syncs per family: an IPv6 slice change rebuilds it, and an unserved family is said once', async () => {
  const dual = serviceObject({ name: 'd', clusterIPs: ['10.0.0.3', 'fd00:10:96::3'], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' });
  const v6only = serviceObject({ name: 'six', clusterIPs: ['fd00:10:96::6'], ipFamilies: ['IPv6'] });
  const both = new RecordingDataplane();
  const agent = new Agent({ dataplane: both, node: { name: 'n', zone: null, ips: [] }, minSyncPeriodMs: 0, syncPeriodMs: 3_600_000 });
  let synced = both.next();
  agent.updateObjects(clusterObjects([dual], [slice('d', ['10.3.0.1']), slice('d', ['fd00:10:244::1'], 'IPv6')]));
  agent.start();
  agent.sourceSynced();
  await synced;
  expect(both.calls[0]?.endpoints).toEqual({ 'default/d:http': ['10.3.0.1'], 'default/d:http IPv6': ['fd00:10:244::1'] });
  synced = both.next();
  const previous = slice('d', ['fd00:10:244::1'], 'IPv6');
  agent.applyDeltas({ services: new Map(), endpointSlices: new Map([['default/d-6', { previous, current: slice('d', ['fd00:10:244::1', 'fd00:10:244::2'], 'IPv6') }]]) });
  await synced;
  expect(both.calls[1]).toMatchObject({ full: false, changed: ['default/d'] });
  expect(both.calls[1]?.endpoints).toEqual({ 'default/d:http': ['10.3.0.1'], 'default/d:http IPv6': ['fd00:10:244::1', 'fd00:10:244::2'] });
  await agent.stop();

  // A node without IPv6: the IPv4 half is served, the IPv6-only Service not, one line over every sync.
  const lines: string[] = [];
  const v4 = new RecordingDataplane();
  const ipv4Agent = new Agent({
    dataplane: v4, node: { name: 'n', zone: null, ips: ['192.168.0.1'] }, minSyncPeriodMs: 0, syncPeriodMs: 3_600_000,
    build: { ...DEFAULT_BUILD_OPTIONS, families: ['IPv4'] }, log: recordingLogger(lines),
  });
  try {
    synced = v4.next();
    ipv4Agent.updateObjects(clusterObjects([dual, v6only], [slice('d', ['10.3.0.1']), slice('d', ['fd00:10:244::1'], 'IPv6')]));
    ipv4Agent.start();
    ipv4Agent.sourceSynced();
    await synced;
    synced = v4.next();
    ipv4Agent.updateObjects(clusterObjects([dual, { ...v6only, labels: { changed: 'yes' } }], [slice('d', ['10.3.0.1', '10.3.0.2'])]));
    await synced;
  } finally {
    await ipv4Agent.stop();
  }
  expect(v4.calls.map((c) => c.keys)).toEqual([['default/d:http'], ['default/d:http']]);
  expect(lines.filter((l) => l.startsWith('IPv6:'))).toHaveLength(1);
});

test('without --node-ip the families served follow the Node object: an update that drops IPv6 unprograms the IPv6 half', async () => {
  const dual = serviceObject({ name: 'd', clusterIPs: ['10.0.0.3', 'fd00:10:96::3'], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' });
  const plane = new RecordingDataplane();
  const agent = new Agent({ dataplane: plane, node: { name: 'n', zone: null, ips: ['192.168.0.1', 'fd00:192:168::1'] }, minSyncPeriodMs: 0, syncPeriodMs: 3_600_000 });
  try {
    let synced = plane.next();
    agent.updateObjects(clusterObjects([dual], [slice('d', ['10.3.0.1']), slice('d', ['fd00:10:244::1'], 'IPv6')]));
    agent.start();
    agent.sourceSynced();
    await synced;
    expect(plane.calls[0]?.keys).toEqual(['default/d:http', 'default/d:http IPv6']);
    // The kube source reports the Node's addresses changed (agent.updateNode): IPv4 only now.
    synced = plane.next();
    agent.updateNode({ name: 'n', zone: null, ips: ['192.168.0.1'] });
    await synced;
    expect(plane.calls[1]?.keys).toEqual(['default/d:http']);
  } finally {
    await agent.stop();
  }
});
