/*
 * The TC programs, run for real through BPF_PROG_TEST_RUN on crafted frames, with the maps
 * programmed by the real reconciler. Every rewritten frame has its checksums recomputed here.
 */
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, type SvcDef } from './fixture.js';
import {
  ETH_P_ARP, ETH_P_IPV6, TCP_ACK, TCP_FIN, TCP_SYN, changedOffsets, ethernet, ipv4Frame, isLaterFragment, laterFragmentNatOffsets,
  mangleFrame, parseFrame, parseIcmp, prng,
} from './packets.js';

const CLIENT = '172.30.0.2';
const WEB: SvcDef = { name: 'web', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: ['10.244.0.11', '10.244.0.12', '10.244.0.13'] };
const DNS: SvcDef = { name: 'dns', vip: '10.0.0.53', port: 53, protocol: 'UDP', targetPort: 5353, backends: ['10.244.0.11', '10.244.0.12'] };
const EMPTY: SvcDef = { name: 'empty', vip: '10.0.0.99', port: 80, targetPort: 80, backends: [] };

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-tc-${process.pid}`);
  await fx.program([WEB, DNS, EMPTY]);
});

afterAll(() => fx?.close());

interface Fixture {
  description: string;
  input: Buffer;
  verdict: number;
  /** Expected rewrite of the output; null = byte-for-byte untouched. */
  expect: null | ((out: ReturnType<typeof parseFrame>) => void);
}

const untouched: Fixture[] = [
  {
    description: 'TCP to an address that is no service',
    input: ipv4Frame({ src: CLIENT, dst: '10.0.0.1', proto: 'tcp', dport: 80 }),
    verdict: TC_ACT_OK,
    expect: null,
  },
  {
    description: 'TCP to a service address on another port',
    input: ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', dport: 443 }),
    verdict: TC_ACT_OK,
    expect: null,
  },
  {
    description: 'UDP to a TCP service port',
    input: ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'udp', dport: 80 }),
    verdict: TC_ACT_OK,
    expect: null,
  },
  {
    description: 'ICMP echo to a service address',
    input: ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'icmp' }),
    verdict: TC_ACT_OK,
    expect: null,
  },
  {
    description: 'ARP',
    input: ethernet(ETH_P_ARP, Buffer.from('0001080006040001020000000a0aac1e000200000000000aac1e0001', 'hex')),
    verdict: TC_ACT_OK,
    expect: null,
  },
  {
    description: 'IPv6',
    input: ethernet(ETH_P_IPV6, Buffer.concat([Buffer.from('6000000000081140', 'hex'), Buffer.alloc(32, 1), Buffer.alloc(8)])),
    verdict: TC_ACT_OK,
    expect: null,
  },
];

describe('ingress: traffic that is not for a service passes untouched', () => {
  test.each(untouched.map((f) => [f.description, f] as const))('%s', (_d, f) => {
    const { verdict, out } = fx.ingress(f.input);
    expect(verdict).toBe(f.verdict);
    expect(out.equals(f.input)).toBe(true);
  });

  test('fragments are counted', () => {
    const before = fx.counter('fragment');
    fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', dport: 80, fragOff: 0x2000 }));
    expect(fx.counter('fragment')).toBe(before + 1);
  });
});

describe('TCP to a ClusterIP service', () => {
  const sport = 41000;
  let backend = '';

  test('a SYN is DNATed to a backend with valid IP and TCP checksums', () => {
    const { verdict, out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport, dport: 80 }));
    expect(verdict).toBe(TC_ACT_OK);
    const p = parseFrame(out);
    expect(WEB.backends).toContain(p.dst);
    expect(p).toMatchObject({ src: CLIENT, sport, dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
    backend = p.dst;
  });

  test('the reply is reverse-NATed to the service address on egress', () => {
    const reply = ipv4Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: sport, tcpFlags: TCP_SYN | TCP_ACK });
    const { verdict, out } = fx.egress(reply);
    expect(verdict).toBe(TC_ACT_OK);
    expect(parseFrame(out)).toMatchObject({ src: WEB.vip, sport: 80, dst: CLIENT, dport: sport, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a reply from a backend nobody talked to through the service is untouched', () => {
    const stray = ipv4Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: sport + 1, tcpFlags: TCP_ACK });
    const { out } = fx.egress(stray);
    expect(out.equals(stray)).toBe(true);
  });

  test('every later packet of the flow goes to the same backend', () => {
    for (let i = 0; i < 20; i++) {
      const { out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_ACK, payload: Buffer.from(`req ${i}`) }));
      const p = parseFrame(out);
      expect(p.dst).toBe(backend);
      expect(p.l4ChecksumOk).toBe(true);
    }
  });

  test('new flows spread over all backends', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const { out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 50000 + i, dport: 80 }));
      seen.add(parseFrame(out).dst);
    }
    expect([...seen].sort()).toEqual([...WEB.backends].sort());
  });

  test('IPv4 options are skipped correctly and the rewrite stays valid', () => {
    const opts = Buffer.from([0x01, 0x01, 0x01, 0x00, 0x94, 0x04, 0x00, 0x00]); // NOP NOP NOP EOL, Router Alert
    const { out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: WEB.vip, proto: 'tcp', sport: 42000, dport: 80, ipOptions: opts }));
    const p = parseFrame(out);
    expect(WEB.backends).toContain(p.dst);
    expect(p).toMatchObject({ dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a flow keeps its backend after the backend set changes; new flows avoid a removed backend', async () => {
    const tuple = { src: CLIENT, dst: WEB.vip, proto: 'tcp' as const, sport: 43000, dport: 80 };
    const first = parseFrame(fx.ingress(ipv4Frame(tuple)).out).dst;
    await fx.program([{ ...WEB, backends: WEB.backends.filter((b) => b !== first) }, DNS, EMPTY]);
    try {
      for (let i = 0; i < 10; i++) {
        expect(parseFrame(fx.ingress(ipv4Frame({ ...tuple, tcpFlags: TCP_ACK })).out).dst).toBe(first);
      }
      for (let i = 0; i < 100; i++) {
        expect(parseFrame(fx.ingress(ipv4Frame({ ...tuple, sport: 60000 + i })).out).dst).not.toBe(first);
      }
    } finally {
      await fx.program([WEB, DNS, EMPTY]);
    }
  });

  test('a SYN reusing the 5-tuple of a closed flow is balanced again', () => {
    const tuple = { src: CLIENT, dst: WEB.vip, proto: 'tcp' as const, sport: 44000, dport: 80 };
    fx.ingress(ipv4Frame(tuple));
    fx.ingress(ipv4Frame({ ...tuple, tcpFlags: TCP_FIN | TCP_ACK }));
    const seen = new Set<string>();
    for (let i = 0; i < 60; i++) {
      seen.add(parseFrame(fx.ingress(ipv4Frame(tuple)).out).dst);
      fx.ingress(ipv4Frame({ ...tuple, tcpFlags: TCP_FIN | TCP_ACK }));
    }
    expect(seen.size).toBeGreaterThan(1);
  });
});

describe('UDP to a ClusterIP service', () => {
  test('request DNATed and reply reverse-NATed, checksums valid', () => {
    const { out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 33000, dport: 53, payload: Buffer.from('query') }));
    const p = parseFrame(out);
    expect(DNS.backends).toContain(p.dst);
    expect(p).toMatchObject({ dport: 5353, ipChecksumOk: true, l4ChecksumOk: true, l4ChecksumAbsent: false });
    const reply = fx.egress(ipv4Frame({ src: p.dst, dst: CLIENT, proto: 'udp', sport: 5353, dport: 33000, payload: Buffer.from('answer') }));
    expect(parseFrame(reply.out)).toMatchObject({ src: DNS.vip, sport: 53, ipChecksumOk: true, l4ChecksumOk: true });
  });

  test('a datagram without checksum keeps checksum 0', () => {
    const { out } = fx.ingress(ipv4Frame({ src: CLIENT, dst: DNS.vip, proto: 'udp', sport: 33001, dport: 53, udpNoChecksum: true }));
    const p = parseFrame(out);
    expect(p.l4ChecksumAbsent).toBe(true);
    expect(p.ipChecksumOk).toBe(true);
    expect(DNS.backends).toContain(p.dst);
  });
});

describe('a service without endpoints', () => {
  test('is rejected with ICMP port unreachable, sent back out the way it came, and counted', () => {
    const before = fx.counter('reject');
    const syn = ipv4Frame({ src: CLIENT, dst: EMPTY.vip, proto: 'tcp', sport: 45000, dport: 80 });
    const { verdict, out } = fx.ingress(syn);
    expect(verdict).toBe(TC_ACT_REDIRECT);
    expect(fx.counter('reject')).toBe(before + 1);
    const icmp = parseIcmp(out);
    expect(icmp).toMatchObject({ src: EMPTY.vip, dst: CLIENT, type: 3, code: 3, ipChecksumOk: true, icmpChecksumOk: true });
    // The quote is the original IP header and the first 8 bytes of its TCP header.
    expect(icmp.quote.equals(syn.subarray(14, 14 + 28))).toBe(true);
    // Ethernet addresses swapped: back to the sender.
    expect(out.subarray(0, 6).equals(syn.subarray(6, 12))).toBe(true);
  });
});

describe('random and truncated packets', () => {
  const rand = prng(12345);

  test('none is rewritten unless it matches a service, and every rewrite is valid', () => {
    const vips = [WEB.vip, DNS.vip, '10.0.0.1'];
    let rewritten = 0;
    for (let i = 0; i < 3000; i++) {
      const proto = (['tcp', 'udp', 'icmp'] as const)[rand(3)] as 'tcp' | 'udp' | 'icmp';
      const dst = vips[rand(vips.length)] as string;
      const dport = [80, 53, 443][rand(3)] as number;
      const { frame } = mangleFrame(
        ipv4Frame({ src: `172.30.${rand(4)}.${1 + rand(250)}`, dst, proto, sport: 1024 + rand(60000), dport, payload: Buffer.alloc(rand(40), rand(256)) }),
        rand,
      );
      const { verdict, out } = fx.ingress(frame);
      if (isLaterFragment(frame)) {
        // Corrupted into a later fragment: dropped unless a first fragment of its datagram passed,
        // and then at most its addresses are rewritten (it has no ports).
        expect([TC_ACT_OK, TC_ACT_SHOT]).toContain(verdict);
        expect(changedOffsets(frame, out).filter((o) => !laterFragmentNatOffsets().has(o))).toEqual([]);
        continue;
      }
      if (out.equals(frame)) continue;
      // Rewritten: it must have been a well-formed packet for a service, and valid afterwards.
      rewritten++;
      expect(verdict).toBe(TC_ACT_OK);
      const before = parseFrame(frame);
      const after = parseFrame(out);
      const svc = [WEB, DNS].find((s) => s.vip === before.dst && s.port === before.dport && (s.protocol ?? 'TCP') === (before.proto === 6 ? 'TCP' : 'UDP'));
      expect(svc).toBeDefined();
      expect(svc?.backends).toContain(after.dst);
      expect(after.dport).toBe(svc?.targetPort);
      expect(after.ipChecksumOk).toBe(before.ipChecksumOk);
      expect(after.l4ChecksumOk).toBe(before.l4ChecksumOk);
    }
    expect(rewritten).toBeGreaterThan(100);
  });
});
