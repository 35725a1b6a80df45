/*
 * Conntrack from user space, against kernel-like fake maps: flows read from the three maps with
 * their states, flushing (a flow's two entries together, lc's counters following), the maps' sizes
 * (Cilium's dynamic sizing), the pressure warnings, and the options that set them. Ageing runs in
 * the kernel and is tested there (test/bpf/ct-gc.test.ts).
 */
import { FakeMap, type MapOp } from '../helpers/fake-map.js';
import { CT_ENTRY_BYTES, CT_LIMIT_MAX, UNSERVED_CT_SIZES, ctSizes, ctSizesByFamily, flushConntrack, readFlows, type CtMaps } from '../../src/bpf/conntrack.js';
import { CtPressure, type CtGcPass } from '../../src/bpf/ct-gc.js';
import { parseCtSizes, parseSnatPortRange } from '../../src/cli/run.js';
import { CT_F_CLOSING, CT_F_SEEN_REPLY, CT_F_SNAT, CT_FORWARD, CT_REPLY, IPPROTO_TCP, IPPROTO_UDP, MAPS, type BackendConnsT, type BackendIdT, type CtKeyT, type CtRole, type CtValueT } from '../../src/bpf/layouts.js';
import { ConfigError } from '../../src/errors.js';

const S = 1_000_000_000n;
const NOW = 100_000n * S;
const GiB = 1024 ** 3;

type FakeCt = { [R in keyof CtMaps]: FakeMap<CtKeyT, CtValueT> } & { ops: MapOp[] };

function fakeCt(): FakeCt {
  const ops: MapOp[] = [];
  return {
    ops, ctTcp: new FakeMap(MAPS.ctTcp, 65536, ops), ctTcpSyn: new FakeMap(MAPS.ctTcpSyn, 65536, ops), ctUdp: new FakeMap(MAPS.ctUdp, 65536, ops),
    ctTcp6: new FakeMap(MAPS.ctTcp6, 65536, ops), ctTcpSyn6: new FakeMap(MAPS.ctTcpSyn6, 65536, ops), ctUdp6: new FakeMap(MAPS.ctUdp6, 65536, ops),
  };
}

function flow(ct: CtMaps, table: CtRole, o: { sport: number; idle: number; fwdFlags?: number; repFlags?: number; svc?: number; backend?: number; snat?: boolean }): void {
  const proto = table === 'ctUdp' ? IPPROTO_UDP : IPPROTO_TCP;
  const last = NOW - BigInt(o.idle) * S;
  const base = { created_ns: last, last_seen_ns: last, tcp_flags: 0, svc_id: o.svc ?? 1, backend_id: o.backend ?? 7 };
  ct[table].update(
    { saddr: '172.30.0.2', daddr: '10.0.0.1', sport: o.sport, dport: 80, proto, dir: CT_FORWARD },
    { ...base, nat_addr: '10.244.0.11', nat_port: 80, flags: (o.fwdFlags ?? 0) | (o.snat ? CT_F_SNAT : 0), snat_addr: o.snat ? '192.168.60.11' : '0.0.0.0', snat_port: o.snat ? 62000 + o.sport % 1000 : 0 },
  );
  ct[table].update(
    { saddr: '10.244.0.11', daddr: o.snat ? '192.168.60.11' : '172.30.0.2', sport: 80, dport: o.snat ? 62000 + o.sport % 1000 : o.sport, proto, dir: CT_REPLY },
    { ...base, nat_addr: '10.0.0.1', nat_port: 80, flags: (o.repFlags ?? 0) | (o.snat ? CT_F_SNAT : 0), snat_addr: o.snat ? '172.30.0.2' : '0.0.0.0', snat_port: o.snat ? o.sport : 0 },
  );
}

test('flows are read from all three maps, their state from the map and the flags of both entries', () => {
  const ct = fakeCt();
  flow(ct, 'ctTcp', { sport: 1000, idle: 30, repFlags: CT_F_SEEN_REPLY });
  flow(ct, 'ctTcp', { sport: 1001, idle: 3, repFlags: CT_F_CLOSING });
  flow(ct, 'ctTcpSyn', { sport: 1002, idle: 1 });
  flow(ct, 'ctTcpSyn', { sport: 1003, idle: 1, fwdFlags: CT_F_CLOSING });
  flow(ct, 'ctUdp', { sport: 1004, idle: 10, snat: true });
  const flows = readFlows(ct, NOW);
  expect(flows.map((f) => `${f.client} ${f.state} ${f.table}`).sort()).toEqual([
    '172.30.0.2:1000 established ctTcp', '172.30.0.2:1001 closing ctTcp', '172.30.0.2:1002 syn ctTcpSyn',
    '172.30.0.2:1003 closing ctTcpSyn', '172.30.0.2:1004 udp ctUdp',
  ]);
  expect(flows.every((f) => f.hasReply)).toBe(true);
  expect(flows.find((f) => f.client.endsWith(':1004'))).toMatchObject({ snat: '192.168.60.11:62004', idleSeconds: 10, protocol: 'UDP' });
});

test('flush: every flow, or only one service\'s; both entries go, and open flows give their lc count back', () => {
  const ct = fakeCt();
  const conns = new FakeMap<BackendIdT, BackendConnsT>(MAPS.backendConns, 16, ct.ops);
  conns.update({ id: 7 }, { active: 3 });
  flow(ct, 'ctTcp', { sport: 4000, idle: 1, svc: 1 });
  flow(ct, 'ctTcpSyn', { sport: 4001, idle: 1, svc: 2, fwdFlags: CT_F_CLOSING });
  flow(ct, 'ctUdp', { sport: 4002, idle: 1, svc: 2 });
  expect(flushConntrack(ct, conns, new Set([2]))).toBe(2);
  expect(readFlows(ct, NOW).map((f) => f.svcId)).toEqual([1]);
  expect(ct.ctTcpSyn.size + ct.ctUdp.size).toBe(0);
  // The closing flow was counted down by the datapath already (when it saw FIN or RST).
  expect(conns.lookup({ id: 7 })).toEqual({ active: 2 });
  expect(flushConntrack(ct, conns, null)).toBe(1);
  expect(ct.ctTcp.size).toBe(0);
  expect(conns.lookup({ id: 7 })).toEqual({ active: 1 });
});

describe('map sizes (Cilium\'s dynamic sizing: 0.25 % of memory, at least 128Ki TCP / 64Ki UDP)', () => {
  test('small nodes get the floors, the half-open map a quarter of the TCP one', () => {
    expect(ctSizes({}, 1 * GiB)).toEqual({ tcp: 131072, tcpSyn: 32768, udp: 65536 });
  });

  test('sizes grow with memory in the proportion of the defaults, within the memory share', () => {
    const s = ctSizes({}, 64 * GiB);
    expect(s.tcp).toBeGreaterThan(524288);
    expect(s.udp * 2).toBeGreaterThanOrEqual(s.tcp - 2);
    expect(s.udp * 2).toBeLessThanOrEqual(s.tcp + 2);
    expect((s.tcp + s.tcpSyn + s.udp) * CT_ENTRY_BYTES).toBeLessThanOrEqual(64 * GiB * 0.0025);
    expect(ctSizes({}, 65536 * GiB).tcp).toBe(CT_LIMIT_MAX);
  });

  test('an explicit size replaces the computed one for that map only', () => {
    expect(ctSizes({ tcp: 4096 }, 1 * GiB)).toEqual({ tcp: 4096, tcpSyn: 1024, udp: 65536 });
    expect(ctSizes({ udp: 2048 }, 1 * GiB)).toEqual({ tcp: 131072, tcpSyn: 32768, udp: 2048 });
  });

  test('--ct-max-tcp / --ct-max-udp: whole numbers within the limits, else one line naming the option', () => {
    expect(parseCtSizes('4096', '2048')).toMatchObject({ tcp: 4096, tcpSyn: 1024, udp: 2048 });
    for (const [tcp, udp, name] of [['12.5', undefined, 'ct-max-tcp'], [undefined, '100', 'ct-max-udp'], [String(2 ** 25), undefined, 'ct-max-tcp'], ['lots', undefined, 'ct-max-tcp']] as const) {
      expect(() => parseCtSizes(tcp, udp)).toThrow(ConfigError);
      expect(() => parseCtSizes(tcp, udp)).toThrow(new RegExp(`^--${name} .*: expected a whole number of entries from 1024 to 16777216$`));
    }
  });

  test('a family the node does not serve gets the smallest maps; both served, both get the sizes', () => {
    const sizes = ctSizes({}, 1 * GiB);
    expect(ctSizesByFamily(sizes, ['IPv4'])).toEqual({ IPv4: sizes, IPv6: { tcp: 1024, tcpSyn: 1024, udp: 1024 } });
    expect(ctSizesByFamily(sizes, ['IPv6'])).toEqual({ IPv4: UNSERVED_CT_SIZES, IPv6: sizes });
    expect(ctSizesByFamily(sizes, ['IPv4', 'IPv6'])).toEqual({ IPv4: sizes, IPv6: sizes });
  });
});

test('--snat-port-range LO-HI', () => {
  expect(parseSnatPortRange('61000-65535')).toEqual([61000, 65535]);
  expect(parseSnatPortRange('40000-40000')).toEqual([40000, 40000]);
  for (const bad of ['65535-61000', '0-100', '61000-70000', '61000', 'a-b', '61000:65535']) {
    expect(() => parseSnatPortRange(bad)).toThrow(/^--snat-port-range .*: expected LO-HI with 1 <= LO <= HI <= 65535/);
  }
});

test('pressure: a map passing 90 % is reported once, again only after it fell under 80 %', () => {
  const max: Record<CtRole, number> = { ctTcp: 1000, ctTcpSyn: 100, ctUdp: 100, ctTcp6: 1000, ctTcpSyn6: 100, ctUdp6: 100 };
  const idle = { seen: 0, deleted: 0, kept: 0 };
  const pass = (tcp: number, deleted = 0): CtGcPass => ({
    ctTcp: { seen: tcp + deleted, deleted, kept: tcp }, ctTcpSyn: { seen: 10, deleted: 0, kept: 10 }, ctUdp: idle, ctTcp6: idle, ctTcpSyn6: idle, ctUdp6: idle,
  });
  const p = new CtPressure();
  expect(p.update(pass(899), max)).toEqual([]);
  expect(p.update(pass(910, 40), max)).toEqual([{ map: 'vipr_ct_tcp_v1', entries: 910, maxEntries: 1000, over: true }]);
  expect(p.update(pass(990), max)).toEqual([]);
  expect(p.update(pass(850), max)).toEqual([]);
  expect(p.update(pass(799), max)).toEqual([{ map: 'vipr_ct_tcp_v1', entries: 799, maxEntries: 1000, over: false }]);
  expect(p.update(pass(901), max)).toHaveLength(1);
});

test('IPv6 flows are read from the IPv6 maps and print as [addr]:port; flush takes both families', () => {
  const ct = fakeCt();
  flow(ct, 'ctTcp', { sport: 40000, idle: 5 });
  const last = NOW - 3n * S;
  const base = { created_ns: last, last_seen_ns: last, tcp_flags: 0, svc_id: 2, backend_id: 9, flags: 0, snat_addr: '::', snat_port: 0 };
  ct.ctTcp6.update({ saddr: 'fd00:10:244:9::5', daddr: 'fd00:10:96::213', sport: 40001, dport: 80, proto: IPPROTO_TCP, dir: CT_FORWARD }, { ...base, nat_addr: 'fd00:10:244:1::2', nat_port: 8080 });
  ct.ctTcp6.update({ saddr: 'fd00:10:244:1::2', daddr: 'fd00:10:244:9::5', sport: 8080, dport: 40001, proto: IPPROTO_TCP, dir: CT_REPLY }, { ...base, nat_addr: 'fd00:10:96::213', nat_port: 80 });
  const flows = readFlows(ct, NOW);
  const v6 = flows.find((f) => f.table === 'ctTcp6');
  expect(v6).toMatchObject({
    protocol: 'TCP', client: '[fd00:10:244:9::5]:40001', frontend: '[fd00:10:96::213]:80', backend: '[fd00:10:244:1::2]:8080',
    snat: null, state: 'established', svcId: 2, backendId: 9, hasReply: true, idleSeconds: 3,
  });
  expect(flows).toHaveLength(2);
  expect(flushConntrack(ct, null, new Set([2]))).toBe(1);
  expect(ct.ctTcp6.size).toBe(0);
  expect(ct.ctTcp.size).toBe(2);
});
