/*
 * Packets of service flows that are not plain TCP/UDP segments, through the real programs
 * (BPF_PROG_TEST_RUN) with maps programmed by the real reconciler:
 *  - IPv4 fragments: every fragment of a datagram is translated as its flow, the later ones by the
 *    ports their first fragment left in vipr_fragments_v1; reassembled, the datagram is valid.
 *  - ICMP errors about translated flows: the quoted packet, the ICMP checksum over it and the outer
 *    addresses turned back into what the error's receiver sent, so its stack finds the socket.
 * Every checksum is recomputed here from scratch. (Headers outside the linear data cannot be made
 * by BPF_PROG_TEST_RUN: test/e2e/odd-packets.test.ts sends those through a real veth.)
 */
import { DatapathFixture, NODE_IP, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, type SvcDef } from './fixture.js';
import {
  TCP_ACK, TCP_SYN, fragmentFrame, icmpErrorFrame, ipString, ipv4Frame, parseFrame, parseIcmp, parseQuote, reassemble,
} from './packets.js';

const CLIENT = '172.30.0.2';
const EXT_CLIENT = '192.168.60.100';
const ROUTER = '172.30.0.254';
const WEB: SvcDef = { name: 'web', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: ['10.244.0.11', '10.244.0.12', '10.244.0.13'] };
const DNS: SvcDef = { name: 'dns', vip: '10.0.0.53', port: 53, protocol: 'UDP', targetPort: 5353, backends: ['10.244.0.11', '10.244.0.12'] };
const NP_REMOTE: SvcDef = { name: 'np-remote', vip: '10.0.0.11', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30081, backends: [], remote: ['10.244.2.11'] };

const ICMP_DEST_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;
const ICMP_PORT_UNREACH = 3;

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-odd-${process.pid}`);
  await fx.program([WEB, DNS, NP_REMOTE]);
});

afterAll(() => fx?.close());

/** A payload whose every byte tells its position, so a misplaced fragment shows. */
function counting(len: number): Buffer {
  return Buffer.from(Array.from({ length: len }, (_, i) => (i * 7 + 3) & 0xff));
}

/** The next-hop MTU field of a "fragmentation needed" frame (no IP options). */
function nextHopMtu(frame: Buffer): number {
  return frame.readUInt16BE(14 + 20 + 6);
}

describe('IPv4 fragments of service traffic', () => {
  test('a 3,000-byte UDP request cut for MTU 1500: every fragment to one backend, reassembled valid', () => {
    const payload = counting(3000);
    const request = ipv4Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 34000, dport: 53, payload, id: 0x1001 });
    const frags = fragmentFrame(request, 1500);
    expect(frags).toHaveLength(3);
    const before = fx.counter('fragment');
    const outs = frags.map((f) => fx.ingress(f));
    for (const o of outs) expect(o.verdict).toBe(TC_ACT_OK);
    const whole = reassemble(outs.map((o) => o.out));
    const p = parseFrame(whole);
    expect(DNS.backends).toContain(p.dst);
    expect(p).toMatchObject({ src: CLIENT, sport: 34000, dport: 5353, ipChecksumOk: true, l4ChecksumOk: true, l4ChecksumAbsent: false });
    expect(whole.subarray(14 + 20 + 8).equals(payload)).toBe(true);
    for (const o of outs) {
      expect(ipString(o.out, 30)).toBe(p.dst);
      expect(parseFrame(o.out).ipChecksumOk).toBe(true);
    }
    expect(fx.counter('fragment')).toBe(before + 3);

    // The backend's 3,000-byte answer, fragmented on its way back: every fragment from the service.
    const answer = ipv4Frame({ src: p.dst, dst: CLIENT, proto: 'udp', sport: 5353, dport: 34000, payload: counting(3000).reverse(), id: 0x5001 });
    const back = fragmentFrame(answer, 1500).map((f) => fx.egress(f));
    for (const o of back) {
      expect(o.verdict).toBe(TC_ACT_OK);
      expect(ipString(o.out, 26)).toBe(DNS.vip);
    }
    expect(parseFrame(reassemble(back.map((o) => o.out)))).toMatchObject({
      src: DNS.vip, sport: 53, dst: CLIENT, dport: 34000, ipChecksumOk: true, l4ChecksumOk: true,
    });
  });

  test('a fragmented TCP segment is translated whole (the first fragment\'s checksum covers the segment)', () => {
    const seg = ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 34100, dport: 80, tcpFlags: TCP_SYN, payload: counting(1800), id: 0x1002 });
    const outs = fragmentFrame(seg, 1000).map((f) => fx.ingress(f));
    expect(outs).toHaveLength(2);
    const p = parseFrame(reassemble(outs.map((o) => o.out)));
    expect(WEB.backends).toContain(p.dst);
    expect(p).toMatchObject({ src: CLIENT, sport: 34100, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a later fragment before its first is dropped and counted; in order, the datagram passes', () => {
    const frags = fragmentFrame(ipv4Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 34200, dport: 53, payload: counting(2000), id: 0x1003 }), 1500);
    const dropped = fx.counter('drop_frag_not_found');
    expect(fx.ingress(frags[1] as Buffer).verdict).toBe(TC_ACT_SHOT);
    expect(fx.counter('drop_frag_not_found')).toBe(dropped + 1);
    const outs = frags.map((f) => fx.ingress(f));
    expect(outs.map((o) => o.verdict)).toEqual([TC_ACT_OK, TC_ACT_OK]);
    expect(parseFrame(reassemble(outs.map((o) => o.out)))).toMatchObject({ dport: 5353, l4ChecksumOk: true });
    expect(fx.counter('drop_frag_not_found')).toBe(dropped + 1);
  });

  test('fragments of a datagram to no service pass untouched', () => {
    const frags = fragmentFrame(ipv4Frame({ src: CLIENT, dst: '10.0.0.1', proto: 'udp', sport: 34300, dport: 53, payload: counting(2000), id: 0x1004 }), 1500);
    for (const f of frags) {
      const { verdict, out } = fx.ingress(f);
      expect(verdict).toBe(TC_ACT_OK);
      expect(out.equals(f)).toBe(true);
    }
  });

  test('XDP translates the fragments as TC does', () => {
    const frags = fragmentFrame(ipv4Frame({ src: EXT_CLIENT, dst: DNS.vip, proto: 'udp', sport: 34400, dport: 53, payload: counting(3000), id: 0x1005 }), 1500);
    const outs = frags.map((f) => fx.xdp(f));
    for (const o of outs) expect(o.verdict).toBe(XDP_PASS);
    const p = parseFrame(reassemble(outs.map((o) => o.out)));
    expect(DNS.backends).toContain(p.dst);
    expect(p).toMatchObject({ src: EXT_CLIENT, dport: 5353, ipChecksumOk: true, l4ChecksumOk: true });
  });
});

describe('ICMP errors about translated flows', () => {
  test('"fragmentation needed" about a client\'s packet, sent by a router on the way to the backend, quotes the packet the client sent', () => {
    const syn = ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 35000, dport: 80, tcpFlags: TCP_SYN });
    const toBackend = fx.ingress(syn).out;
    const err = icmpErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: toBackend });

    // On its way in it is not yet the client's: egress rewrites it, as it rewrites replies.
    const atIngress = fx.ingress(err);
    expect(atIngress.verdict).toBe(TC_ACT_OK);
    expect(atIngress.out.equals(err)).toBe(true);

    const before = fx.counter('icmp_error_nat');
    const { verdict, out } = fx.egress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp(out);
    expect(icmp).toMatchObject({ src: ROUTER, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, ipChecksumOk: true, icmpChecksumOk: true });
    expect(nextHopMtu(out)).toBe(1280);
    // Exactly what the client sent: addresses, ports, both checksums.
    expect(icmp.quote.equals(syn.subarray(14))).toBe(true);
    expect(parseQuote(icmp.quote)).toMatchObject({ src: CLIENT, dst: WEB.vip, sport: 35000, dport: 80, ipChecksumOk: true, l4ChecksumOk: true });
    expect(fx.counter('icmp_error_nat')).toBe(before + 1);
  });

  test('"port unreachable" from the backend itself comes from the service address', () => {
    const query = ipv4Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 35100, dport: 53, payload: Buffer.from('query') });
    const toBackend = fx.ingress(query).out;
    const backend = ipString(toBackend, 30);
    const err = icmpErrorFrame({ src: backend, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, about: toBackend });
    const { verdict, out } = fx.egress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp(out);
    expect(icmp).toMatchObject({ src: DNS.vip, dst: CLIENT, code: ICMP_PORT_UNREACH, ipChecksumOk: true, icmpChecksumOk: true });
    expect(icmp.quote.equals(query.subarray(14))).toBe(true);
  });

  test('a quote of only 8 L4 bytes (RFC 792\'s minimum) gets its addresses and ports back', () => {
    const syn = ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 35200, dport: 80, tcpFlags: TCP_SYN });
    const toBackend = fx.ingress(syn).out;
    const err = icmpErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1400, about: toBackend, quoteL4: 8 });
    const icmp = parseIcmp(fx.egress(err).out);
    expect(icmp).toMatchObject({ ipChecksumOk: true, icmpChecksumOk: true });
    expect(icmp.quote.equals(syn.subarray(14, 14 + 28))).toBe(true);
  });

  test('"fragmentation needed" about a backend\'s reply, sent to the service address, reaches the backend about its own packet', () => {
    const sport = 35300;
    const toBackend = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN })).out;
    const backend = ipString(toBackend, 30);
    const reply = ipv4Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: sport, tcpFlags: TCP_SYN | TCP_ACK, payload: counting(100) });
    const toClient = fx.egress(reply).out;
    expect(ipString(toClient, 26)).toBe(WEB.vip);
    // A router between the node and the client cannot forward the (rewritten) reply.
    const err = icmpErrorFrame({ src: ROUTER, dst: WEB.vip, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: toClient });
    const { verdict, out } = fx.ingress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp(out);
    expect(icmp).toMatchObject({ src: ROUTER, dst: backend, ipChecksumOk: true, icmpChecksumOk: true });
    expect(nextHopMtu(out)).toBe(1280);
    expect(icmp.quote.equals(reply.subarray(14))).toBe(true);
  });

  describe('a NodePort flow SNATed to this node for a remote backend', () => {
    const sport = 35400;
    const REMOTE = '10.244.2.11';
    let toBackend: Buffer;

    beforeAll(() => {
      const r = fx.ingress(ipv4Frame({ src: EXT_CLIENT, dst: NODE_IP, proto: 'tcp', sport, dport: 30081, tcpFlags: TCP_SYN }));
      expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(r.verdict);
      toBackend = r.out;
      expect(parseFrame(toBackend)).toMatchObject({ src: NODE_IP, dst: REMOTE, dport: 8080 });
    });

    test('an error about the client\'s packet comes to the node and is sent on to the client about what it sent', () => {
      const err = icmpErrorFrame({ src: '192.168.60.12', dst: NODE_IP, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: toBackend });
      const { verdict, out } = fx.ingress(err);
      // Forwarded by FIB lookup (its route may be missing where the test runs: then dropped, rewritten).
      expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(verdict);
      const icmp = parseIcmp(out);
      expect(icmp).toMatchObject({ src: '192.168.60.12', dst: EXT_CLIENT, ipChecksumOk: true, icmpChecksumOk: true });
      expect(parseQuote(icmp.quote)).toMatchObject({ src: EXT_CLIENT, sport, dst: NODE_IP, dport: 30081, ipChecksumOk: true, l4ChecksumOk: true });
    });

    test('an error from the remote backend itself comes from the node port\'s address', () => {
      const err = icmpErrorFrame({ src: REMOTE, dst: NODE_IP, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, about: toBackend });
      const icmp = parseIcmp(fx.ingress(err).out);
      expect(icmp).toMatchObject({ src: NODE_IP, dst: EXT_CLIENT, icmpChecksumOk: true, ipChecksumOk: true });
    });

    test('an error about the reply, sent to the node, reaches the backend about its own packet', () => {
      const snatPort = parseFrame(toBackend).sport;
      const reply = ipv4Frame({ src: REMOTE, dst: NODE_IP, proto: 'tcp', sport: 8080, dport: snatPort, tcpFlags: TCP_SYN | TCP_ACK });
      const toClient = fx.ingress(reply).out;
      expect(parseFrame(toClient)).toMatchObject({ src: NODE_IP, sport: 30081, dst: EXT_CLIENT, dport: sport });
      const err = icmpErrorFrame({ src: '192.168.60.1', dst: NODE_IP, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: toClient });
      const icmp = parseIcmp(fx.ingress(err).out);
      expect(icmp).toMatchObject({ src: '192.168.60.1', dst: REMOTE, icmpChecksumOk: true, ipChecksumOk: true });
      expect(parseQuote(icmp.quote)).toMatchObject({ src: REMOTE, sport: 8080, dst: NODE_IP, dport: snatPort, ipChecksumOk: true, l4ChecksumOk: true });
    });
  });

  test('errors about flows vipr never translated pass untouched, and XDP leaves every error to TC', () => {
    const stranger = ipv4Frame({ src: CLIENT, dst: '10.244.0.11', proto: 'tcp', sport: 35500, dport: 8080, tcpFlags: TCP_SYN });
    const err = icmpErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: stranger });
    for (const run of [fx.ingress(err), fx.egress(err)]) {
      expect(run.verdict).toBe(TC_ACT_OK);
      expect(run.out.equals(err)).toBe(true);
    }
    const toBackend = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 35600, dport: 80, tcpFlags: TCP_SYN })).out;
    const tracked = icmpErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, mtu: 1280, about: toBackend });
    const x = fx.xdp(tracked);
    expect(x.verdict).toBe(XDP_PASS);
    expect(x.out.equals(tracked)).toBe(true);
  });
});
