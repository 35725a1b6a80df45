/*
 * The IPv6 datapath through the real TC and XDP programs (BPF_PROG_TEST_RUN), with the IPv6 maps
 * written directly through the real codecs: DNAT and reverse NAT of TCP and UDP, extension
 * headers, fragments, NodePort with SNAT, hairpin, externalTrafficPolicy Local, source ranges,
 * affinity, the schedulers, XDP, IPv4 beside it, and random/mutated frames. Every rewritten frame's
 * upper-layer checksum is recomputed here over the IPv6 pseudo-header.
 */
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, type SvcDef } from './fixture.js';
import {
  TCP_ACK, TCP_FIN, TCP_SYN, changedOffsets, expandIpv6, fragmentFrame6, ipv4Frame, parseFrame, parseFrame6, prng, reassemble6, withExtHeaders,
} from './packets.js';
import { ipv6Frame, type Ipv6Packet } from './icmp6-packets.js';
import { IPPROTO_TCP, IPPROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL } from '../../src/bpf/layouts.js';

const SVC_F_AFFINITY = 1;
const SVC_F_LOCAL = 2;
const SVC_F_EXTERNAL = 4;
const SVC_F_SOURCE_RANGES = 8;
const BE_F_LOCAL = 2;
const SCHED = { random: 0, rr: 1, sh: 2, maglev: 3, lc: 4 } as const;

const NODE6 = 'fd00:192:168:60::11';
const CLIENT = 'fd00:172:30::2';
const EXT_CLIENT = 'fd00:192:168:60::100';
const HAIRPIN6 = '100::a9fe:2a01';
const SNAT_PORT_MIN = 61000;

interface Svc6 {
  id: number;
  vip: string;
  port: number;
  proto?: 'tcp' | 'udp';
  targetPort: number;
  backends: string[];
  remote?: string[];
  flags?: number;
  scheduler?: keyof typeof SCHED;
  affinity?: number;
  scope?: number;
  /** Slots: the backends repeated to this many (a Maglev table's size). */
  slots?: number;
}

const WEB: Svc6 = { id: 1001, vip: 'fd00:10:96::213', port: 80, targetPort: 8080, backends: ['fd00:10:244:1::11', 'fd00:10:244:1::12', 'fd00:10:244:1::13'] };
const DNS: Svc6 = { id: 1002, vip: 'fd00:10:96::53', port: 53, proto: 'udp', targetPort: 5353, backends: ['fd00:10:244:1::21', 'fd00:10:244:1::22'] };
const NP_LOCAL: Svc6 = { id: 1003, vip: '::', port: 30080, targetPort: 80, backends: ['fd00:10:244:1::31'], flags: SVC_F_EXTERNAL };
const NP_REMOTE: Svc6 = { id: 1004, vip: '::', port: 30081, targetPort: 8080, backends: [], remote: ['fd00:10:244:2::11'], flags: SVC_F_EXTERNAL };
const HAIRPIN: Svc6 = { id: 1005, vip: 'fd00:10:96::16', port: 80, targetPort: 80, backends: ['fd00:10:244:1::41'] };
const ETP_LOCAL_EXT: Svc6 = { id: 1006, vip: 'fd00:10:250::11', port: 80, targetPort: 80, backends: ['fd00:10:244:1::51'], flags: SVC_F_EXTERNAL | SVC_F_LOCAL };
const ETP_LOCAL_INT: Svc6 = { id: 1007, vip: 'fd00:10:250::11', port: 80, targetPort: 80, backends: [], remote: ['fd00:10:244:2::51'], flags: SVC_F_EXTERNAL, scope: SCOPE_INTERNAL };
const RANGES: Svc6 = { id: 1008, vip: 'fd00:10:250::10', port: 80, targetPort: 80, backends: ['fd00:10:244:1::61'], flags: SVC_F_EXTERNAL | SVC_F_SOURCE_RANGES };
const AFFINITY: Svc6 = { id: 1009, vip: 'fd00:10:96::15', port: 80, targetPort: 80, backends: ['fd00:10:244:1::71', 'fd00:10:244:1::72', 'fd00:10:244:1::73'], flags: SVC_F_AFFINITY, affinity: 600 };
const RR: Svc6 = { id: 1010, vip: 'fd00:10:96::17', port: 80, targetPort: 80, backends: ['fd00:10:244:1::81', 'fd00:10:244:1::82', 'fd00:10:244:1::83'], scheduler: 'rr' };
const SH: Svc6 = { id: 1011, vip: 'fd00:10:96::18', port: 80, targetPort: 80, backends: ['fd00:10:244:1::91', 'fd00:10:244:1::92', 'fd00:10:244:1::93'], scheduler: 'sh' };
const MAGLEV: Svc6 = { id: 1012, vip: 'fd00:10:96::19', port: 80, targetPort: 80, backends: ['fd00:10:244:1::a1', 'fd00:10:244:1::a2', 'fd00:10:244:1::a3'], scheduler: 'maglev', slots: 307 };
const LC: Svc6 = { id: 1013, vip: 'fd00:10:96::20', port: 80, targetPort: 80, backends: ['fd00:10:244:1::b1', 'fd00:10:244:1::b2'], scheduler: 'lc' };
const ALL6 = [WEB, DNS, NP_LOCAL, NP_REMOTE, HAIRPIN, ETP_LOCAL_EXT, ETP_LOCAL_INT, RANGES, AFFINITY, RR, SH, MAGLEV, LC];

const WEB4: SvcDef = { name: 'web4', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: ['10.244.0.11', '10.244.0.12'] };

let fx: DatapathFixture;
let nextBackendId = 5001;

/** Writes one IPv6 frontend as the agent does: backends and slots first, then the service entry. */
function addService6(s: Svc6): void {
  const m = fx.dp.maps;
  const proto = s.proto === 'udp' ? IPPROTO_UDP : IPPROTO_TCP;
  const all = [...s.backends.map((a) => ({ a, local: true })), ...(s.remote ?? []).map((a) => ({ a, local: false }))];
  const ids = all.map(({ a, local }) => {
    const id = nextBackendId++;
    m.backends6.update({ id }, { addr: a, port: s.targetPort, proto, flags: local ? BE_F_LOCAL : 0 });
    m.backendConns.update({ id }, { active: 0 });
    return id;
  });
  const count = s.slots ?? ids.length;
  for (let slot = 0; slot < count; slot++) m.slots.update({ svc_id: s.id, slot }, { id: ids[slot % ids.length] as number });
  m.sched.update(s.id, { rr_next: 0 });
  m.services6.update(
    { vip: s.vip, port: s.port, proto, scope: s.scope ?? SCOPE_EXTERNAL },
    { svc_id: s.id, backend_count: count, flags: s.flags ?? 0, affinity_timeout: s.affinity ?? 0, scheduler: SCHED[s.scheduler ?? 'random'] },
  );
}

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-ipv6dp-${process.pid}`);
  // The reconciler writes IPv4's service and vipr_config (the SNAT port range both families use).
  await fx.program([WEB4]);
  const m = fx.dp.maps;
  m.config6.update(0, { snat_addr: NODE6, cluster_cidr: 'fd00:10:244::', cluster_mask: 'ffff:ffff:ffff:ff00::' });
  m.nodeIps6.update({ addr: NODE6 }, 0);
  m.sourceRanges6.update({ prefixlen: 32 + 32, svc_id: RANGES.id, addr: 'fd00:1::' }, 0);
  for (const s of ALL6) addService6(s);
});

afterAll(() => fx?.close());

const tcp = (src: string, dst: string, dport: number, sport = 40000, extra: Partial<Ipv6Packet> = {}): Buffer =>
  ipv6Frame({ src, dst, proto: 'tcp', sport, dport, ...extra });
const X = expandIpv6;
const xs = (a: string[]): string[] => a.map(X);

describe('TCP and UDP to a ClusterIP', () => {
  test('a SYN is DNATed with a valid checksum, and the reply is reverse-NATed on egress', () => {
    const { verdict, out } = fx.ingress(tcp(CLIENT, WEB.vip, 80, 41000));
    expect(verdict).toBe(TC_ACT_OK);
    const p = parseFrame6(out);
    expect(xs(WEB.backends)).toContain(p.dst);
    expect(p).toMatchObject({ src: X(CLIENT), sport: 41000, dport: 8080, l4ChecksumOk: true });
    const backend = WEB.backends[xs(WEB.backends).indexOf(p.dst)] as string;
    const reply = fx.egress(tcp(backend, CLIENT, 41000, 8080, { tcpFlags: TCP_SYN | TCP_ACK, payload: Buffer.from('hello') }));
    expect(reply.verdict).toBe(TC_ACT_OK);
    expect(parseFrame6(reply.out)).toMatchObject({ src: X(WEB.vip), sport: 80, dst: X(CLIENT), dport: 41000, l4ChecksumOk: true });
    // Later packets of the flow stay on its backend.
    for (let i = 0; i < 5; i++) {
      const next = parseFrame6(fx.ingress(tcp(CLIENT, WEB.vip, 80, 41000, { tcpFlags: TCP_ACK, payload: Buffer.from(`r${i}`) })).out);
      expect(next).toMatchObject({ dst: p.dst, l4ChecksumOk: true });
    }
  });

  test('UDP: request and reply, checksums valid, never 0', () => {
    // Payloads chosen so that some rewritten checksums would come out 0 without the 0xffff rule.
    for (let i = 0; i < 40; i++) {
      const { out } = fx.ingress(ipv6Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 33000 + i, dport: 53, payload: Buffer.from([i, 255 - i]) }));
      const p = parseFrame6(out);
      expect(xs(DNS.backends)).toContain(p.dst);
      expect(p).toMatchObject({ dport: 5353, l4ChecksumOk: true });
      expect(p.l4Checksum).not.toBe(0);
      const backend = DNS.backends[xs(DNS.backends).indexOf(p.dst)] as string;
      const r = parseFrame6(fx.egress(ipv6Frame({ src: backend, dst: CLIENT, proto: 'udp', sport: 5353, dport: 33000 + i, payload: Buffer.from([i]) })).out);
      expect(r).toMatchObject({ src: X(DNS.vip), sport: 53, l4ChecksumOk: true });
      expect(r.l4Checksum).not.toBe(0);
    }
  });

  test('hop-by-hop and destination options before TCP: walked over, kept, and the rewrite is valid', () => {
    const frame = withExtHeaders(tcp(CLIENT, WEB.vip, 80, 41100), [0, 60]);
    const { verdict, out } = fx.ingress(frame);
    expect(verdict).toBe(TC_ACT_OK);
    const p = parseFrame6(out);
    expect(xs(WEB.backends)).toContain(p.dst);
    expect(p).toMatchObject({ dport: 8080, l4Off: 54 + 16, l4ChecksumOk: true });
    expect(out.subarray(54, 70).equals(frame.subarray(54, 70))).toBe(true);
  });

  test('a routing header with segments left passes untouched: its checksum covers a later destination', () => {
    const done = withExtHeaders(tcp(CLIENT, WEB.vip, 80, 41150), [43]);
    expect(parseFrame6(fx.ingress(done).out)).toMatchObject({ dport: 8080, l4ChecksumOk: true });
    const inTransit = Buffer.from(withExtHeaders(tcp(CLIENT, WEB.vip, 80, 41151), [43]));
    inTransit[54 + 3] = 1; // segments left
    const { verdict, out } = fx.ingress(inTransit);
    expect(verdict).toBe(TC_ACT_OK);
    expect(out.equals(inTransit)).toBe(true);
  });

  test('a chain of extension headers longer than the walk passes untouched, counted', () => {
    const before = fx.counter('ipv6_ext_hdr_limit');
    const frame = withExtHeaders(tcp(CLIENT, WEB.vip, 80, 41200), [0, 60, 60, 60, 60, 60, 60]);
    const { verdict, out } = fx.ingress(frame);
    expect(verdict).toBe(TC_ACT_OK);
    expect(out.equals(frame)).toBe(true);
    expect(fx.counter('ipv6_ext_hdr_limit')).toBe(before + 1);
    // Six are still walked.
    expect(parseFrame6(fx.ingress(withExtHeaders(tcp(CLIENT, WEB.vip, 80, 41201), [0, 60, 60, 60, 60, 60])).out).dport).toBe(8080);
  });
});

describe('fragments', () => {
  test('the first fragment and the later ones follow the flow; the reassembled datagram is valid', () => {
    const whole = ipv6Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 34000, dport: 53, payload: Buffer.alloc(100, 7) });
    const frags = fragmentFrame6(whole, 48, 0xabcd01);
    expect(frags.length).toBe(3);
    const outs = frags.map((f) => fx.ingress(f));
    for (const o of outs) expect(o.verdict).toBe(TC_ACT_OK);
    const dsts = outs.map((o) => parseFrame6(o.out).dst);
    expect(new Set(dsts).size).toBe(1);
    expect(xs(DNS.backends)).toContain(dsts[0]);
    const p = parseFrame6(reassemble6(outs.map((o) => o.out)));
    expect(p).toMatchObject({ src: X(CLIENT), dport: 5353, l4ChecksumOk: true });
  });

  test('a later fragment whose first was never seen is dropped and counted', () => {
    const before = fx.counter('drop_frag_not_found');
    const whole = ipv6Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 34001, dport: 53, payload: Buffer.alloc(100, 7) });
    const later = fragmentFrame6(whole, 48, 0xabcd02)[1] as Buffer;
    expect(fx.ingress(later).verdict).toBe(TC_ACT_SHOT);
    expect(fx.counter('drop_frag_not_found')).toBe(before + 1);
  });
});

describe('NodePort and external traffic', () => {
  test('to a remote backend: DNAT + SNAT to the node, and the reply is reversed on ingress', () => {
    const { verdict, out } = fx.ingress(tcp(EXT_CLIENT, NODE6, 30081, 42000));
    expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(verdict);
    const p = parseFrame6(out);
    expect(p).toMatchObject({ src: X(NODE6), dst: X(NP_REMOTE.remote?.[0] as string), dport: 8080, l4ChecksumOk: true });
    expect(p.sport).toBeGreaterThanOrEqual(SNAT_PORT_MIN);
    const reply = fx.ingress(tcp(NP_REMOTE.remote?.[0] as string, NODE6, p.sport, 8080, { tcpFlags: TCP_SYN | TCP_ACK }));
    expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(reply.verdict);
    expect(parseFrame6(reply.out)).toMatchObject({ src: X(NODE6), sport: 30081, dst: X(EXT_CLIENT), dport: 42000, l4ChecksumOk: true });
  });

  test('on an address that is not the node\'s: untouched', () => {
    const frame = tcp(EXT_CLIENT, 'fd00:192:168:60::99', 30081);
    const { out } = fx.ingress(frame);
    expect(out.equals(frame)).toBe(true);
  });

  test('XDP rewrites a NodePort flow to a local backend in place; TC continues the flow', () => {
    const { verdict, out } = fx.xdp(tcp(EXT_CLIENT, NODE6, 30080, 43000));
    expect(verdict).toBe(XDP_PASS);
    const p = parseFrame6(out);
    expect(p).toMatchObject({ src: X(EXT_CLIENT), dst: X(NP_LOCAL.backends[0] as string), sport: 43000, dport: 80, l4ChecksumOk: true });
    const next = parseFrame6(fx.ingress(tcp(EXT_CLIENT, NODE6, 30080, 43000, { tcpFlags: TCP_ACK })).out);
    expect(next.dst).toBe(p.dst);
    const reply = parseFrame6(fx.egress(tcp(NP_LOCAL.backends[0] as string, EXT_CLIENT, 43000, 80, { tcpFlags: TCP_SYN | TCP_ACK })).out);
    expect(reply).toMatchObject({ src: X(NODE6), sport: 30080, l4ChecksumOk: true });
  });

  test('externalTrafficPolicy Local: external clients reach the local endpoint with their address; pods use the internal scope', () => {
    for (let i = 0; i < 10; i++) {
      const p = parseFrame6(fx.ingress(tcp(EXT_CLIENT, ETP_LOCAL_EXT.vip, 80, 44000 + i)).out);
      expect(p).toMatchObject({ dst: X(ETP_LOCAL_EXT.backends[0] as string), src: X(EXT_CLIENT), sport: 44000 + i, l4ChecksumOk: true });
    }
    const pod = parseFrame6(fx.ingress(tcp('fd00:10:244:1::99', ETP_LOCAL_EXT.vip, 80, 44100)).out);
    expect(pod.dst).toBe(X(ETP_LOCAL_INT.remote?.[0] as string));
  });

  test('source ranges: outside dropped and counted (TC and XDP), inside balanced', () => {
    const before = fx.counter('drop_source_range');
    expect(fx.ingress(tcp('fd00:2::9', RANGES.vip, 80)).verdict).toBe(TC_ACT_SHOT);
    expect(fx.xdp(tcp('fd00:2::9', RANGES.vip, 80)).verdict).toBe(XDP_DROP);
    expect(fx.counter('drop_source_range')).toBe(before + 2);
    const p = parseFrame6(fx.ingress(tcp('fd00:1:2::3', RANGES.vip, 80)).out);
    expect(p.dst).toBe(X(RANGES.backends[0] as string));
  });
});

describe('hairpin, affinity, schedulers', () => {
  test('a pod reaching itself through its service is SNATed to 100::a9fe:2a01, and the reply comes back from the service', () => {
    const pod = HAIRPIN.backends[0] as string;
    const p = parseFrame6(fx.ingress(tcp(pod, HAIRPIN.vip, 80, 48000)).out);
    expect(p).toMatchObject({ src: X(HAIRPIN6), dst: X(pod), dport: 80, l4ChecksumOk: true });
    const reply = fx.ingress(tcp(pod, HAIRPIN6, p.sport, 80, { tcpFlags: TCP_SYN | TCP_ACK }));
    expect(reply.verdict).toBe(TC_ACT_OK);
    expect(parseFrame6(reply.out)).toMatchObject({ src: X(HAIRPIN.vip), sport: 80, dst: X(pod), dport: 48000, l4ChecksumOk: true });
  });

  test('sessionAffinity ClientIP: one client sticks to one backend, others spread', () => {
    const mine = new Set(Array.from({ length: 30 }, (_, i) => parseFrame6(fx.ingress(tcp(CLIENT, AFFINITY.vip, 80, 46000 + i)).out).dst));
    expect(mine.size).toBe(1);
    const others = new Set(Array.from({ length: 40 }, (_, c) => parseFrame6(fx.ingress(tcp(`fd00:172:30::${(c + 10).toString(16)}`, AFFINITY.vip, 80, 47000)).out).dst));
    expect(others.size).toBeGreaterThan(1);
  });

  test('rr takes the backends in turn; sh keeps a client on one; maglev picks valid backends, the same for the same flow; lc avoids the busiest', () => {
    const rr = Array.from({ length: 6 }, (_, i) => parseFrame6(fx.ingress(tcp(CLIENT, RR.vip, 80, 49000 + i)).out).dst);
    expect([...rr.slice(0, 3)].sort()).toEqual(xs(RR.backends).sort());
    expect(rr.slice(3)).toEqual(rr.slice(0, 3));
    for (const client of [CLIENT, EXT_CLIENT, 'fd00:172:30::7']) {
      expect(new Set(Array.from({ length: 10 }, (_, i) => parseFrame6(fx.ingress(tcp(client, SH.vip, 80, 50000 + i)).out).dst)).size).toBe(1);
    }
    const mg = Array.from({ length: 200 }, (_, i) => parseFrame6(fx.ingress(tcp(`fd00:172:31::${(i + 1).toString(16)}`, MAGLEV.vip, 80, 52000)).out).dst);
    expect([...new Set(mg)].sort()).toEqual(xs(MAGLEV.backends).sort());
    fx.flushFlows();
    for (const k of fx.dp.maps.ctTcpSyn6.keys()) fx.dp.maps.ctTcpSyn6.delete(k);
    const again = Array.from({ length: 200 }, (_, i) => parseFrame6(fx.ingress(tcp(`fd00:172:31::${(i + 1).toString(16)}`, MAGLEV.vip, 80, 52000)).out).dst);
    expect(again).toEqual(mg);
    const first = parseFrame6(fx.ingress(tcp(CLIENT, LC.vip, 80, 51000)).out).dst;
    const second = parseFrame6(fx.ingress(tcp(CLIENT, LC.vip, 80, 51001)).out).dst;
    expect(second).not.toBe(first);
    expect(xs(LC.backends)).toContain(second);
  });
});

describe('IPv4 beside IPv6', () => {
  test('IPv4 to its service is still DNATed, and IPv6 to the same-looking frontend is not confused with it', () => {
    const p = parseFrame(fx.ingress(ipv4Frame({ src: '172.30.0.2', dst: WEB4.vip, proto: 'tcp', sport: 45000, dport: 80 })).out);
    expect(WEB4.backends).toContain(p.dst);
    expect(p).toMatchObject({ dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    const v6 = tcp(CLIENT, 'fd00:10:96::1', 80);
    expect(fx.ingress(v6).out.equals(v6)).toBe(true);
  });
});

describe('random, truncated and corrupted IPv6 frames', () => {
  const rand = prng(97531);
  const targets: Array<{ dst: string; port: number; proto: 'tcp' | 'udp' }> = [
    { dst: WEB.vip, port: 80, proto: 'tcp' }, { dst: DNS.vip, port: 53, proto: 'udp' }, { dst: NODE6, port: 30080, proto: 'tcp' },
    { dst: NODE6, port: 30081, proto: 'tcp' }, { dst: 'fd00:10:96::1', port: 80, proto: 'tcp' },
  ];
  const known = new Set([...ALL6.flatMap((s) => [...s.backends, ...(s.remote ?? [])]), NODE6, HAIRPIN6].map(X));

  test('no program error; every rewrite keeps the upper-layer checksum as valid as it was and touches only NAT fields', () => {
    let rewritten = 0;
    for (let i = 0; i < 3000; i++) {
      const t = targets[rand(targets.length)] as (typeof targets)[number];
      const src = [CLIENT, EXT_CLIENT, 'fd00:10:244:1::11', `fd00:172:30::${(1 + rand(200)).toString(16)}`][rand(4)] as string;
      let frame = ipv6Frame({ src, dst: t.dst, proto: t.proto, sport: 20000 + rand(40), dport: t.port, tcpFlags: [TCP_SYN, TCP_ACK][rand(2)] as number, payload: Buffer.alloc(rand(60), rand(256)) });
      const ext = rand(3);
      if (ext > 0) frame = withExtHeaders(frame, ext === 1 ? [0] : [0, 60, 60]);
      const mode = rand(4);
      if (mode === 1) frame = frame.subarray(0, 54 + rand(frame.length - 54));
      if (mode === 2) {
        frame = Buffer.from(frame);
        for (let k = 0; k < 3; k++) frame[14 + rand(frame.length - 14)] = rand(256);
      }
      const before = parseFrame6(frame);
      for (const [hook, run] of [['tc', fx.ingress.bind(fx)], ['egress', fx.egress.bind(fx)], ['xdp', fx.xdp.bind(fx)]] as const) {
        const { verdict, out } = run(frame);
        expect(hook === 'xdp' ? [XDP_PASS, XDP_DROP, XDP_TX, XDP_REDIRECT] : [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT]).toContain(verdict);
        if (out.equals(frame)) continue;
        rewritten++;
        const after = parseFrame6(out);
        expect(after.l4ChecksumOk).toBe(before.l4ChecksumOk);
        // Only addresses, ports, the checksum and (forwarded) hop limit and MACs may change.
        const allowed = new Set<number>([21, ...Array.from({ length: 32 }, (_, k) => 22 + k), ...Array.from({ length: 12 }, (_, k) => k)]);
        if (before.fragOffset === null || before.fragOffset === 0) {
          for (let k = 0; k < 4; k++) allowed.add(before.l4Off + k);
          const c = before.proto === 6 ? before.l4Off + 16 : before.l4Off + 6;
          allowed.add(c);
          allowed.add(c + 1);
        }
        expect(changedOffsets(frame, out).filter((o) => !allowed.has(o))).toEqual([]);
        // A rewrite goes to a backend, the node, the hairpin address, or back to a frontend.
        expect(known.has(after.dst) || known.has(after.src) || after.src === X(WEB.vip) || after.src === X(DNS.vip)).toBe(true);
      }
    }
    expect(rewritten).toBeGreaterThan(300);
  });
});

describe("XDP's flow cache for IPv6 (vipr_xdp_flows6_v1)", () => {
  const hits = (): number => fx.counter('xdp_flow_cache_hit');
  const cached = (): number => fx.dp.maps.xdpFlows6.entries().length;

  test('a UDP flow is cached from its second datagram: the next ones are rewritten from it, byte for byte as the full path does', () => {
    const dgram = (): Buffer => ipv6Frame({ src: EXT_CLIENT, dst: DNS.vip, proto: 'udp', sport: 34000, dport: 53, payload: Buffer.from('query') });
    const first = fx.xdp(dgram());
    expect(first.verdict).toBe(XDP_PASS);
    const backend = parseFrame6(first.out).dst;
    expect(xs(DNS.backends)).toContain(backend);
    const full = fx.xdp(dgram()); // tracked: the full path, which fills the cache
    const before = [hits(), fx.counter('ct_hit'), fx.counter('dnat')];
    const fromCache = fx.xdp(dgram());
    expect(fromCache.out.equals(full.out)).toBe(true);
    expect(parseFrame6(fromCache.out)).toMatchObject({ dst: backend, dport: 5353, l4ChecksumOk: true });
    expect([hits(), fx.counter('ct_hit'), fx.counter('dnat')]).toEqual([(before[0] as number) + 1, (before[1] as number) + 1, (before[2] as number) + 1]);
  });

  test('TCP: a SYN never takes it, the packet after the handshake fills it, a FIN takes the full path and ends the entry', () => {
    fx.flushFlows();
    const seg = (flags: number): Buffer => tcp(EXT_CLIENT, NODE6, 30080, 43500, { tcpFlags: flags });
    const syn = fx.xdp(seg(TCP_SYN));
    expect(syn.verdict).toBe(XDP_PASS);
    const backend = NP_LOCAL.backends[0] as string;
    expect(parseFrame6(syn.out).dst).toBe(X(backend));
    expect(cached()).toBe(0);
    // The pod answers through TC egress; the client's ACK completes the handshake (the full path).
    fx.egress(tcp(backend, EXT_CLIENT, 43500, 80, { tcpFlags: TCP_SYN | TCP_ACK }));
    const full = fx.xdp(seg(TCP_ACK));
    expect(cached()).toBe(1);
    const before = hits();
    const next = fx.xdp(seg(TCP_ACK));
    expect(hits()).toBe(before + 1);
    expect(next.out.equals(full.out)).toBe(true);
    expect(fx.xdp(seg(TCP_FIN | TCP_ACK)).verdict).toBe(XDP_PASS);
    expect(hits()).toBe(before + 1);
    expect(cached()).toBe(0);
  });

  test('XDP marks what it finished for TC ingress (struct vipr_xdp_meta), with the hop limit it leaves; not a frame with extension headers', () => {
    const notService = fx.xdp(tcp(EXT_CLIENT, NODE6, 22, 43600, { tcpFlags: TCP_ACK }));
    expect(notService.verdict).toBe(XDP_PASS);
    expect(notService.meta.length).toBe(12);
    expect([notService.meta.readUInt32LE(0), notService.meta[8]]).toEqual([0x76697072, notService.out[21]]);
    const withOptions = fx.xdp(withExtHeaders(tcp(EXT_CLIENT, NODE6, 22, 43601, { tcpFlags: TCP_ACK }), [0]));
    expect(withOptions.verdict).toBe(XDP_PASS);
    expect(withOptions.meta.length).toBe(0);
  });
});
