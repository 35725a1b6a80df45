/*
 * Direct server return (bpf/lib/dsr.h) through the real programs (BPF_PROG_TEST_RUN), maps
 * programmed by the real reconciler from Services with `vipr.io/lb-mode`: the balancing node's
 * encapsulation (the frontend in an IPv4 option, the client's source kept), XDP handing DSR flows
 * to TC, the backend's node taking the option off and tracking the frontend, the reply rewritten
 * there, the SYN-ACK's MSS lowered, and SNAT where the mode or the protocol says so. Every
 * checksum of every output frame is recomputed here from scratch (test/bpf/packets.ts).
 */
import { readFileSync } from 'node:fs';
import {
  DatapathFixture, NODE_IP, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, type SvcDef,
} from './fixture.js';
import { TCP_ACK, TCP_SYN, checksum, ipString, ipv4Frame, parseFrame } from './packets.js';
import { CT_F_DSR, CT_F_REDIRECT } from '../../src/bpf/layouts.js';

const EXT_CLIENT = '192.168.60.100';
const REMOTE = '10.244.2.11';
const LOCAL = '10.244.1.11';
const OPT_TYPE = 0x9e;
const CT_FORWARD = 0;
const CT_REPLY = 1;

const lbMode = (mode: string): Record<string, string> => ({ 'vipr.io/lb-mode': mode });
const nodePort = (name: string, n: number, extra: Partial<SvcDef> = {}): SvcDef => ({
  name, vip: `10.0.0.${n}`, port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30000 + n, backends: [], remote: [REMOTE], ...extra,
});
const DSR_TCP = nodePort('dsr-tcp', 31, { annotations: lbMode('dsr') });
const DSR_UDP = nodePort('dsr-udp', 32, { protocol: 'UDP', annotations: lbMode('dsr') });
const HYBRID_TCP = nodePort('hy-tcp', 33, { annotations: lbMode('hybrid') });
const HYBRID_UDP = nodePort('hy-udp', 34, { protocol: 'UDP', annotations: lbMode('hybrid') });
const SNAT_TCP = nodePort('snat-tcp', 35, { annotations: lbMode('snat') });
const DEFAULT_TCP = nodePort('plain-tcp', 36);
const DSR_LOCAL = nodePort('dsr-local', 37, { backends: [LOCAL], remote: [], annotations: lbMode('dsr') });
const DSR_LB = nodePort('dsr-lb', 38, { type: 'LoadBalancer', loadBalancerIPs: ['10.250.0.38'], annotations: lbMode('dsr') });

/** What the balancing node's output frame holds: its IPv4 header with the option, and the rest parsed. */
interface Encapsulated {
  ihl: number;
  totLen: number;
  opt: { type: number; len: number; port: number; addr: string };
}

function encapsulation(f: Buffer): Encapsulated {
  return {
    ihl: (f[14] as number) & 0x0f,
    totLen: f.readUInt16BE(16),
    opt: { type: f[34] as number, len: f[35] as number, port: f.readUInt16BE(36), addr: ipString(f, 38) },
  };
}

/** A TCP frame with `opts` as TCP options (checksums computed here), for the SYN-ACK's MSS. */
function tcpWithOptions(src: string, dst: string, sport: number, dport: number, flags: number, opts: Buffer): Buffer {
  const base = ipv4Frame({ src, dst, proto: 'tcp', sport, dport, tcpFlags: flags });
  const ip = Buffer.from(base.subarray(14, 34));
  const tcp = Buffer.concat([Buffer.from(base.subarray(34, 54)), opts]);
  tcp[12] = (tcp.length / 4) << 4;
  tcp.writeUInt16BE(0, 16);
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6, tcp.length >> 8, tcp.length & 0xff])]);
  let s = 0;
  for (const b of [pseudo, tcp]) for (let i = 0; i < b.length; i += 2) s += b.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  tcp.writeUInt16BE(~s & 0xffff, 16);
  ip.writeUInt16BE(20 + tcp.length, 2);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([base.subarray(0, 14), ip, tcp]);
}

function mssOf(f: Buffer): number | null {
  const l4 = 14 + ((f[14] as number) & 0x0f) * 4;
  const end = l4 + ((f[l4 + 12] as number) >> 4) * 4;
  for (let o = l4 + 20; o < end;) {
    const kind = f[o] as number;
    if (kind === 0) return null;
    if (kind === 1) { o++; continue; }
    if (kind === 2) return f.readUInt16BE(o + 2);
    o += f[o + 1] as number;
  }
  return null;
}

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-dsr-${process.pid}`, { clusterCIDRs: ['10.244.0.0/16'] });
  await fx.program([DSR_TCP, DSR_UDP, HYBRID_TCP, HYBRID_UDP, SNAT_TCP, DEFAULT_TCP, DSR_LOCAL, DSR_LB]);
});

afterAll(() => fx?.close());

// Forwarded by bpf_redirect_neigh: whether this test's namespace has a route to the pod decides
// between the redirect and a counted FIB drop. The frame as rewritten is what is checked.
const FORWARDED = [TC_ACT_REDIRECT, TC_ACT_SHOT];

describe('balancing node: the frontend travels in an IPv4 option, the client address stays', () => {
  test('a TCP SYN to a dsr NodePort: DNAT to the remote backend, option [0x9e, 8, node port, node IP], both checksums right', () => {
    const encapBefore = fx.counter('dsr_encap');
    const snatBefore = fx.counter('snat');
    const frame = ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41000, dport: 30031 });
    const { verdict, out } = fx.ingress(frame);
    expect(FORWARDED).toContain(verdict);
    expect(out.length).toBe(frame.length + 8);
    expect(encapsulation(out)).toEqual({ ihl: 7, totLen: frame.readUInt16BE(16) + 8, opt: { type: OPT_TYPE, len: 8, port: 30031, addr: NODE_IP } });
    expect(parseFrame(out)).toMatchObject({ src: EXT_CLIENT, sport: 41000, dst: REMOTE, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    expect(fx.counter('dsr_encap')).toBe(encapBefore + 1);
    expect(fx.counter('snat')).toBe(snatBefore);
    const fwd = fx.dp.maps.ctTcpSyn.lookup({ saddr: EXT_CLIENT, daddr: NODE_IP, sport: 41000, dport: 30031, proto: 6, dir: CT_FORWARD });
    expect(fwd).toMatchObject({ nat_addr: REMOTE, nat_port: 8080, snat_addr: '0.0.0.0', flags: CT_F_DSR | CT_F_REDIRECT });

    // The client's next packets carry it too (with a payload: the L4 checksum covers it), and the
    // handshake's ACK alone promotes the flow: this node never sees the replies.
    const ack = ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41000, dport: 30031, tcpFlags: TCP_ACK, payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') });
    const next = fx.ingress(ack);
    expect(FORWARDED).toContain(next.verdict);
    expect(encapsulation(next.out).opt).toEqual({ type: OPT_TYPE, len: 8, port: 30031, addr: NODE_IP });
    expect(parseFrame(next.out)).toMatchObject({ dst: REMOTE, dport: 8080, src: EXT_CLIENT, ipChecksumOk: true, l4ChecksumOk: true });
    expect(next.out.subarray(next.out.length - 18).toString()).toBe('GET / HTTP/1.1\r\n\r\n');
    expect(fx.dp.maps.ctTcp.lookup({ saddr: EXT_CLIENT, daddr: NODE_IP, sport: 41000, dport: 30031, proto: 6, dir: CT_FORWARD })).not.toBeNull();
  });

  test('UDP to a dsr NodePort and TCP to a dsr LoadBalancer IP: encapsulated the same way', () => {
    const udp = ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'udp', sport: 41001, dport: 30032, payload: Buffer.from('whoami') });
    const u = fx.ingress(udp);
    expect(FORWARDED).toContain(u.verdict);
    expect(encapsulation(u.out).opt).toEqual({ type: OPT_TYPE, len: 8, port: 30032, addr: NODE_IP });
    expect(parseFrame(u.out)).toMatchObject({ src: EXT_CLIENT, sport: 41001, dst: REMOTE, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    // The UDP length field is untouched: the option is outside the datagram.
    expect(u.out.readUInt16BE(14 + 28 + 4)).toBe(8 + 6);

    const lb = fx.ingress(ipv4Frame({ src: EXT_CLIENT, dst: '10.250.0.38', proto: 'tcp', sport: 41002, dport: 80 }));
    expect(FORWARDED).toContain(lb.verdict);
    expect(encapsulation(lb.out).opt).toEqual({ type: OPT_TYPE, len: 8, port: 80, addr: '10.250.0.38' });
    expect(parseFrame(lb.out)).toMatchObject({ src: EXT_CLIENT, dst: REMOTE, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('hybrid: TCP is returned directly, UDP is SNATed; snat and the node default (snat) SNAT', () => {
    const tcp = fx.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41010, dport: 30033 }));
    expect(encapsulation(tcp.out).ihl).toBe(7);
    expect(parseFrame(tcp.out)).toMatchObject({ src: EXT_CLIENT, dst: REMOTE, l4ChecksumOk: true });
    for (const [proto, dport] of [['udp', 30034], ['tcp', 30035], ['tcp', 30036]] as const) {
      const r = fx.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto, sport: 41011, dport }));
      expect([dport, encapsulation(r.out).ihl]).toEqual([dport, 5]);
      expect([dport, parseFrame(r.out)]).toMatchObject([dport, { src: NODE_IP, dst: REMOTE, ipChecksumOk: true, l4ChecksumOk: true }]);
    }
  });

  test('a dsr Service whose backend is on this node: plain DNAT, no option', () => {
    const { verdict, out } = fx.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41020, dport: 30037 }));
    expect(verdict).toBe(TC_ACT_OK);
    expect(encapsulation(out).ihl).toBe(5);
    expect(parseFrame(out)).toMatchObject({ src: EXT_CLIENT, dst: LOCAL, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('XDP hands a DSR flow to TC untouched, and TC encapsulates it from the flow XDP recorded', () => {
    const frame = ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41030, dport: 30031 });
    const x = fx.xdp(frame);
    expect(x.verdict).toBe(XDP_PASS);
    expect(x.out.equals(frame)).toBe(true);
    const hitBefore = fx.counter('ct_hit');
    const t = fx.ingress(frame);
    expect(FORWARDED).toContain(t.verdict);
    expect(fx.counter('ct_hit')).toBe(hitBefore + 1);
    expect(encapsulation(t.out).opt).toEqual({ type: OPT_TYPE, len: 8, port: 30031, addr: NODE_IP });
    expect(parseFrame(t.out)).toMatchObject({ src: EXT_CLIENT, sport: 41030, dst: REMOTE, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a node-wide --lb-mode dsr applies to Services without the annotation, and snat on a Service still wins', async () => {
    const other = new DatapathFixture(`/sys/fs/bpf/vipr-test-dsr2-${process.pid}`, { clusterCIDRs: ['10.244.0.0/16'], defaultLbMode: 'dsr' });
    try {
      await other.program([DEFAULT_TCP, SNAT_TCP]);
      const plain = other.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41040, dport: 30036 }));
      expect(encapsulation(plain.out).ihl).toBe(7);
      expect(parseFrame(plain.out)).toMatchObject({ src: EXT_CLIENT, dst: REMOTE, ipChecksumOk: true, l4ChecksumOk: true });
      const snat = other.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport: 41041, dport: 30035 }));
      expect(encapsulation(snat.out).ihl).toBe(5);
      expect(parseFrame(snat.out)).toMatchObject({ src: NODE_IP, dst: REMOTE });
    } finally {
      other.close();
    }
  });
});

describe("backend's node: the option comes off, the frontend is tracked, the reply leaves as the frontend", () => {
  const FRONTEND = '192.168.60.12';

  /** The balancing node's output as the backend's node receives it: built here byte by byte. */
  function optioned(p: { proto: 'tcp' | 'udp'; sport: number; flags?: number; payload?: string; frontendPort: number }): Buffer {
    const opt = Buffer.alloc(8);
    opt[0] = OPT_TYPE;
    opt[1] = 8;
    opt.writeUInt16BE(p.frontendPort, 2);
    Buffer.from(FRONTEND.split('.').map(Number)).copy(opt, 4);
    return ipv4Frame({
      src: EXT_CLIENT, dst: REMOTE, proto: p.proto, sport: p.sport, dport: 8080, ipOptions: opt,
      ...(p.flags === undefined ? {} : { tcpFlags: p.flags }), ...(p.payload === undefined ? {} : { payload: Buffer.from(p.payload) }),
    });
  }

  test('TCP: stripped to a plain client -> pod packet with a recomputed header checksum; the SYN-ACK goes back as the frontend', () => {
    const decapBefore = fx.counter('dsr_decap');
    const frame = optioned({ proto: 'tcp', sport: 42000, frontendPort: 30099 });
    const { verdict, out } = fx.ingress(frame);
    expect(verdict).toBe(TC_ACT_OK);
    expect(out.length).toBe(frame.length - 8);
    expect(encapsulation(out)).toMatchObject({ ihl: 5, totLen: frame.readUInt16BE(16) - 8 });
    expect(parseFrame(out)).toMatchObject({ src: EXT_CLIENT, sport: 42000, dst: REMOTE, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    // Byte for byte the packet the client sent, DNATed: the same as one built without the option.
    expect(out.equals(ipv4Frame({ src: EXT_CLIENT, dst: REMOTE, proto: 'tcp', sport: 42000, dport: 8080 }))).toBe(true);
    expect(fx.counter('dsr_decap')).toBe(decapBefore + 1);
    expect(fx.dp.maps.ctTcpSyn.lookup({ saddr: REMOTE, daddr: EXT_CLIENT, sport: 8080, dport: 42000, proto: 6, dir: CT_REPLY }))
      .toMatchObject({ nat_addr: FRONTEND, nat_port: 30099, snat_addr: '0.0.0.0', flags: CT_F_DSR, svc_id: 0, backend_id: 0 });

    // The pod's SYN-ACK, leaving towards the client: source = the frontend, MSS lowered to what
    // the egress device's MTU leaves after the option (BPF_PROG_TEST_RUN runs on loopback).
    const mtu = Number(readFileSync('/sys/class/net/lo/mtu', 'utf8'));
    const synAck = tcpWithOptions(REMOTE, EXT_CLIENT, 8080, 42000, TCP_SYN | TCP_ACK, Buffer.from([1, 1, 4, 2, 2, 4, 0xff, 0xff]));
    const reply = fx.egress(synAck);
    expect(reply.verdict).toBe(TC_ACT_OK);
    expect(parseFrame(reply.out)).toMatchObject({ src: FRONTEND, sport: 30099, dst: EXT_CLIENT, dport: 42000, ipChecksumOk: true, l4ChecksumOk: true });
    expect(mssOf(reply.out)).toBe(Math.min(0xffff, mtu - 20 - 20 - 8));
    // An MSS that already fits is left alone.
    const small = fx.egress(tcpWithOptions(REMOTE, EXT_CLIENT, 8080, 42000, TCP_SYN | TCP_ACK, Buffer.from([2, 4, 0x05, 0xb4])));
    expect(mssOf(small.out)).toBe(1460);
    expect(parseFrame(small.out)).toMatchObject({ src: FRONTEND, l4ChecksumOk: true });

    // The client's ACK (still optioned) promotes the flow, as on any node that sees both ways.
    const ack = fx.ingress(optioned({ proto: 'tcp', sport: 42000, flags: TCP_ACK, payload: 'hello', frontendPort: 30099 }));
    expect(ack.verdict).toBe(TC_ACT_OK);
    expect(parseFrame(ack.out)).toMatchObject({ src: EXT_CLIENT, dst: REMOTE, ipChecksumOk: true, l4ChecksumOk: true });
    expect(fx.dp.maps.ctTcp.lookup({ saddr: EXT_CLIENT, daddr: FRONTEND, sport: 42000, dport: 30099, proto: 6, dir: CT_FORWARD }))
      .toMatchObject({ nat_addr: REMOTE, nat_port: 8080, flags: CT_F_DSR });
    const data = fx.egress(ipv4Frame({ src: REMOTE, dst: EXT_CLIENT, proto: 'tcp', sport: 8080, dport: 42000, tcpFlags: TCP_ACK, payload: Buffer.from('hi') }));
    expect(parseFrame(data.out)).toMatchObject({ src: FRONTEND, sport: 30099, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('UDP: stripped, and the answer leaves as the frontend', () => {
    const { verdict, out } = fx.ingress(optioned({ proto: 'udp', sport: 42001, payload: 'whoami', frontendPort: 30098 }));
    expect(verdict).toBe(TC_ACT_OK);
    expect(out.equals(ipv4Frame({ src: EXT_CLIENT, dst: REMOTE, proto: 'udp', sport: 42001, dport: 8080, payload: Buffer.from('whoami') }))).toBe(true);
    const reply = fx.egress(ipv4Frame({ src: REMOTE, dst: EXT_CLIENT, proto: 'udp', sport: 8080, dport: 42001, payload: Buffer.from('be3') }));
    expect(parseFrame(reply.out)).toMatchObject({ src: FRONTEND, sport: 30098, dst: EXT_CLIENT, dport: 42001, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('the balancing node\'s own output round-trips: encapsulated, then stripped to the DNATed packet', () => {
    const frame = ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'udp', sport: 42002, dport: 30032, payload: Buffer.from('ping') });
    const encapsulated = fx.ingress(frame).out;
    // What the wire between the nodes carries arrives at the other node's interface (its TTL one
    // less where this namespace had a route to forward by).
    const back = fx.ingress(encapsulated);
    expect(back.verdict).toBe(TC_ACT_OK);
    const ttl = encapsulated[22] as number;
    expect(back.out.equals(ipv4Frame({ src: EXT_CLIENT, dst: REMOTE, proto: 'udp', sport: 42002, dport: 8080, payload: Buffer.from('ping'), ttl }))).toBe(true);
  });

  test('other IPv4 options are not ours: a Router Alert packet passes untouched', () => {
    const frame = ipv4Frame({ src: EXT_CLIENT, dst: REMOTE, proto: 'tcp', sport: 42003, dport: 8080, ipOptions: Buffer.from([0x94, 4, 0, 0]) });
    const decapBefore = fx.counter('dsr_decap');
    const { verdict, out } = fx.ingress(frame);
    expect(verdict).toBe(TC_ACT_OK);
    expect(out.equals(frame)).toBe(true);
    expect(fx.counter('dsr_decap')).toBe(decapBefore);
  });
});
