/*
 * The BPF reconciler against in-memory maps that behave like the kernel's (test/helpers/fake-map.ts),
 * fed desired states built by the real parser and builder from Service / EndpointSlice objects.
 * Beyond the outcome of each sync, these tests check the order of map operations, which is what
 * keeps the datapath from ever seeing a half-written service.
 */
import { BpfDataplane } from '../../src/bpf/reconciler/reconciler.js';
import { buildDesiredState } from '../../src/model/build.js';
import { parseEndpointSlice, parseService } from '../../src/sources/parse.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { IPPROTO_TCP, SCOPE_EXTERNAL, type SvcKeyT } from '../../src/bpf/layouts.js';
import type { DesiredState } from '../../src/model/types.js';
import { E2BIG, FakeMaps, type MapOp } from '../helpers/fake-map.js';

interface SvcDef {
  name: string;
  vip: string;
  port?: number;
  targetPort?: number;
  /** Ready endpoint IPs. */
  backends: string[];
}

const NODE = { name: 'node-a', zone: null, ips: ['192.168.0.10'] };

function serviceObject(d: SvcDef): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: d.name, namespace: 'default' },
    spec: { type: 'ClusterIP', clusterIP: d.vip, ports: [{ protocol: 'TCP', port: d.port ?? 80, targetPort: d.targetPort ?? 8080 }] },
  };
}

function sliceObject(d: SvcDef): unknown {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${d.name}-abcde`, namespace: 'default', labels: { 'kubernetes.io/service-name': d.name } },
    addressType: 'IPv4',
    ports: [{ name: '', protocol: 'TCP', port: d.targetPort ?? 8080 }],
    endpoints: d.backends.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node-b' })),
  };
}

function stateOf(defs: SvcDef[]): DesiredState {
  const objects = clusterObjects(defs.map((d) => parseService(serviceObject(d))), defs.map((d) => parseEndpointSlice(sliceObject(d))));
  return buildDesiredState(objects, NODE);
}

function svcKey(vip: string, port = 80): SvcKeyT {
  return { vip, port, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL };
}

/** The service-port key the model gives a Service's single unnamed port. */
function portKey(name: string): string {
  const entry = stateOf([{ name, vip: '10.0.0.1', backends: [] }]).services[0];
  if (!entry) throw new Error(`no service entry built for ${name}`);
  return entry.key;
}

/** `n` services svc-0..svc-(n-1), each with `per` backends of its own. */
function manyServices(n: number, per: number): SvcDef[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `svc-${i}`,
    vip: `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`,
    backends: Array.from({ length: per }, (__, j) => `10.${100 + j}.${Math.floor(i / 250)}.${(i % 250) + 1}`),
  }));
}

function svcIdOf(fake: FakeMaps, vip: string, port = 80): number {
  const v = fake.services.lookup(svcKey(vip, port));
  if (v === null) throw new Error(`no service entry for ${vip}:${port}`);
  return v.svc_id;
}

/** Backend addresses of a programmed service, slot by slot, read back from the maps. */
function backendsOf(fake: FakeMaps, vip: string, port = 80): string[] {
  const v = fake.services.lookup(svcKey(vip, port));
  if (v === null) return [];
  const out: string[] = [];
  for (let slot = 0; slot < v.backend_count; slot++) {
    const id = fake.slots.lookup({ svc_id: v.svc_id, slot });
    const be = id === null ? null : fake.backends.lookup(id);
    out.push(be === null ? 'missing' : `${be.addr}:${be.port}`);
  }
  return out;
}

/**
 * What the datapath relies on, checked on the maps themselves: every service's slots and
 * reverse-NAT entry exist and point at existing backends, and nothing exists that no service
 * references (orphan slots, reverse-NAT entries or backends).
 */
function expectConsistent(fake: FakeMaps): void {
  const problems: string[] = [];
  const services = new Map(fake.services.entries().map(([k, v]) => [v.svc_id, { k, v }]));
  const referenced = new Set<number>();
  for (const [svcId, { k, v }] of services) {
    for (let slot = 0; slot < v.backend_count; slot++) {
      const id = fake.slots.lookup({ svc_id: svcId, slot });
      if (id === null) problems.push(`service ${svcId} slot ${slot} missing`);
      else if (fake.backends.lookup(id) === null) problems.push(`service ${svcId} slot ${slot} -> missing backend ${id.id}`);
      else referenced.add(id.id);
    }
    void k;
  }
  for (const [k] of fake.slots.entries()) {
    const s = services.get(k.svc_id);
    if (!s || k.slot >= s.v.backend_count) problems.push(`orphan slot ${k.svc_id}/${k.slot}`);
  }
  for (const [k] of fake.sourceRanges.entries()) if (!services.has(k.svc_id)) problems.push(`orphan source range ${k.svc_id}`);
  for (const [id] of fake.sched.entries()) if (!services.has(id)) problems.push(`orphan scheduler state ${id}`);
  for (const [k] of fake.backends.entries()) {
    if (!referenced.has(k.id)) problems.push(`orphan backend ${k.id}`);
    if (fake.backendConns.lookup(k) === null) problems.push(`backend ${k.id} has no lc counter`);
  }
  for (const [k] of fake.backendConns.entries()) if (fake.backends.lookup(k) === null) problems.push(`orphan lc counter ${k.id}`);
  expect(problems).toEqual([]);
}

function indexWhere(ops: MapOp[], pred: (o: MapOp) => boolean): number[] {
  const out: number[] = [];
  ops.forEach((o, i) => {
    if (pred(o)) out.push(i);
  });
  return out;
}

const isMap = (role: string) => (o: MapOp): boolean => o.map === `vipr_${role}_v1`;

function keyOf<T>(o: MapOp): T {
  return o.key as T;
}

describe('BpfDataplane write order', () => {
  test('a new service: every backend and slot write precedes its service entry', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'] }]), false);
    const ops = fake.effects();
    const svcWrites = indexWhere(ops, isMap('services'));
    expect(svcWrites).toHaveLength(1);
    const others = indexWhere(ops, (o) => !isMap('services')(o));
    expect(others.filter((i) => isMap('backends')(ops[i]!))).toHaveLength(3);
    expect(others.filter((i) => isMap('slots')(ops[i]!))).toHaveLength(3);
    expect(others.filter((i) => isMap('backend_conns')(ops[i]!))).toHaveLength(3);
    expect(Math.max(...others)).toBeLessThan(svcWrites[0]!);
    expect(ops.every((o) => o.op === 'update')).toBe(true);
    expect(backendsOf(fake, '10.96.0.1')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080']);
    expectConsistent(fake);

    // A second service added later: its own entries, again all before its service entry.
    fake.clearOps();
    const r = await plane.sync(stateOf([
      { name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'] },
      { name: 'api', vip: '10.96.0.2', backends: ['10.2.0.1', '10.2.0.2'] },
    ]), false);
    const ops2 = fake.effects();
    const entry = indexWhere(ops2, isMap('services'));
    expect(entry).toHaveLength(1);
    expect(keyOf<SvcKeyT>(ops2[entry[0]!]!).vip).toBe('10.96.0.2');
    expect(entry[0]).toBe(ops2.length - 1);
    expect(ops2).toHaveLength(2 + 2 + 2 + 1);
    expect(r.changed).toEqual([portKey('api')]);
    expectConsistent(fake);
  });

  test('a removed service: entry delete, then its slots, backends last', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const web = { name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'] };
    const api = { name: 'api', vip: '10.96.0.2', backends: ['10.2.0.1'] };
    await plane.sync(stateOf([web, api]), false);
    const webId = svcIdOf(fake, web.vip);
    fake.clearOps();

    const r = await plane.sync(stateOf([api]), false);
    const ops = fake.effects();
    expect(ops.every((o) => o.op === 'delete')).toBe(true);
    expect(ops.map((o) => o.map)).toEqual([
      'vipr_services_v1',
      'vipr_slots_v1', 'vipr_slots_v1', 'vipr_slots_v1',
      'vipr_backends_v1', 'vipr_backend_conns_v1', 'vipr_backends_v1', 'vipr_backend_conns_v1', 'vipr_backends_v1', 'vipr_backend_conns_v1',
    ]);
    expect(keyOf<SvcKeyT>(ops[0]!).vip).toBe(web.vip);
    expect(ops.slice(1, 4).map((o) => keyOf<{ svc_id: number }>(o).svc_id)).toEqual([webId, webId, webId]);
    expect(r).toMatchObject({ services: 1, backends: 1, writes: 0, deletes: 10, failed: [], changed: [portKey('web')] });
    expect(backendsOf(fake, api.vip)).toEqual(['10.2.0.1:8080']);
    expectConsistent(fake);
  });

  test('a shrunk service: the entry with the lower count is written before the surplus slot is deleted', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'] }]), false);
    const id = svcIdOf(fake, '10.96.0.1');
    fake.clearOps();

    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] }]), false);
    const ops = fake.effects();
    // Slots 0 and 1 keep their backends: nothing to rewrite there.
    expect(ops.map((o) => `${o.op} ${o.map}`)).toEqual([
      'update vipr_services_v1',
      'delete vipr_slots_v1',
      'delete vipr_backends_v1',
      'delete vipr_backend_conns_v1',
    ]);
    expect(ops[0]!.value).toMatchObject({ svc_id: id, backend_count: 2 });
    expect(ops[1]!.key).toEqual({ svc_id: id, slot: 2 });
    expect(backendsOf(fake, '10.96.0.1')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expectConsistent(fake);
  });

  test('a grown service: new backend and slot before the entry with the higher count', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1'] }]), false);
    fake.clearOps();
    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] }]), false);
    expect(fake.effects().map((o) => `${o.op} ${o.map}`)).toEqual([
      'update vipr_backends_v1',
      'update vipr_backend_conns_v1',
      'update vipr_slots_v1',
      'update vipr_services_v1',
    ]);
    expect(fake.effects()[3]!.value).toMatchObject({ backend_count: 2 });
    expectConsistent(fake);
  });
});

describe('BpfDataplane writes only what changed', () => {
  test('a sync of an unchanged state writes and deletes nothing, partial or full', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const state = stateOf(manyServices(20, 3));
    const first = await plane.sync(state, false);
    // Per service: its entry, 3 slots, 3 backends and their 3 lc counters; once: the node's
    // address (NodePorts) and the datapath settings of each family.
    expect(first).toMatchObject({ services: 20, backends: 60, writes: 20 * (1 + 3 + 3 + 3) + 1 + 2, deletes: 0, failed: [] });
    fake.clearOps();

    const again = await plane.sync(state, false);
    expect(fake.ops).toEqual([]);
    expect(again).toMatchObject({ services: 20, backends: 60, writes: 0, deletes: 0, failed: [], changed: [] });

    const full = await plane.sync(state, true);
    expect(fake.ops).toEqual([]);
    expect(full).toMatchObject({ writes: 0, deletes: 0, changed: [] });
  });

  test('changing one of 1,000 services writes only that service\'s entries', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const defs = manyServices(1000, 2);
    await plane.sync(stateOf(defs), false);
    expect(fake.services.size).toBe(1000);
    expectConsistent(fake);
    const target = defs[500]!;
    const id = svcIdOf(fake, target.vip);
    fake.clearOps();

    const changed = defs.map((d) => (d === target ? { ...d, backends: [...d.backends, '10.200.0.1'] } : d));
    const r = await plane.sync(stateOf(changed), false);
    const ops = fake.ops;
    expect(ops.map((o) => `${o.op} ${o.map}`)).toEqual([
      'update vipr_backends_v1', 'update vipr_backend_conns_v1', 'update vipr_slots_v1', 'update vipr_services_v1',
    ]);
    expect(ops.every((o) => o.ok)).toBe(true);
    expect(ops[0]!.value).toMatchObject({ addr: '10.200.0.1', port: 8080 });
    expect(ops[2]!.key).toEqual({ svc_id: id, slot: 2 });
    expect(ops[3]!.key).toEqual(svcKey(target.vip));
    expect(r).toMatchObject({ writes: 4, deletes: 0, changed: [portKey(target.name)] });
    expect(backendsOf(fake, target.vip)).toEqual([...target.backends.map((b) => `${b}:8080`), '10.200.0.1:8080']);
  });

  test('a backend shared by two services is written once and swept only when neither uses it', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const a = { name: 'a', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] };
    const b = { name: 'b', vip: '10.96.0.2', backends: ['10.1.0.1', '10.1.0.3'] };
    await plane.sync(stateOf([a, b]), false);
    const shared = fake.effects().filter((o) => isMap('backends')(o) && (o.value as { addr: string }).addr === '10.1.0.1');
    expect(shared).toHaveLength(1);
    expect(fake.backends.size).toBe(3);
    const sharedId = keyOf<{ id: number }>(shared[0]!).id;
    expect(fake.slots.lookup({ svc_id: svcIdOf(fake, a.vip), slot: 0 })).toEqual({ id: sharedId });
    expect(fake.slots.lookup({ svc_id: svcIdOf(fake, b.vip), slot: 0 })).toEqual({ id: sharedId });
    expectConsistent(fake);

    fake.clearOps();
    await plane.sync(stateOf([b]), false);
    const backendDeletes = fake.effects().filter((o) => isMap('backends')(o));
    expect(backendDeletes.map((o) => keyOf<{ id: number }>(o).id)).not.toContain(sharedId);
    expect(backendDeletes).toHaveLength(1);
    expect(fake.backends.lookup({ id: sharedId })).toMatchObject({ addr: '10.1.0.1' });
    expectConsistent(fake);

    fake.clearOps();
    await plane.sync(stateOf([]), false);
    expect(fake.backends.size).toBe(0);
    expect(fake.effects().filter((o) => isMap('backends')(o)).map((o) => keyOf<{ id: number }>(o).id)).toContain(sharedId);
    expectConsistent(fake);
  });
});

describe('BpfDataplane restart', () => {
  test('a fresh dataplane restores every id from the maps and its first sync writes nothing', async () => {
    const fake = new FakeMaps();
    const defs = manyServices(10, 3);
    const before = new BpfDataplane(fake.maps, null);
    await before.sync(stateOf(defs), false);
    const services = new Map(fake.services.entries().map(([k, v]) => [k.vip, v.svc_id]));
    const backends = new Map(fake.backends.entries().map(([k, v]) => [v.addr, k.id]));
    fake.clearOps();

    const after = new BpfDataplane(fake.maps, null);
    const r = await after.sync(stateOf(defs), false);
    expect(fake.ops).toEqual([]);
    expect(r).toMatchObject({ services: 10, backends: 30, writes: 0, deletes: 0, failed: [] });
    for (const [fid, p] of after.programmed()) expect(p.svcId).toBe(services.get(fid.split(':')[0]!));
    expect(new Map(fake.services.entries().map(([k, v]) => [k.vip, v.svc_id]))).toEqual(services);
    expect(new Map(fake.backends.entries().map(([k, v]) => [v.addr, k.id]))).toEqual(backends);

    // New ids never collide with restored ones; a restored service is removed completely.
    const extra = { name: 'extra', vip: '10.97.0.1', backends: ['10.250.0.1'] };
    await after.sync(stateOf([...defs.slice(1), extra]), false);
    const extraId = svcIdOf(fake, extra.vip);
    expect([...services.values()].filter((id) => id !== services.get(defs[0]!.vip))).not.toContain(extraId);
    const extraBackend = fake.backends.entries().find(([, v]) => v.addr === '10.250.0.1');
    expect(extraBackend).toBeDefined();
    expect([...backends.values()]).not.toContain(extraBackend![0].id);
    expect(fake.services.lookup(svcKey(defs[0]!.vip))).toBeNull();
    expect(fake.services.size).toBe(10);
    expectConsistent(fake);
  });

  test('a full sync sweeps slots, source ranges and scheduler state no service references (left by a crash mid-sync)', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    await plane.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1'] }]), false);
    // A crash after phase 1 for a service with svc_id 77: its slot, source range and scheduler
    // state are written, its service entry never was.
    const be = fake.backends.entries()[0]![0];
    fake.slots.update({ svc_id: 77, slot: 0 }, be);
    fake.sourceRanges.update({ prefixlen: 56, svc_id: 77, addr: '10.0.0.0' }, 0);
    fake.sched.update(77, { rr_next: 3 });

    const restarted = new BpfDataplane(fake.maps, null);
    await restarted.sync(stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1'] }]), true);
    expectConsistent(fake);
  });

  test('a full sync restores a missing slot of a programmed service', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const state = stateOf([{ name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1'] }]);
    await plane.sync(state, false);
    fake.slots.delete({ svc_id: svcIdOf(fake, '10.96.0.1'), slot: 0 });

    await plane.sync(state, true);
    expectConsistent(fake);
  });
});

describe('BpfDataplane under map failures', () => {
  test('a full services map: that service fails alone, half of nothing is left, and it is programmed once room is made', async () => {
    const fake = new FakeMaps({ services: 2 });
    const plane = new BpfDataplane(fake.maps, null);
    const defs = [
      { name: 'a', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] },
      { name: 'b', vip: '10.96.0.2', backends: ['10.2.0.1'] },
      { name: 'c', vip: '10.96.0.3', backends: ['10.3.0.1', '10.3.0.2'] },
    ];
    const state = stateOf(defs);
    const r = await plane.sync(state, false);
    expect(r.failed.map((f) => f.service)).toEqual([portKey('c')]);
    expect(r).toMatchObject({ services: 2, backends: 3 });
    expect(r.changed.sort()).toEqual([portKey('a'), portKey('b')]);
    const refused = fake.ops.filter((o) => !o.ok && o.op === 'update');
    expect(refused).toEqual([expect.objectContaining({ map: 'vipr_services_v1', key: svcKey('10.96.0.3') })]);
    expect(backendsOf(fake, '10.96.0.1')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expect(backendsOf(fake, '10.96.0.2')).toEqual(['10.2.0.1:8080']);
    expect(fake.services.lookup(svcKey('10.96.0.3'))).toBeNull();
    expect(fake.slots.size).toBe(3);
    expectConsistent(fake);

    fake.services.capacity = 3;
    fake.clearOps();
    const retry = await plane.sync(state, true);
    expect(retry).toMatchObject({ services: 3, backends: 5, failed: [], changed: [portKey('c')] });
    expect(backendsOf(fake, '10.96.0.3')).toEqual(['10.3.0.1:8080', '10.3.0.2:8080']);
    expectConsistent(fake);
  });

  test('a service removed in the same sync makes room for one waiting on a full map', async () => {
    const fake = new FakeMaps({ services: 2 });
    const plane = new BpfDataplane(fake.maps, null);
    const a = { name: 'a', vip: '10.96.0.1', backends: ['10.1.0.1'] };
    const b = { name: 'b', vip: '10.96.0.2', backends: ['10.2.0.1'] };
    const c = { name: 'c', vip: '10.96.0.3', backends: ['10.3.0.1'] };
    await plane.sync(stateOf([a, b]), false);
    // a is replaced by c in one burst: the map has room for c once a's entry is gone.
    const r = await plane.sync(stateOf([b, c]), true);
    expect(r.failed).toEqual([]);
    expect(backendsOf(fake, c.vip)).toEqual(['10.3.0.1:8080']);
    expectConsistent(fake);
  });

  test('a full slots map: the new service is refused with nothing of it left behind', async () => {
    const fake = new FakeMaps({ slots: 4 });
    const plane = new BpfDataplane(fake.maps, null);
    const r = await plane.sync(stateOf([
      { name: 'a', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] },
      { name: 'b', vip: '10.96.0.2', backends: ['10.2.0.1', '10.2.0.2', '10.2.0.3'] },
    ]), false);
    expect(r.failed.map((f) => f.service)).toEqual([portKey('b')]);
    expect(fake.ops.filter((o) => !o.ok && o.op === 'update').map((o) => o.map)).toEqual(['vipr_slots_v1']);
    expect(fake.services.size).toBe(1);
    expect(backendsOf(fake, '10.96.0.1')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expectConsistent(fake);
  });

  test('a failing batch falls back to entry-by-entry writes and costs only the failing service', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const defs = manyServices(100, 1);
    const bad = defs[50]!;
    fake.services.failUpdatesWhere((k) => k.vip === bad.vip);
    const r = await plane.sync(stateOf(defs), false);

    expect(fake.services.batchCalls).toBe(1);
    const svcOps = fake.ops.filter(isMap('services'));
    // The batch wrote in order up to the bad entry and stopped there, as the kernel does.
    const batchOps = svcOps.filter((o) => o.batch);
    expect(batchOps.at(-1)).toMatchObject({ ok: false, key: svcKey(bad.vip) });
    expect(batchOps.slice(0, -1).every((o) => o.ok)).toBe(true);
    // Then one write per entry; only the bad one is refused.
    const single = svcOps.filter((o) => !o.batch);
    expect(single).toHaveLength(100);
    expect(single.filter((o) => !o.ok).map((o) => o.key)).toEqual([svcKey(bad.vip)]);

    expect(r.failed.map((f) => f.service)).toEqual([portKey(bad.name)]);
    expect(r.services).toBe(99);
    expect(fake.services.size).toBe(99);
    expectConsistent(fake);

    fake.services.clearFaults();
    const retry = await plane.sync(stateOf(defs), true);
    expect(retry).toMatchObject({ services: 100, failed: [] });
    expect(backendsOf(fake, bad.vip)).toEqual([`${bad.backends[0]}:8080`]);
    expectConsistent(fake);
  });

  test('a refused entry write of an existing service keeps its old count, and a later full sync leaves no trace', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    const two = { name: 'web', vip: '10.96.0.1', backends: ['10.1.0.1', '10.1.0.2'] };
    await plane.sync(stateOf([two]), false);
    fake.services.failUpdatesWhere((k) => k.vip === two.vip);
    const r = await plane.sync(stateOf([{ ...two, backends: [...two.backends, '10.1.0.3'] }]), false);
    expect(r.failed.map((f) => f.service)).toEqual([portKey('web')]);
    // Traffic still sees the old two backends.
    expect(backendsOf(fake, two.vip)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);

    // The change is reverted before the write ever succeeds: the full sync must clean up the
    // slot and backend written for the third endpoint.
    fake.services.clearFaults();
    await plane.sync(stateOf([two]), true);
    expect(backendsOf(fake, two.vip)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expectConsistent(fake);
  });

  test('a refused backend write fails the services using it, and only those', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null);
    fake.backends.failNthUpdate(2);
    const r = await plane.sync(stateOf([
      { name: 'a', vip: '10.96.0.1', backends: ['10.1.0.1'] },
      { name: 'b', vip: '10.96.0.2', backends: ['10.2.0.1'] },
      { name: 'c', vip: '10.96.0.3', backends: ['10.3.0.1'] },
    ]), false);
    expect(r.failed.map((f) => f.service)).toEqual([portKey('b')]);
    expect(fake.services.size).toBe(2);
    expect(fake.services.lookup(svcKey('10.96.0.2'))).toBeNull();
    expectConsistent(fake);
  });

  test('the fake map refuses a new key when full with E2BIG, as the kernel', () => {
    const fake = new FakeMaps({ sched: 1 });
    fake.sched.update(1, { rr_next: 1 });
    expect(() => fake.sched.update(2, { rr_next: 2 })).toThrow(expect.objectContaining({ name: 'BpfError', errno: E2BIG }));
    // Replacing an existing key is still allowed.
    fake.sched.update(1, { rr_next: 3 });
    expect(fake.sched.lookup(1)).toEqual({ rr_next: 3 });
  });
});
