/*
 * Conntrack ageing and flushing from user space, against kernel-like fake maps: each state has
 * its own timeout, a flow's two entries go together, lc's open-flow counters follow.
 */
import { FakeMaps } from '../helpers/fake-map.js';
import { DEFAULT_CT_TIMEOUTS, flushConntrack, gcConntrack, readFlows } from '../../src/bpf/conntrack.js';
import { CT_F_CLOSING, CT_F_SEEN_REPLY, CT_F_SNAT, CT_FORWARD, CT_REPLY, IPPROTO_TCP, IPPROTO_UDP } from '../../src/bpf/layouts.js';

const S = 1_000_000_000n;
const NOW = 100_000n * S;

function flow(fake: FakeMaps, o: { sport: number; proto: number; idle: number; fwdFlags?: number; repFlags?: number; svc?: number; backend?: number; snat?: boolean }): void {
  const last = NOW - BigInt(o.idle) * S;
  const base = { created_ns: last, last_seen_ns: last, tcp_flags: 0, svc_id: o.svc ?? 1, backend_id: o.backend ?? 7 };
  fake.conntrack.update(
    { saddr: '172.30.0.2', daddr: '10.0.0.1', sport: o.sport, dport: 80, proto: o.proto, dir: CT_FORWARD },
    { ...base, nat_addr: '10.244.0.11', nat_port: 80, flags: (o.fwdFlags ?? 0) | (o.snat ? CT_F_SNAT : 0), snat_addr: o.snat ? '192.168.60.11' : '0.0.0.0', snat_port: o.snat ? 62000 + o.sport % 1000 : 0 },
  );
  fake.conntrack.update(
    { saddr: '10.244.0.11', daddr: o.snat ? '192.168.60.11' : '172.30.0.2', sport: 80, dport: o.snat ? 62000 + o.sport % 1000 : o.sport, proto: o.proto, dir: CT_REPLY },
    { ...base, nat_addr: '10.0.0.1', nat_port: 80, flags: (o.repFlags ?? 0) | (o.snat ? CT_F_SNAT : 0), snat_addr: o.snat ? '172.30.0.2' : '0.0.0.0', snat_port: o.snat ? o.sport : 0 },
  );
}

test('each state ages out after its own timeout; both entries of a flow go together', () => {
  const fake = new FakeMaps();
  flow(fake, { sport: 1000, proto: IPPROTO_TCP, idle: 30, repFlags: CT_F_SEEN_REPLY }); // established, fresh
  flow(fake, { sport: 1001, proto: IPPROTO_TCP, idle: DEFAULT_CT_TIMEOUTS.established + 1, repFlags: CT_F_SEEN_REPLY }); // established, expired
  flow(fake, { sport: 1002, proto: IPPROTO_TCP, idle: DEFAULT_CT_TIMEOUTS.syn + 1 }); // never answered
  flow(fake, { sport: 1003, proto: IPPROTO_TCP, idle: DEFAULT_CT_TIMEOUTS.closing + 1, fwdFlags: CT_F_CLOSING }); // closed
  flow(fake, { sport: 1004, proto: IPPROTO_TCP, idle: 5, fwdFlags: CT_F_CLOSING }); // closing, fresh
  flow(fake, { sport: 1005, proto: IPPROTO_UDP, idle: DEFAULT_CT_TIMEOUTS.udp + 1 });
  flow(fake, { sport: 1006, proto: IPPROTO_UDP, idle: 10, snat: true });
  expect(readFlows(fake.conntrack, NOW).map((f) => `${f.client} ${f.state}`).sort()).toEqual([
    '172.30.0.2:1000 established', '172.30.0.2:1001 established', '172.30.0.2:1002 syn', '172.30.0.2:1003 closing',
    '172.30.0.2:1004 closing', '172.30.0.2:1005 udp', '172.30.0.2:1006 udp',
  ]);
  const deleted = gcConntrack(fake.conntrack, fake.backendConns, DEFAULT_CT_TIMEOUTS, NOW);
  expect(deleted).toBe(8);
  const left = readFlows(fake.conntrack, NOW);
  expect(left.map((f) => f.client).sort()).toEqual(['172.30.0.2:1000', '172.30.0.2:1004', '172.30.0.2:1006']);
  expect(left.every((f) => f.hasReply)).toBe(true);
  expect(left.find((f) => f.client.endsWith(':1006'))?.snat).toBe('192.168.60.11:62006');
  expect(fake.conntrack.size).toBe(6);
});

test('a flow that ages out while open gives its backend\'s lc count back', () => {
  const fake = new FakeMaps();
  fake.backendConns.update({ id: 7 }, { active: 2 });
  flow(fake, { sport: 2000, proto: IPPROTO_TCP, idle: DEFAULT_CT_TIMEOUTS.syn + 1 });
  flow(fake, { sport: 2001, proto: IPPROTO_TCP, idle: DEFAULT_CT_TIMEOUTS.closing + 1, fwdFlags: CT_F_CLOSING });
  gcConntrack(fake.conntrack, fake.backendConns, DEFAULT_CT_TIMEOUTS, NOW);
  // The closing flow was already counted down by the datapath when it saw FIN/RST.
  expect(fake.backendConns.lookup({ id: 7 })).toEqual({ active: 1 });
});

test('a reply entry whose forward entry is gone is collected', () => {
  const fake = new FakeMaps();
  flow(fake, { sport: 3000, proto: IPPROTO_UDP, idle: 120 });
  fake.conntrack.delete({ saddr: '172.30.0.2', daddr: '10.0.0.1', sport: 3000, dport: 80, proto: IPPROTO_UDP, dir: CT_FORWARD });
  expect(gcConntrack(fake.conntrack, null, DEFAULT_CT_TIMEOUTS, NOW)).toBe(1);
  expect(fake.conntrack.size).toBe(0);
});

test('flush: every flow, or only one service\'s', () => {
  const fake = new FakeMaps();
  flow(fake, { sport: 4000, proto: IPPROTO_TCP, idle: 1, svc: 1 });
  flow(fake, { sport: 4001, proto: IPPROTO_TCP, idle: 1, svc: 2 });
  flow(fake, { sport: 4002, proto: IPPROTO_UDP, idle: 1, svc: 2 });
  expect(flushConntrack(fake.conntrack, null, new Set([2]))).toBe(2);
  expect(readFlows(fake.conntrack, NOW).map((f) => f.svcId)).toEqual([1]);
  expect(flushConntrack(fake.conntrack, null, null)).toBe(1);
  expect(fake.conntrack.size).toBe(0);
});
