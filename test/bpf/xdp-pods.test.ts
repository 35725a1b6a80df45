/*
 * XDP straight to this node's pods (vipr_xdp_pods_v1, vipr_xdp_pods6_v1, `--xdp-local-backends redirect`) through
 * the real XDP program (BPF_PROG_TEST_RUN) on maps the real reconciler programmed: a frame for a
 * listed pod leaves by XDP_REDIRECT to its veth, rewritten as the stack would have delivered it
 * (DNAT, TTL less one, the veth's and the pod's MACs, checksums right); a pod not listed, a frame
 * longer than its link or one whose TTL runs out goes to the stack as before; a steady flow keeps
 * the redirect in XDP's flow cache. The same for IPv6 pods (hop limit less one; IPv6 has no
 * header checksum, the TCP and UDP ones are verified over the pseudo-header). And what XDP tells TC ingress in front of a frame it passes
 * with its work done (struct vipr_xdp_meta): there for a translated frame and one of no service,
 * never for one TC still has work on (an IPv4 option, a fragment, a reject).
 */
import { DatapathFixture, NODE_IP, XDP_PASS, XDP_REDIRECT, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_SYN, expandIpv6, ipv4Frame, parseFrame, parseFrame6 } from './packets.js';
import { ipv6Frame } from './icmp6-packets.js';

const CLIENT = '192.168.60.100';
const BACKEND = '10.244.1.11';
const SVC: SvcDef = { name: 'web', vip: '10.0.0.10', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30080, backends: [BACKEND] };
const POD = { ifindex: 4242, len_ok: 1500, pod_mac: '0a:00:00:00:0b:01', host_mac: '0a:00:00:00:0a:01' };
const NODE6 = 'fd00:192:168:60::11';
const CLIENT6 = 'fd00:192:168:60::100';
const BACKEND6 = 'fd00:10:244:1::11';
const SVC6: SvcDef = { name: 'web6', vip: 'fd00:10:96::10', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30081, backends: [BACKEND6] };
const DNS6: SvcDef = { name: 'dns6', vip: 'fd00:10:96::53', port: 53, protocol: 'UDP', targetPort: 5353, type: 'NodePort', nodePort: 30053, backends: [BACKEND6] };
const POD6 = { ifindex: 4243, len_ok: 1500, pod_mac: '0a:00:00:00:0b:02', host_mac: '0a:00:00:00:0a:02' };

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-xdppods-${process.pid}`);
  await fx.program([SVC, SVC6, DNS6], [NODE_IP, NODE6]);
});

afterAll(() => fx?.close());

beforeEach(() => {
  fx.flushFlows();
  for (const [k] of fx.dp.maps.xdpPods.entries()) fx.dp.maps.xdpPods.delete(k);
  for (const [k] of fx.dp.maps.xdpPods6.entries()) fx.dp.maps.xdpPods6.delete(k);
});

const tcp = (sport: number, tcpFlags: number, extra: { ttl?: number; payload?: Buffer } = {}): Buffer =>
  ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'tcp', sport, dport: 30080, tcpFlags, ...extra });
const macs = (f: Buffer): { dst: string; src: string } => ({
  dst: [...f.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':'),
  src: [...f.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':'),
});
const ttl = (f: Buffer): number => f[22] as number;
const VIPR_XDP_META_DONE = 0x76697072;
/** struct vipr_xdp_meta, or null when XDP left none. */
const xdpMeta = (meta: Buffer): { magic: number; ttl: number } | null =>
  meta.length >= 12 ? { magic: meta.readUInt32LE(0), ttl: meta[8] as number } : null;

describe('XDP to local pods (vipr_xdp_pods_v1)', () => {
  test('a listed pod: the SYN leaves by XDP_REDIRECT to its veth, DNATed, TTL less one, MACs of the veth and the pod, checksums right', () => {
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, POD);
    const inFrame = tcp(41000, TCP_SYN);
    const r = fx.xdp(inFrame);
    expect(r.verdict).toBe(XDP_REDIRECT);
    expect(parseFrame(r.out)).toMatchObject({ src: CLIENT, sport: 41000, dst: BACKEND, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    expect(ttl(r.out)).toBe(ttl(inFrame) - 1);
    expect(macs(r.out)).toEqual({ dst: POD.pod_mac, src: POD.host_mac });
  });

  test('a pod not listed (the default): rewritten and passed to the stack, as before', () => {
    const r = fx.xdp(tcp(41001, TCP_SYN));
    expect(r.verdict).toBe(XDP_PASS);
    expect(parseFrame(r.out)).toMatchObject({ dst: BACKEND, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a frame longer than the pod link, or one whose TTL runs out here, goes to the stack (fragmentation needed, time exceeded)', () => {
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, { ...POD, len_ok: 100 });
    expect(fx.xdp(tcp(41002, TCP_SYN, { payload: Buffer.alloc(200) })).verdict).toBe(XDP_PASS);
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, POD);
    expect(fx.xdp(tcp(41003, TCP_SYN, { ttl: 1 })).verdict).toBe(XDP_PASS);
  });

  test('a steady flow keeps going to the pod from XDP\'s flow cache, byte for byte as the full path sends it', () => {
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, POD);
    expect(fx.xdp(tcp(41004, TCP_SYN)).verdict).toBe(XDP_REDIRECT);
    // The pod answers through TC egress (reverse NAT, the flow marked answered); the client's ACK completes it.
    fx.egress(ipv4Frame({ src: BACKEND, dst: CLIENT, proto: 'tcp', sport: 8080, dport: 41004, tcpFlags: TCP_SYN | TCP_ACK }));
    const full = fx.xdp(tcp(41004, TCP_ACK));
    expect(full.verdict).toBe(XDP_REDIRECT);
    const hits = fx.counter('xdp_flow_cache_hit');
    const cached = fx.xdp(tcp(41004, TCP_ACK));
    expect(cached.verdict).toBe(XDP_REDIRECT);
    expect(fx.counter('xdp_flow_cache_hit')).toBe(hits + 1);
    expect(cached.out.equals(full.out)).toBe(true);
    expect(macs(cached.out)).toEqual({ dst: POD.pod_mac, src: POD.host_mac });
  });

  test('a pod removed from the list: the next new flow to it goes to the stack again', () => {
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, POD);
    expect(fx.xdp(tcp(41005, TCP_SYN)).verdict).toBe(XDP_REDIRECT);
    fx.dp.maps.xdpPods.delete({ addr: BACKEND });
    expect(fx.xdp(tcp(41006, TCP_SYN)).verdict).toBe(XDP_PASS);
  });

  test('XDP tells TC what it finished: a translated frame and one of no service carry the mark, with the TTL they leave with', () => {
    const translated = fx.xdp(tcp(41007, TCP_SYN));
    expect(translated.verdict).toBe(XDP_PASS);
    expect(xdpMeta(translated.meta)).toEqual({ magic: VIPR_XDP_META_DONE, ttl: ttl(translated.out) });
    const notService = fx.xdp(ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41008, dport: 22, tcpFlags: TCP_SYN }));
    expect(notService.verdict).toBe(XDP_PASS);
    expect(xdpMeta(notService.meta)?.magic).toBe(VIPR_XDP_META_DONE);
  });

  test('no mark where TC still has work: an IPv4 option (a DSR packet\'s), a fragment', () => {
    const withOption = fx.xdp(ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41009, dport: 30080, tcpFlags: TCP_SYN, ipOptions: Buffer.from([1, 1, 1, 0]) }));
    expect(withOption.verdict).toBe(XDP_PASS);
    expect(withOption.meta.length).toBe(0);
    const fragment = fx.xdp(ipv4Frame({ src: CLIENT, dst: NODE_IP, proto: 'udp', sport: 41010, dport: 22, payload: Buffer.alloc(32), fragOff: 0x2000 }));
    expect(fragment.verdict).toBe(XDP_PASS);
    expect(fragment.meta.length).toBe(0);
  });
});

describe('XDP to local IPv6 pods (vipr_xdp_pods6_v1)', () => {
  const tcp6 = (sport: number, tcpFlags: number, extra: { hopLimit?: number; payload?: Buffer } = {}): Buffer =>
    ipv6Frame({ src: CLIENT6, dst: NODE6, proto: 'tcp', sport, dport: 30081, tcpFlags, ...extra });
  const hopLimit = (f: Buffer): number => f[21] as number;
  const X = expandIpv6;

  test('a listed pod: the SYN leaves by XDP_REDIRECT to its veth, DNATed, hop limit less one, MACs of the veth and the pod, TCP checksum right', () => {
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, POD6);
    const inFrame = tcp6(42000, TCP_SYN);
    const redirects = fx.counter('xdp_redirect');
    const r = fx.xdp(inFrame);
    expect(r.verdict).toBe(XDP_REDIRECT);
    expect(parseFrame6(r.out)).toMatchObject({ src: X(CLIENT6), sport: 42000, dst: X(BACKEND6), dport: 8080, hopLimit: hopLimit(inFrame) - 1, l4ChecksumOk: true });
    expect(macs(r.out)).toEqual({ dst: POD6.pod_mac, src: POD6.host_mac });
    expect(fx.counter('xdp_redirect')).toBe(redirects + 1);
  });

  test('UDP to a listed pod: redirected, DNATed, UDP checksum right', () => {
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, POD6);
    const r = fx.xdp(ipv6Frame({ src: CLIENT6, dst: NODE6, proto: 'udp', sport: 42001, dport: 30053, payload: Buffer.from('whoami') }));
    expect(r.verdict).toBe(XDP_REDIRECT);
    expect(parseFrame6(r.out)).toMatchObject({ src: X(CLIENT6), sport: 42001, dst: X(BACKEND6), dport: 5353, l4ChecksumOk: true });
    expect(macs(r.out)).toEqual({ dst: POD6.pod_mac, src: POD6.host_mac });
  });

  test('a packet longer than the pod link, or one whose hop limit runs out here, goes to the stack (packet too big, time exceeded)', () => {
    // 40 + 20 + 41 = 101 bytes of IPv6 packet: one more than the link takes.
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, { ...POD6, len_ok: 100 });
    expect(fx.xdp(tcp6(42004, TCP_SYN, { payload: Buffer.alloc(41) })).verdict).toBe(XDP_PASS);
    expect(fx.xdp(tcp6(42005, TCP_SYN, { payload: Buffer.alloc(40) })).verdict).toBe(XDP_REDIRECT);
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, POD6);
    const last = fx.xdp(tcp6(42006, TCP_SYN, { hopLimit: 1 }));
    expect(last.verdict).toBe(XDP_PASS);
    expect(parseFrame6(last.out).hopLimit).toBe(1);
  });

  test('a steady flow keeps going to the pod from XDP\'s flow cache, byte for byte as the full path sends it', () => {
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, POD6);
    expect(fx.xdp(tcp6(42007, TCP_SYN)).verdict).toBe(XDP_REDIRECT);
    fx.egress(ipv6Frame({ src: BACKEND6, dst: CLIENT6, proto: 'tcp', sport: 8080, dport: 42007, tcpFlags: TCP_SYN | TCP_ACK }));
    const full = fx.xdp(tcp6(42007, TCP_ACK));
    expect(full.verdict).toBe(XDP_REDIRECT);
    const hits = fx.counter('xdp_flow_cache_hit');
    const cached = fx.xdp(tcp6(42007, TCP_ACK));
    expect(cached.verdict).toBe(XDP_REDIRECT);
    expect(fx.counter('xdp_flow_cache_hit')).toBe(hits + 1);
    expect(cached.out.equals(full.out)).toBe(true);
    expect(macs(cached.out)).toEqual({ dst: POD6.pod_mac, src: POD6.host_mac });
    // The cache keeps the link's limits: a longer packet or an expiring hop limit takes the full path, to the stack.
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, { ...POD6, len_ok: 100 });
    fx.flushFlows();
    expect(fx.xdp(tcp6(42008, TCP_SYN)).verdict).toBe(XDP_REDIRECT);
    fx.egress(ipv6Frame({ src: BACKEND6, dst: CLIENT6, proto: 'tcp', sport: 8080, dport: 42008, tcpFlags: TCP_SYN | TCP_ACK }));
    for (const limited of [{ payload: Buffer.alloc(41) }, { hopLimit: 1 }]) {
      // The full path caches the flow's redirect, and the packet past the limit leaves the cache for the stack.
      for (const [k] of fx.dp.maps.xdpFlows6.entries()) fx.dp.maps.xdpFlows6.delete(k);
      expect(fx.xdp(tcp6(42008, TCP_ACK)).verdict).toBe(XDP_REDIRECT);
      const before = fx.counter('xdp_flow_cache_hit');
      expect(fx.xdp(tcp6(42008, TCP_ACK, limited)).verdict).toBe(XDP_PASS);
      expect(fx.counter('xdp_flow_cache_hit')).toBe(before);
    }
  });

  test('a pod removed from the list (or listed in IPv4\'s map only): the next new flow to it is rewritten and goes to the stack again', () => {
    fx.dp.maps.xdpPods6.update({ addr: BACKEND6 }, POD6);
    expect(fx.xdp(tcp6(42009, TCP_SYN)).verdict).toBe(XDP_REDIRECT);
    fx.dp.maps.xdpPods6.delete({ addr: BACKEND6 });
    fx.dp.maps.xdpPods.update({ addr: BACKEND }, POD);
    const r = fx.xdp(tcp6(42010, TCP_SYN));
    expect(r.verdict).toBe(XDP_PASS);
    expect(parseFrame6(r.out)).toMatchObject({ dst: X(BACKEND6), dport: 8080, hopLimit: 64, l4ChecksumOk: true });
  });
});
