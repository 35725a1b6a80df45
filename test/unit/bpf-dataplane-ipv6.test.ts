/*
 * The BPF reconciler with both families, against kernel-like in-memory maps (test/helpers/fake-map.ts,
 * keys and values through the real codecs): a dual-stack Service programs IPv4's maps and IPv6's
 * own maps (services6, backends6, source ranges, node addresses, settings), with service and
 * backend ids from one allocator each so the shared slots never confuse the two; removing one
 * family's entry touches only that family's maps.
 */
import { BpfDataplane } from '../../src/bpf/reconciler/reconciler.js';
import { IPPROTO_TCP, SCOPE_EXTERNAL, SCOPE_INTERNAL, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_SOURCE_RANGES, type SvcKeyT } from '../../src/bpf/layouts.js';
import { formatListing, type Listing } from '../../src/model/listing.js';
import { FakeMaps } from '../helpers/fake-map.js';
import { NODE_IP4, NODE_IP6, nginxV4, nginxV6, stateOf } from '../helpers/dual-stack.js';

const OPTS = { clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'], nodePortAddresses: [] };

function key(vip: string, port: number, scope = SCOPE_EXTERNAL): SvcKeyT {
  return { vip, port, proto: IPPROTO_TCP, scope };
}

/** A frontend's backend addresses, slot by slot, read back through the family's backends map. */
function backendsOf(fake: FakeMaps, k: SvcKeyT): string[] {
  const v6 = k.vip.includes(':');
  const v = (v6 ? fake.services6 : fake.services).lookup(k);
  if (v === null) return [];
  const out: string[] = [];
  for (let slot = 0; slot < v.backend_count; slot++) {
    const id = fake.slots.lookup({ svc_id: v.svc_id, slot });
    const be = id === null ? null : (v6 ? fake.backends6 : fake.backends).lookup(id);
    out.push(be === null ? '?' : `${be.addr}:${be.port}`);
  }
  return out;
}

describe('BpfDataplane, dual-stack', () => {
  test('a dual-stack Service programs both families: IPv6 frontends, backends, ranges, node address and settings in the IPv6 maps', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null, OPTS);
    const result = await plane.sync(stateOf([nginxV4(), nginxV6()]), true);
    expect(result.failed).toEqual([]);

    // IPv4 as before, and nothing IPv6 in IPv4's maps.
    expect(fake.services.entries().map(([k]) => `${k.vip}:${k.port}/${k.scope}`).sort()).toEqual(['0.0.0.0:30080/0', '10.0.0.213:80/0']);
    expect(backendsOf(fake, key('10.0.0.213', 80))).toEqual(['10.244.1.2:80', '10.244.1.3:80']);
    expect(fake.backends.entries().map(([, b]) => b.addr).sort()).toEqual(['10.244.1.2', '10.244.1.3']);

    // IPv6: cluster IP; NodePort on :: and the LoadBalancer IP, each external (Local) plus its internal twin.
    const v6 = new Map(fake.services6.entries().map(([k, v]) => [`${k.vip}|${k.port}|${k.scope}`, v]));
    expect([...v6.keys()].sort()).toEqual(
      ['::|30080|0', '::|30080|1', 'fd00:10:96::213|80|0', 'fd00:192:168:60::100|80|0', 'fd00:192:168:60::100|80|1'].sort(),
    );
    expect(backendsOf(fake, key('fd00:10:96::213', 80))).toEqual(['fd00:10:244:1::2:80', 'fd00:10:244:1::3:80']);
    // externalTrafficPolicy Local: the external frontends have the local endpoint only, the internal twins all.
    expect(backendsOf(fake, key('::', 30080))).toEqual(['fd00:10:244:1::2:80']);
    expect(backendsOf(fake, key('::', 30080, SCOPE_INTERNAL))).toEqual(['fd00:10:244:1::2:80', 'fd00:10:244:1::3:80']);
    const lb = fake.services6.lookup(key('fd00:192:168:60::100', 80));
    expect(lb?.flags).toBe(SVC_F_EXTERNAL | SVC_F_LOCAL | SVC_F_SOURCE_RANGES);
    expect(fake.sourceRanges6.entries().map(([k]) => k)).toEqual(
      expect.arrayContaining([{ prefixlen: 32 + 64, svc_id: lb?.svc_id, addr: 'fd00:192:168:60::' }]),
    );
    expect(fake.sourceRanges.size).toBe(0);

    // Node addresses and settings per family.
    expect(fake.nodeIps.entries().map(([k]) => k.addr)).toEqual([NODE_IP4]);
    expect(fake.nodeIps6.entries().map(([k]) => k.addr)).toEqual([NODE_IP6]);
    expect(fake.config.lookup(0)).toMatchObject({ snat_addr: NODE_IP4, cluster_cidr: '10.244.0.0', cluster_mask: '255.255.0.0' });
    expect(fake.config6.lookup(0)).toEqual({ snat_addr: NODE_IP6, cluster_cidr: 'fd00:10:244::', cluster_mask: 'ffff:ffff:ffff:ff00::' });
  });

  test('service and backend ids never collide across families: every slot points into its own family\'s backends', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null, OPTS);
    await plane.sync(stateOf([nginxV4(), nginxV6()]), true);
    const svc4 = fake.services.entries().map(([, v]) => v.svc_id);
    const svc6 = fake.services6.entries().map(([, v]) => v.svc_id);
    expect(new Set([...svc4, ...svc6]).size).toBe(svc4.length + svc6.length);
    const be4 = new Set(fake.backends.entries().map(([k]) => k.id));
    const be6 = new Set(fake.backends6.entries().map(([k]) => k.id));
    expect([...be4].filter((id) => be6.has(id))).toEqual([]);
    // lc's counters (shared map) exist once per backend of either family.
    expect(fake.backendConns.size).toBe(be4.size + be6.size);
    for (const [k, v] of fake.slots.entries()) {
      expect(svc6.includes(k.svc_id) ? be6.has(v.id) : be4.has(v.id)).toBe(true);
    }
  });

  test('removing the IPv6 entry removes only IPv6 entries, in a partial sync too; the IPv4 maps see no operation', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null, OPTS);
    await plane.sync(stateOf([nginxV4(), nginxV6()]), true);
    const svc4 = fake.services.entries().map(([, v]) => v.svc_id);
    fake.clearOps();

    const result = await plane.sync(stateOf([nginxV4()]), false, new Set(['default/nginx-service']));
    expect(result.failed).toEqual([]);
    expect(fake.services6.size).toBe(0);
    expect(fake.backends6.size).toBe(0);
    expect(fake.sourceRanges6.size).toBe(0);
    expect(new Set(fake.slots.entries().map(([k]) => k.svc_id))).toEqual(new Set(svc4));
    const touched = new Set(fake.effects().map((o) => o.map));
    for (const m of ['vipr_services_v1', 'vipr_backends_v1', 'vipr_source_ranges_v1', 'vipr_node_ips_v1', 'vipr_config_v1']) expect(touched.has(m)).toBe(false);
    expect(backendsOf(fake, key('10.0.0.213', 80))).toEqual(['10.244.1.2:80', '10.244.1.3:80']);
    expect(backendsOf(fake, key('0.0.0.0', 30080))).toEqual(['10.244.1.2:80', '10.244.1.3:80']);

    // Back again: an IPv6 endpoint change in a partial sync rewrites IPv6's maps alone.
    await plane.sync(stateOf([nginxV4(), nginxV6()]), false, new Set(['default/nginx-service']));
    fake.clearOps();
    await plane.sync(stateOf([nginxV4(), nginxV6({}, ['fd00:10:244:1::2', 'fd00:10:244:1::4'])]), false, new Set(['default/nginx-service']));
    expect(backendsOf(fake, key('fd00:10:96::213', 80))).toEqual(['fd00:10:244:1::2:80', 'fd00:10:244:1::4:80']);
    expect(fake.effects().filter((o) => /^vipr_(services|backends|source_ranges)_v1$/.test(o.map))).toEqual([]);
  });

  test('a restarted agent takes both families\' ids back from the maps and rewrites nothing', async () => {
    const fake = new FakeMaps();
    const state = stateOf([nginxV4(), nginxV6()]);
    await new BpfDataplane(fake.maps, null, OPTS).sync(state, true);
    fake.clearOps();
    const again = await new BpfDataplane(fake.maps, null, OPTS).sync(state, true);
    expect(again).toMatchObject({ writes: 0, deletes: 0, failed: [] });
  });

  test('a node without an IPv6 address: IPv6 settings stay empty, NodePort addresses follow --nodeport-addresses per family', async () => {
    const fake = new FakeMaps();
    const plane = new BpfDataplane(fake.maps, null, { clusterCIDRs: [], nodePortAddresses: ['fd00:192:168:60::/64'] });
    await plane.sync(stateOf([nginxV4()], [NODE_IP4, '10.9.9.9', NODE_IP6]), true);
    expect(fake.nodeIps.size).toBe(0);
    expect(fake.nodeIps6.entries().map(([k]) => k.addr)).toEqual([NODE_IP6]);
    await plane.sync(stateOf([nginxV4()], [NODE_IP4]), true);
    expect(fake.nodeIps6.size).toBe(0);
    expect(fake.config6.lookup(0)).toEqual({ snat_addr: '::', cluster_cidr: '::', cluster_mask: '::' });
    expect(fake.config.lookup(0)).toMatchObject({ snat_addr: NODE_IP4, cluster_cidr: '0.0.0.0' });
  });
});

test('vipr list -n prints IPv6 as ipvsadm does, after IPv4', () => {
  const listing: Listing = {
    source: 'bpf (test)',
    services: [
      { protocol: 'TCP', address: 'fd00:10:96::213', port: 80, scheduler: 'rr', persistentSeconds: 0, name: 'default/nginx-service IPv6', backends: [
        { address: 'fd00:10:244:1::3', port: 80, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] },
        { address: 'fd00:10:244:1::2', port: 80, forward: 'Masq', weight: 1, activeConn: 1, inactConn: 0, flags: [] },
      ] },
      { protocol: 'TCP', address: '10.0.0.213', port: 80, scheduler: 'rr', persistentSeconds: 0, name: 'default/nginx-service', backends: [
        { address: '10.244.1.2', port: 80, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] },
      ] },
    ],
  };
  const lines = formatListing(listing, { numeric: true }).split('\n');
  expect(lines.slice(3)).toEqual([
    'TCP  10.0.0.213:80 rr',
    '  -> 10.244.1.2:80                Masq    1      0          0',
    'TCP  [fd00:10:96::213]:80 rr',
    '  -> [fd00:10:244:1::2]:80        Masq    1      1          0',
    '  -> [fd00:10:244:1::3]:80        Masq    1      0          0',
    '',
  ]);
});
