/*
 * XDP's flow cache (struct vipr_xdp_flow in bpf/include/vipr_types.h) through the real programs
 * (BPF_PROG_TEST_RUN) on maps the real reconciler programmed: a steady flow's packets after the
 * one that filled it are rewritten from it, byte for byte as the full path rewrites them; what
 * changes a flow's state (SYN, FIN, RST) never takes it; a cut flow leaves it; an entry expires
 * so that conntrack keeps seeing the flow. Checksums of every rewritten packet are recomputed here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readFlows } from '../../src/bpf/conntrack.js';
import { DatapathFixture, NODE_IP, XDP_PASS, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, expandIpv6, ipv4Frame, parseFrame, parseFrame6 } from './packets.js';
import { ipv6Frame } from './icmp6-packets.js';

const CLIENT = '192.168.60.100';
const TCP_BACKENDS = ['10.244.1.11', '10.244.1.12'];
const UDP_BACKENDS = ['10.244.1.21', '10.244.1.22'];
const TCP_SVC: SvcDef = { name: 'web', vip: '10.0.0.10', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30080, backends: TCP_BACKENDS };
const UDP_SVC: SvcDef = { name: 'dns', vip: '10.0.0.11', port: 53, targetPort: 5353, type: 'NodePort', nodePort: 30053, protocol: 'UDP', backends: UDP_BACKENDS };

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-xdpcache-${process.pid}`);
  await fx.program([TCP_SVC, UDP_SVC]);
});

afterAll(() => fx?.close());

beforeEach(() => fx.flushFlows());

const hits = (): number => fx.counter('xdp_flow_cache_hit');
const tcp = (sport: number, tcpFlags: number): Buffer => ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'tcp', sport, dport: 30080, tcpFlags });
const udp = (sport: number): Buffer => ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'udp', sport, dport: 30053, payload: Buffer.from('query') });

/** A NodePort TCP connection through XDP up to its handshake's end; returns the backend. */
function establish(sport: number): string {
  const syn = fx.xdp(tcp(sport, TCP_SYN));
  expect(syn.verdict).toBe(XDP_PASS);
  const backend = parseFrame(syn.out).dst;
  // The local backend answers through TC egress (reverse NAT, the flow marked answered).
  const synAck = fx.egress(ipv4Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: sport, tcpFlags: TCP_SYN | TCP_ACK }));
  expect(parseFrame(synAck.out)).toMatchObject({ src: NODE_IP, sport: 30080 });
  return backend;
}

describe('XDP flow cache', () => {
  test('a steady TCP flow: the packet after the handshake fills it, the next ones are rewritten from it exactly as the full path does', () => {
    const backend = establish(41000);
    const before = hits();
    const full = fx.xdp(tcp(41000, TCP_ACK)); // promotes the flow to established: the full path
    expect(hits()).toBe(before);
    expect(fx.dp.maps.xdpFlows.entries().length).toBe(1);
    for (const flags of [TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK]) {
      const cached = fx.xdp(tcp(41000, flags));
      expect(cached.verdict).toBe(XDP_PASS);
      expect(parseFrame(cached.out)).toMatchObject({ src: CLIENT, sport: 41000, dst: backend, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    }
    expect(hits()).toBe(before + 3);
    // The same frame, rewritten by the cache, is byte for byte what the full path made of it.
    expect(fx.xdp(tcp(41000, TCP_ACK)).out.equals(full.out)).toBe(true);
  });

  test('a UDP flow is cached from its second datagram, with the counters the full path would move', () => {
    const first = fx.xdp(udp(42000));
    const backend = parseFrame(first.out).dst;
    expect(UDP_BACKENDS).toContain(backend);
    const full = fx.xdp(udp(42000)); // tracked: the full path, which fills the cache
    const [hitsBefore, ctHitBefore, dnatBefore, passBefore] = [hits(), fx.counter('ct_hit'), fx.counter('dnat'), fx.counter('xdp_pass')];
    const cached = fx.xdp(udp(42000));
    expect(cached.out.equals(full.out)).toBe(true);
    expect(parseFrame(cached.out)).toMatchObject({ dst: backend, dport: 5353, ipChecksumOk: true, l4ChecksumOk: true });
    expect([hits(), fx.counter('ct_hit'), fx.counter('dnat'), fx.counter('xdp_pass')]).toEqual([hitsBefore + 1, ctHitBefore + 1, dnatBefore + 1, passBefore + 1]);
  });

  test('a half-open TCP flow is never cached, nor is a SYN', () => {
    fx.xdp(tcp(43000, TCP_SYN));
    const before = hits();
    for (let i = 0; i < 3; i++) fx.xdp(tcp(43000, TCP_SYN)); // retransmitted SYNs
    for (let i = 0; i < 3; i++) fx.xdp(tcp(43000, TCP_ACK)); // no answer from the backend yet
    expect(hits()).toBe(before);
    expect(fx.dp.maps.xdpFlows.entries().length).toBe(0);
  });

  for (const [name, flag] of [['FIN', TCP_FIN], ['RST', TCP_RST]] as const) {
    test(`a ${name} takes the full path and ends the flow's cache entry: conntrack sees the flow close`, () => {
      establish(44000);
      fx.xdp(tcp(44000, TCP_ACK));
      fx.xdp(tcp(44000, TCP_ACK));
      const before = hits();
      expect(fx.dp.maps.xdpFlows.entries().length).toBe(1);
      const closing = fx.xdp(tcp(44000, flag | TCP_ACK));
      expect(closing.verdict).toBe(XDP_PASS);
      expect(hits()).toBe(before);
      expect(fx.dp.maps.xdpFlows.entries().length).toBe(0);
      const flow = readFlows(fx.dp.maps).find((f) => f.client === `${CLIENT}:44000`);
      expect(flow?.state).toBe('closing');
      // Closing flows stay out of it.
      fx.xdp(tcp(44000, TCP_ACK));
      fx.xdp(tcp(44000, TCP_ACK));
      expect(hits()).toBe(before);
    });
  }

  test('an entry expires after a second: the next packet takes the full path, which keeps the conntrack entry alive', async () => {
    fx.xdp(udp(45000));
    fx.xdp(udp(45000));
    const lastSeen = (): number => readFlows(fx.dp.maps).find((f) => f.client === `${CLIENT}:45000`)?.idleSeconds ?? -1;
    await sleep(1200);
    expect(lastSeen()).toBeGreaterThan(1);
    const before = hits();
    fx.xdp(udp(45000));
    expect(hits()).toBe(before);
    expect(lastSeen()).toBeLessThan(0.5);
    fx.xdp(udp(45000));
    expect(hits()).toBe(before + 1);
  });

  test('a backend leaving the Service empties the cache: its UDP flows move at once', async () => {
    try {
      const sports = [46000, 46001, 46002, 46003, 46004, 46005, 46006, 46007];
      const to = new Map<number, string>();
      for (const s of sports) {
        to.set(s, parseFrame(fx.xdp(udp(s)).out).dst);
        fx.xdp(udp(s));
      }
      const gone = to.get(46000) as string;
      expect(fx.dp.maps.xdpFlows.entries().length).toBe(sports.length);
      await fx.program([TCP_SVC, { ...UDP_SVC, backends: UDP_BACKENDS.filter((b) => b !== gone) }]);
      expect(fx.dp.maps.xdpFlows.entries().length).toBe(0);
      for (const s of sports) {
        const dst = parseFrame(fx.xdp(udp(s)).out).dst;
        expect([s, dst === gone]).toEqual([s, false]);
        // Flows of the backend that stayed keep it.
        if (to.get(s) !== gone) expect([s, dst]).toEqual([s, to.get(s)]);
      }
    } finally {
      await fx.program([TCP_SVC, UDP_SVC]);
    }
  });

  test('an IPv6 backend leaving empties IPv6\'s cache (vipr_xdp_flows6_v1): its UDP flows move at once', async () => {
    const NODE6 = 'fd00:192:168:60::11';
    const DNS6: SvcDef = { name: 'dns6', vip: 'fd00:10:96::53', port: 53, targetPort: 5353, protocol: 'UDP', backends: ['fd00:10:244:1::21', 'fd00:10:244:1::22'] };
    const udp6 = (sport: number): Buffer => ipv6Frame({ src: 'fd00:192:168:60::100', dst: DNS6.vip, proto: 'udp', sport, dport: 53, payload: Buffer.from('query') });
    try {
      await fx.program([TCP_SVC, UDP_SVC, DNS6], [NODE_IP, NODE6]);
      const sports = [47000, 47001, 47002, 47003, 47004, 47005];
      const to = new Map<number, string>();
      for (const s of sports) {
        to.set(s, parseFrame6(fx.xdp(udp6(s)).out).dst);
        fx.xdp(udp6(s));
      }
      const gone = to.get(47000) as string;
      expect(fx.dp.maps.xdpFlows6.entries().length).toBe(sports.length);
      await fx.program([TCP_SVC, UDP_SVC, { ...DNS6, backends: DNS6.backends.filter((b) => expandIpv6(b) !== gone) }], [NODE_IP, NODE6]);
      expect(fx.dp.maps.xdpFlows6.entries().length).toBe(0);
      for (const s of sports) expect([s, parseFrame6(fx.xdp(udp6(s)).out).dst === gone]).toEqual([s, false]);
    } finally {
      await fx.program([TCP_SVC, UDP_SVC]);
    }
  });
});
