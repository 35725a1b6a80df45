/*
 * Conntrack GC in the kernel (bpf/ct_gc.bpf.c through src/bpf/ct-gc.ts): each state ages out after
 * its own timeout, a flow's two entries go together, orphaned reply entries go, lc counts follow;
 * and a pass over a full table never stalls the event loop for more than 50 ms, at 262,144 and at
 * 1,000,000 entries.
 */
import { DatapathFixture, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_SYN, ipv4Frame, parseFrame } from './packets.js';
import { CtGc } from '../../src/bpf/ct-gc.js';
import { ctSizes, monotonicNs, readFlows } from '../../src/bpf/conntrack.js';
import { CT_F_CLOSING, CT_FORWARD, CT_REPLY, IPPROTO_TCP, IPPROTO_UDP, type CtKeyT, type CtRole } from '../../src/bpf/layouts.js';
import { measureCtGc } from '../../src/bench/ct-gc.js';

const S = 1_000_000_000n;
/* Timeouts short enough to fit in this machine's uptime (bpf_ktime_get_ns counts from boot). */
const T = { syn: 60, established: 600, closing: 10, udp: 60 };
const LC: SvcDef = { name: 'lc', vip: '10.0.0.50', port: 80, targetPort: 80, backends: ['10.244.1.101'], scheduler: 'lc' };

let fx: DatapathFixture;
let gc: CtGc;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-ctgc-${process.pid}`, {}, ctSizes({ tcp: 4096, udp: 1024 }));
  await fx.program([LC]);
  gc = CtGc.load(fx.pinDir, T);
});

afterAll(() => {
  gc?.close();
  fx?.close();
});

/** Writes a flow's two entries straight into a map, last seen `idle` seconds ago. */
function seed(table: CtRole, sport: number, idle: number, o: { fwdFlags?: number; backend?: number; noForward?: boolean } = {}): CtKeyT {
  const proto = table === 'ctUdp' ? IPPROTO_UDP : IPPROTO_TCP;
  const last = monotonicNs() - BigInt(idle) * S;
  const base = { created_ns: last, last_seen_ns: last, tcp_flags: 0, snat_addr: '0.0.0.0', snat_port: 0, svc_id: 1, backend_id: o.backend ?? 999 };
  const fwd = { saddr: '172.30.0.2', daddr: '10.0.0.99', sport, dport: 80, proto, dir: CT_FORWARD };
  if (!o.noForward) fx.dp.maps[table].update(fwd, { ...base, nat_addr: '10.244.0.11', nat_port: 80, flags: o.fwdFlags ?? 0 });
  fx.dp.maps[table].update({ saddr: '10.244.0.11', daddr: '172.30.0.2', sport: 80, dport: sport, proto, dir: CT_REPLY }, { ...base, nat_addr: '10.0.0.99', nat_port: 80, flags: 0 });
  return fwd;
}

test('each state ages out after its own timeout; both entries of a flow go together; orphaned replies go', async () => {
  fx.flushFlows();
  seed('ctTcp', 1000, 30); // established, fresh
  seed('ctTcp', 1001, T.established + 5); // established, expired
  seed('ctTcp', 1002, T.closing + 5, { fwdFlags: CT_F_CLOSING }); // closed
  seed('ctTcp', 1003, 5, { fwdFlags: CT_F_CLOSING }); // closing, fresh
  seed('ctTcpSyn', 1004, T.syn + 5); // never established
  seed('ctTcpSyn', 1005, 20); // half-open, fresh
  seed('ctUdp', 1006, T.udp + 5);
  seed('ctUdp', 1007, 10);
  seed('ctUdp', 1008, T.udp + 5, { noForward: true }); // reply left alone
  seed('ctUdp', 1009, 10, { noForward: true }); // reply left alone, fresh
  const pass = await gc.pass();
  expect(pass).toMatchObject({ ctTcp: { deleted: 4, kept: 4 }, ctTcpSyn: { deleted: 2, kept: 2 }, ctUdp: { deleted: 3, kept: 3 } });
  const left = readFlows(fx.dp.maps).map((f) => `${f.client} ${f.state}`).sort();
  expect(left).toEqual(['172.30.0.2:1000 established', '172.30.0.2:1003 closing', '172.30.0.2:1005 syn', '172.30.0.2:1007 udp']);
  expect(fx.dp.maps.ctUdp.entries().filter(([k]) => k.dir === CT_REPLY).map(([k]) => k.dport).sort()).toEqual([1007, 1009]);
});

test('an open flow that ages out gives its backend\'s lc count back, once; a closed one was counted already', async () => {
  fx.flushFlows();
  // A real flow through the datapath (counted at creation), then aged by rewriting its times.
  const src = '172.31.0.9';
  const syn = fx.ingress(ipv4Frame({ src, dst: LC.vip, proto: 'tcp', sport: 50000, dport: 80, tcpFlags: TCP_SYN }));
  const backend = parseFrame(syn.out).dst;
  fx.egress(ipv4Frame({ src: backend, dst: src, proto: 'tcp', sport: 80, dport: 50000, tcpFlags: TCP_SYN | TCP_ACK }));
  fx.ingress(ipv4Frame({ src, dst: LC.vip, proto: 'tcp', sport: 50000, dport: 80, tcpFlags: TCP_ACK }));
  const active = (): number => fx.dp.maps.backendConns.entries().reduce((n, [, v]) => n + v.active, 0);
  expect(active()).toBe(1);
  const old = monotonicNs() - BigInt(T.established + 5) * S;
  for (const [k, v] of fx.dp.maps.ctTcp.entries()) fx.dp.maps.ctTcp.update(k, { ...v, last_seen_ns: old });
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(2);
  expect((await gc.pass()).ctTcp.deleted).toBe(2);
  expect(active()).toBe(0);
  // A closed flow (FIN counted down by the datapath) ageing out does not count again.
  const [id] = fx.dp.maps.backendConns.entries().map(([k]) => k.id);
  seed('ctTcp', 1100, T.closing + 5, { fwdFlags: CT_F_CLOSING, backend: id });
  expect((await gc.pass()).ctTcp.deleted).toBe(2);
  expect(active()).toBe(0);
});

describe('a pass over a full table never stalls the event loop over 50 ms', () => {
  test.each([262_144, 1_000_000])('%d entries', async (entries) => {
    const s = await measureCtGc(entries, `/sys/fs/bpf/vipr-test-ctgc-big-${process.pid}`);
    expect(s.entries).toBe(entries);
    // One pass deletes (nearly) everything; what the kernel's iterator stepped past goes next pass.
    expect(s.deleted).toBeGreaterThan(entries * 0.999);
    expect(s.deleted + s.secondPassDeleted).toBe(entries);
    expect(s.kept + s.secondPassKept).toBe(0);
    expect(s.maxStallMs).toBeLessThan(50);
  }, 120_000);
});
