/*
 * One owner per frontend, and one Service's failure stays its own (issue 10, items 1 and 3):
 * the agent driving the real BPF reconciler over in-memory maps (test/helpers/fake-map.ts),
 * through partial and full syncs, as an intruding Service comes and goes.
 */
import { get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, type SyncReport } from '../../src/sync/agent.js';
import { BpfDataplane } from '../../src/bpf/reconciler/reconciler.js';
import { buildServiceEntries, buildDesiredState } from '../../src/model/build.js';
import { FrontendOwners, describeConflict } from '../../src/model/ownership.js';
import { ProxyHealth, startHealthServer } from '../../src/sync/health.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { IPPROTO_TCP, NODEPORT_VIP, SCOPE_EXTERNAL } from '../../src/bpf/layouts.js';
import type { EndpointSliceObject, ServiceObject } from '../../src/model/k8s.js';
import type { Logger } from '../../src/log.js';
import { FakeMaps } from '../helpers/fake-map.js';
import { serviceObject } from '../helpers/objects.js';

const NODE = { name: 'node-a', zone: null, ips: ['192.168.0.10'] };
const T0 = Date.UTC(2026, 0, 1);

function svc(namespace: string, name: string, over: Partial<ServiceObject> = {}): ServiceObject {
  return serviceObject({
    namespace,
    name,
    ports: [{ name: '', protocol: 'TCP', port: 9999, targetPort: 8080, nodePort: 0 }],
    ...over,
  });
}

function slice(s: ServiceObject, ips: string[]): EndpointSliceObject {
  return {
    namespace: s.namespace,
    name: `${s.name}-1`,
    serviceName: s.name,
    addressType: 'IPv4',
    ports: [{ name: '', protocol: 'TCP', port: 8080 }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-b', zone: null, zoneHints: null })),
  };
}

/** Captures warn/error lines as a pino logger would print them (message only). */
function recordingLogger(lines: string[]): Logger {
  const record = (...args: unknown[]): void => {
    const message = args.find((a) => typeof a === 'string');
    if (typeof message === 'string') lines.push(message);
  };
  const logger = { warn: record, error: record, info: () => undefined, debug: () => undefined, trace: () => undefined };
  return logger as unknown as Logger;
}

/** The backend addresses a frontend's slots point at, or null when the frontend is absent. */
function backendsOf(fake: FakeMaps, vip: string, port: number): string[] | null {
  const v = fake.services.lookup({ vip, port, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL });
  if (v === null) return null;
  const out = new Set<string>();
  for (let slot = 0; slot < v.backend_count; slot++) {
    const id = fake.slots.lookup({ svc_id: v.svc_id, slot });
    const be = id === null ? null : fake.backends.lookup(id);
    if (be) out.add(be.addr);
  }
  return [...out].sort();
}

class Harness {
  readonly fake = new FakeMaps();
  readonly reports: SyncReport[] = [];
  readonly lines: string[] = [];
  readonly agent: Agent;
  private waiters: Array<() => void> = [];

  constructor(extra: Partial<ConstructorParameters<typeof Agent>[0]> = {}) {
    this.agent = new Agent({
      dataplane: new BpfDataplane(this.fake.maps, null),
      node: NODE,
      minSyncPeriodMs: 0,
      syncPeriodMs: 3_600_000,
      log: recordingLogger(this.lines),
      onSync: (r) => {
        this.reports.push(r);
        this.waiters.splice(0).forEach((w) => w());
      },
      ...extra,
    });
  }

  /** Applies a snapshot and waits for the sync it causes. */
  async apply(services: ServiceObject[], slices: EndpointSliceObject[]): Promise<SyncReport> {
    const done = new Promise<void>((r) => this.waiters.push(r));
    this.agent.updateObjects(clusterObjects(services, slices));
    await done;
    return this.reports[this.reports.length - 1] as SyncReport;
  }
}

describe('one owner per frontend', () => {
  // The victim's cluster IP, claimed by an intruder in another namespace through externalIPs.
  // The intruder is even older: an allocated address beats a claimed one whatever the age.
  const victim = svc('team-a', 'victim', { clusterIPs: ['10.66.6.6'], creationTimestamp: T0 + 1000 });
  const intruder = svc('team-b', 'intruder', { clusterIPs: ['10.96.0.77'], externalIPs: ['10.66.6.6'], creationTimestamp: T0 });
  const victimEps = slice(victim, ['10.244.1.1']);

  test('an externalIP cannot take another Service\'s cluster IP, in partial syncs, full syncs, or when either goes', async () => {
    const h = new Harness({ syncPeriodMs: 400 });
    const first = new Promise<void>((r) => h.agent.firstSync.then(r));
    h.agent.updateObjects(clusterObjects([victim, intruder], [victimEps, slice(intruder, ['10.244.2.2'])]));
    h.agent.start();
    h.agent.sourceSynced();
    await first;
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    expect(backendsOf(h.fake, '10.96.0.77', 9999)).toEqual(['10.244.2.2']);
    expect(h.reports.at(-1)?.frontendConflicts).toBe(1);
    const conflictLine =
      'Service team-b/intruder: externalIPs 10.66.6.6:9999/TCP is owned by Service team-a/victim (clusterIP, allocated by the API server); not programmed for this Service';
    expect(h.lines.filter((l) => l === conflictLine)).toHaveLength(1);

    // Any change to the intruder is a partial sync naming it: the frontend stays the victim's,
    // and the conflict, unchanged, is not logged again.
    let r = await h.apply([victim, intruder], [victimEps, slice(intruder, ['10.244.2.2', '10.244.2.3'])]);
    expect(r.full).toBe(false);
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    expect(h.lines.filter((l) => l === conflictLine)).toHaveLength(1);

    // The periodic full sync re-reads the maps and decides the same way.
    const fullSyncs = h.reports.filter((x) => x.full).length;
    while (h.reports.filter((x) => x.full).length === fullSyncs) await new Promise((res) => setTimeout(res, 50));
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    expect(h.lines.filter((l) => l === conflictLine)).toHaveLength(1);

    // Removing the loser changes nothing for the owner.
    r = await h.apply([victim], [victimEps]);
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    expect(r.frontendConflicts).toBe(0);

    // Back again, then the owner goes: the frontend passes to the next claimant.
    await h.apply([victim, intruder], [victimEps, slice(intruder, ['10.244.2.2'])]);
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    r = await h.apply([intruder], [slice(intruder, ['10.244.2.2'])]);
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.2.2']);
    expect(r.frontendConflicts).toBe(0);

    // And when the owner returns, it takes its cluster IP back from the claimant.
    await h.apply([victim, intruder], [victimEps, slice(intruder, ['10.244.2.2'])]);
    expect(backendsOf(h.fake, '10.66.6.6', 9999)).toEqual(['10.244.1.1']);
    await h.agent.stop();
  });

  test('two claims of one nodePort or one external address: the oldest wins, then namespace/name', () => {
    const owners = new FrontendOwners();
    const np = (over: Partial<ServiceObject>): Partial<ServiceObject> => ({
      type: 'NodePort',
      ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 30080 }],
      ...over,
    });
    const older = svc('z', 'older', np({ clusterIPs: ['10.96.0.1'], creationTimestamp: T0 }));
    const newer = svc('a', 'newer', np({ clusterIPs: ['10.96.0.2'], creationTimestamp: T0 + 5 }));
    expect([...owners.set('a/newer', newer)]).toEqual([]);
    // The older Service arrives later and takes the node port: the newer one is affected.
    expect([...owners.set('z/older', older)]).toEqual(['a/newer']);
    expect(owners.owns('z/older', 'nodePort', 'nodePort 30080/TCP')).toBe(true);
    expect(owners.conflicts('a/newer').map(describeConflict)).toEqual([
      'Service a/newer: nodePort 30080/TCP is owned by Service z/older (nodePort, created earlier); not programmed for this Service',
    ]);
    // Without creation times, namespace/name decides; the same Service listing an address twice,
    // or as its own cluster IP, is no conflict.
    const x = svc('ns', 'x', { clusterIPs: ['10.96.0.3'], externalIPs: ['192.0.2.1', '192.0.2.1', '10.96.0.3'] });
    const y = svc('ns', 'y', { clusterIPs: ['10.96.0.4'], externalIPs: ['192.0.2.1'] });
    owners.set('ns/y', y);
    owners.set('ns/x', x);
    expect(owners.conflicts('ns/x')).toEqual([]);
    expect(owners.conflicts('ns/y').map((c) => c.owner.service)).toEqual(['ns/x']);
    expect(owners.conflictCount).toBe(2);
    // Removing the winner hands the node port over.
    expect([...owners.set('z/older', null)]).toEqual(['a/newer']);
    expect(owners.owns('a/newer', 'nodePort', 'nodePort 30080/TCP')).toBe(true);
    expect(owners.conflictCount).toBe(1);
  });

  test('the full build (render, list) decides ownership the same way and programs the loser without the frontend', () => {
    const warnings: string[] = [];
    const state = buildDesiredState(clusterObjects([intruder, victim], [victimEps]), NODE, (m) => warnings.push(m));
    const byKey = new Map(state.services.map((e) => [e.key, e.service]));
    expect(byKey.get('team-b/intruder')?.externalIPs).toEqual([]);
    expect(byKey.get('team-b/intruder')?.clusterIP).toBe('10.96.0.77');
    expect(byKey.get('team-a/victim')?.clusterIP).toBe('10.66.6.6');
    expect(warnings).toHaveLength(1);
  });
});

describe('node options for Services', () => {
  test('--external-ip-cidrs programs externalIPs only inside the CIDRs; --nodeport-range drops only that node port', () => {
    const warnings: string[] = [];
    const s = svc('default', 'web', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.9'],
      externalIPs: ['192.0.2.10', '198.51.100.7'],
      ports: [
        { name: 'a', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 40000 },
        { name: 'b', protocol: 'TCP', port: 81, targetPort: 81, nodePort: 30081 },
      ],
    });
    const state = buildDesiredState(clusterObjects([s], []), NODE, (m) => warnings.push(m), {
      externalIPCIDRs: ['192.0.2.0/24'],
      families: ['IPv4', 'IPv6'],
      nodePortRange: [30000, 32767],
    });
    expect(state.services.map((e) => [e.key, e.service.nodePort, e.service.externalIPs])).toEqual([
      ['default/web:a', 0, ['192.0.2.10']],
      ['default/web:b', 30081, ['192.0.2.10']],
    ]);
    expect(warnings).toEqual([
      'Service default/web: spec.externalIPs 198.51.100.7 is outside --external-ip-cidrs 192.0.2.0/24; address not programmed',
      'Service default/web: spec.ports[0].nodePort 40000 is outside --nodeport-range 30000-32767; that node port is not programmed (pick one in the range)',
    ]);
    // From the API server (no range): the allocation is trusted, whatever the range.
    const api = buildDesiredState(clusterObjects([s], []), NODE, () => undefined, { externalIPCIDRs: [], nodePortRange: null, families: ['IPv4', 'IPv6'] });
    expect(api.services.map((e) => e.service.nodePort)).toEqual([40000, 30081]);
  });
});

describe('one Service\'s failure is its own', () => {
  test('nothing syncs before the source has read everything once', async () => {
    const h = new Harness();
    h.agent.updateObjects(clusterObjects([svc('default', 'a', { clusterIPs: ['10.96.0.1'] })], []));
    h.agent.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(h.reports).toHaveLength(0);
    h.agent.sourceSynced();
    await h.agent.firstSync;
    expect(h.reports).toHaveLength(1);
    expect(backendsOf(h.fake, '10.96.0.1', 9999)).toEqual([]);
    await h.agent.stop();
  });

  test('a Service whose build throws is skipped and counted; the others sync and /healthz stays 200', async () => {
    const health = new ProxyHealth({ healthTimeoutMs: 1000 });
    const server = await startHealthServer('127.0.0.1:0', health);
    const h = new Harness({
      buildService: (s, slices, node, owners, warn) => {
        if (s.name === 'bad') throw new RangeError('injected fault');
        return buildServiceEntries(s, slices, node, owners, warn);
      },
      onQueued: (now) => health.queued(now),
    });
    const healthOnSync = (r: SyncReport): void => {
      if (r.error === null) health.updated();
    };
    const good = svc('default', 'good', { clusterIPs: ['10.96.0.1'] });
    const bad = svc('default', 'bad', { clusterIPs: ['10.96.0.2'] });
    try {
      h.agent.updateObjects(clusterObjects([good, bad], [slice(good, ['10.244.0.1']), slice(bad, ['10.244.0.2'])]));
      h.agent.start();
      h.agent.sourceSynced();
      await h.agent.firstSync;
      let r = h.reports.at(-1) as SyncReport;
      healthOnSync(r);
      expect(r.error).toBeNull();
      expect(r.result?.failed.map((f) => f.service)).toEqual(['default/bad']);
      expect(backendsOf(h.fake, '10.96.0.1', 9999)).toEqual(['10.244.0.1']);
      expect(backendsOf(h.fake, '10.96.0.2', 9999)).toBeNull();
      expect(h.lines.filter((l) => l.includes('default/bad') && l.includes('injected fault'))).toHaveLength(1);

      // Later changes to the others still sync, past the health timeout.
      await new Promise((res) => setTimeout(res, 1100));
      r = await h.apply([good, bad], [slice(good, ['10.244.0.1', '10.244.0.3']), slice(bad, ['10.244.0.2'])]);
      healthOnSync(r);
      expect(backendsOf(h.fake, '10.96.0.1', 9999)).toEqual(['10.244.0.1', '10.244.0.3']);
      const port = (server.address() as AddressInfo).port;
      const status = await new Promise<number>((resolve, reject) => {
        get({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject);
      });
      expect(status).toBe(200);
    } finally {
      await h.agent.stop();
      server.close();
    }
  });

  test('maglev with 1,311 or 20,000 endpoints is programmed (bounded table, then random); the other Services are untouched', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null, { maglevMaxSize: 16381 });
    const ips = (n: number, third: number): string[] =>
      Array.from({ length: n }, (_, i) => `10.${third}.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    const big = svc('default', 'big', { clusterIPs: ['10.96.0.5'], annotations: { 'vipr.io/scheduler': 'maglev' } });
    const huge = svc('default', 'huge', { clusterIPs: ['10.96.0.6'], annotations: { 'vipr.io/scheduler': 'maglev' } });
    const small = svc('default', 'small', { clusterIPs: ['10.96.0.7'] });
    const state = buildDesiredState(
      clusterObjects([big, huge, small], [slice(big, ips(1311, 20)), slice(huge, ips(20000, 21)), slice(small, ['10.244.0.1'])]),
      NODE,
      () => undefined,
    );
    const result = await plane.sync(state, true);
    expect(result.failed).toEqual([]);
    const bigValue = fake.services.lookup({ vip: '10.96.0.5', port: 9999, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL });
    expect(bigValue?.backend_count).toBe(16381);
    expect(backendsOf(fake, '10.96.0.5', 9999)).toHaveLength(1311);
    const hugeValue = fake.services.lookup({ vip: '10.96.0.6', port: 9999, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL });
    expect(hugeValue?.backend_count).toBe(20000);
    expect(backendsOf(fake, '10.96.0.7', 9999)).toEqual(['10.244.0.1']);
    // The NodePort wildcard is never a key a cluster IP build can write.
    expect(fake.services.lookup({ vip: NODEPORT_VIP, port: 9999, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL })).toBeNull();
  });
});

describe('IPv6 frontends', () => {
  const victim6 = svc('team-a', 'victim6', {
    clusterIPs: ['10.96.0.66', 'fd00:10:96::66'],
    ipFamilies: ['IPv4', 'IPv6'],
    creationTimestamp: T0 + 1000,
  });
  // Addresses reach the model canonical (src/sources/parse.ts), so one frontend has one spelling.
  const intruder6 = svc('team-b', 'intruder6', {
    clusterIPs: ['fd00:10:96::77'],
    ipFamilies: ['IPv6'],
    externalIPs: ['fd00:10:96::66', '2001:db8::9'],
    creationTimestamp: T0,
  });

  test('an IPv6 externalIP on another Service\'s IPv6 cluster IP is not programmed; the rest of both Services is', () => {
    const warnings: string[] = [];
    const state = buildDesiredState(clusterObjects([intruder6, victim6], []), NODE, (m) => warnings.push(m));
    const byKey = new Map(state.services.map((e) => [e.key, e.service]));
    expect([...byKey.keys()]).toEqual(['team-a/victim6', 'team-a/victim6 IPv6', 'team-b/intruder6 IPv6']);
    expect(byKey.get('team-b/intruder6 IPv6')?.externalIPs).toEqual(['2001:db8::9']);
    expect(byKey.get('team-a/victim6 IPv6')?.clusterIP).toBe('fd00:10:96::66');
    expect(warnings).toEqual([
      'Service team-b/intruder6: externalIPs [fd00:10:96::66]:9999/TCP is owned by Service team-a/victim6 (clusterIP, allocated by the API server); not programmed for this Service',
    ]);
  });

  test('the same address in two families never collides, and an IPv4 frontend is written as before', () => {
    const owners = new FrontendOwners();
    owners.set('team-a/victim6', victim6);
    owners.set('team-b/intruder6', intruder6);
    expect(owners.owns('team-a/victim6', 'clusterIP', '10.96.0.66:9999/TCP')).toBe(true);
    expect(owners.owns('team-a/victim6', 'clusterIP', '[fd00:10:96::66]:9999/TCP')).toBe(true);
    expect(owners.owns('team-b/intruder6', 'externalIPs', '[2001:db8::9]:9999/TCP')).toBe(true);
    expect(owners.conflictCount).toBe(1);
    // Removing the owner hands its IPv6 frontend to the claimant.
    expect([...owners.set('team-a/victim6', null)]).toEqual(['team-b/intruder6']);
    expect(owners.owns('team-b/intruder6', 'externalIPs', '[fd00:10:96::66]:9999/TCP')).toBe(true);
    expect(owners.conflictCount).toBe(0);
  });

  test('--external-ip-cidrs holds IPv6 externalIPs to IPv6 CIDRs', () => {
    const warnings: string[] = [];
    const s = svc('default', 'web6', { clusterIPs: ['fd00:10:96::9'], ipFamilies: ['IPv6'], externalIPs: ['2001:db8:1::10', '2001:db8:2::10'] });
    const state = buildDesiredState(clusterObjects([s], []), NODE, (m) => warnings.push(m), {
      externalIPCIDRs: ['192.0.2.0/24', '2001:db8:1::/48'],
      families: ['IPv4', 'IPv6'],
      nodePortRange: null,
    });
    expect(state.services.map((e) => [e.key, e.service.externalIPs])).toEqual([['default/web6 IPv6', ['2001:db8:1::10']]]);
    expect(warnings).toEqual([
      'Service default/web6: spec.externalIPs 2001:db8:2::10 is outside --external-ip-cidrs 192.0.2.0/24,2001:db8:1::/48; address not programmed',
    ]);
  });
});
