/*
 * ICMPv6 in the TC datapath, through the real programs (BPF_PROG_TEST_RUN) with maps programmed by
 * the real reconciler:
 *  - REJECT: a packet to an IPv6 Service without endpoints is answered with ICMPv6 port
 *    unreachable from the Service address, quoting as much of it as fits in 1280 bytes, sent back
 *    out the way it came; within the per-CPU ICMP budget IPv4 rejects draw on too.
 *  - Errors about translated flows: Packet Too Big (path MTU discovery through a Service) and port
 *    unreachable get their quote and outer addresses turned back into what the receiver sent.
 *  - Everything else ICMPv6 (echo, truncated errors, errors about flows never translated) passes
 *    untouched.
 * Every checksum is recomputed here from scratch over the IPv6 pseudo-header.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS } from './fixture.js';
import { fragmentFrame6, ipv4Frame, parseIcmp, prng, TCP_ACK, TCP_SYN } from './packets.js';
import {
  ICMPV6_DEST_UNREACH, ICMPV6_PKT_TOOBIG, ICMPV6_PORT_UNREACH, IPPROTO_ICMPV6, IPV6_MIN_MTU,
  icmp6ErrorFrame, ipv6Frame, parseIcmp6, parseQuote6,
} from './icmp6-packets.js';
import { endpointOf, entryOf, stateOf, NODE_IP4, NODE_IP6 } from '../helpers/dual-stack.js';
import { servicePortOf } from '../helpers/objects.js';
import type { ServiceEntry } from '../../src/model/types.js';

const CLIENT = 'fd00:172:30::2';
const EXT_CLIENT = 'fd00:192:168:60::100';
const ROUTER = 'fd00:172:30::fe';
const BACKENDS = ['fd00:10:244:1::11', 'fd00:10:244:1::12'];
const REMOTE = 'fd00:10:244:2::11';

const EMPTY_VIP = 'fd00:10:96::99';
const EMPTY_UDP_VIP = 'fd00:10:96::98';
const EMPTY4_VIP = '10.0.0.99';
const WEB_VIP = 'fd00:10:96::213';
const DNS_VIP = 'fd00:10:96::53';
const NP_REMOTE_PORT = 30081;

/** The ICMP budget (net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50), refilled at most every 20 ms. */
const BURST = 50;
const RATE_PER_MS = 1;
const REFILL_STEP_MS = 20;

function svc(name: string, family: 'IPv4' | 'IPv6', clusterIP: string, port: number, endpoints: string[],
  opts: { protocol?: 'TCP' | 'UDP'; targetPort?: number; nodePort?: number; remote?: boolean } = {}): ServiceEntry {
  const protocol = opts.protocol ?? 'TCP';
  const targetPort = opts.targetPort ?? 8080;
  const sp = servicePortOf({
    id: { namespace: 'default', name, port: '', protocol },
    family,
    type: opts.nodePort ? 'NodePort' : 'ClusterIP',
    clusterIP,
    port,
    targetPort,
    nodePort: opts.nodePort ?? 0,
  });
  return entryOf(sp, endpoints.map((ip) => endpointOf(ip, !opts.remote, targetPort)));
}

let fx: DatapathFixture;
let savedAffinity = '';
let cpu = -1;

/** The CPUs this thread may run on, e.g. "0-1". */
function allowedCpus(): string {
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/self/task/${process.pid}/status`, 'utf8'));
  if (!m) throw new Error('no Cpus_allowed_list in /proc/self/task/<pid>/status');
  return m[1] as string;
}

beforeAll(async () => {
  // BPF_PROG_TEST_RUN runs on the caller's CPU and the ICMP budget is per CPU: one CPU, one bucket.
  savedAffinity = allowedCpus();
  cpu = Number(/^\d+/.exec(savedAffinity)?.[0]);
  execFileSync('taskset', ['-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' });
  expect(allowedCpus()).toBe(String(cpu));
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-icmp6-${process.pid}`);
  const result = await fx.plane.sync(stateOf([
    svc('empty', 'IPv6', EMPTY_VIP, 80, []),
    svc('empty-udp', 'IPv6', EMPTY_UDP_VIP, 53, [], { protocol: 'UDP' }),
    svc('empty4', 'IPv4', EMPTY4_VIP, 80, []),
    svc('web', 'IPv6', WEB_VIP, 80, BACKENDS),
    svc('dns', 'IPv6', DNS_VIP, 53, BACKENDS.slice(0, 1), { protocol: 'UDP', targetPort: 5353 }),
    svc('np-remote', 'IPv6', 'fd00:10:96::11', 80, [REMOTE], { nodePort: NP_REMOTE_PORT, remote: true }),
  ], [NODE_IP4, NODE_IP6]), true);
  expect(result.failed).toEqual([]);
});

afterAll(() => {
  fx?.close();
  if (savedAffinity) execFileSync('taskset', ['-p', '-c', savedAffinity, String(process.pid)], { stdio: 'ignore' });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A payload whose every byte tells its position. */
function counting(len: number): Buffer {
  return Buffer.from(Array.from({ length: len }, (_, i) => (i * 7 + 3) & 0xff));
}

describe('REJECT: an IPv6 Service without endpoints answers with ICMPv6 port unreachable', () => {
  beforeEach(() => sleep(2 * BURST / RATE_PER_MS)); // a full budget

  test('a SYN gets port unreachable from the Service address, quoting it whole, sent back out the way it came', () => {
    const syn = ipv6Frame({ src: CLIENT, dst: EMPTY_VIP, proto: 'tcp', sport: 41000, dport: 80 });
    const before = fx.counter('reject');
    const { verdict, out } = fx.ingress(syn);
    expect(verdict).toBe(TC_ACT_REDIRECT);
    const icmp = parseIcmp6(out);
    expect(icmp).toMatchObject({
      src: EMPTY_VIP, dst: CLIENT, nexthdr: IPPROTO_ICMPV6, hopLimit: 64,
      type: ICMPV6_DEST_UNREACH, code: ICMPV6_PORT_UNREACH, word: 0, checksumOk: true,
    });
    expect(out.length).toBe(14 + icmp.ipLength);
    expect(icmp.quote.equals(syn.subarray(14))).toBe(true);
    // Back to the sender's MAC, from the one it sent to.
    expect(out.subarray(0, 6).equals(syn.subarray(6, 12))).toBe(true);
    expect(out.subarray(6, 12).equals(syn.subarray(0, 6))).toBe(true);
    expect(out.readUInt16BE(12)).toBe(0x86dd);
    expect(fx.counter('reject')).toBe(before + 1);
  });

  test('a 1,500-byte datagram is quoted as far as the error fits in the IPv6 minimum MTU (1280 bytes)', () => {
    const query = ipv6Frame({ src: CLIENT, dst: EMPTY_UDP_VIP, proto: 'udp', sport: 41001, dport: 53, payload: counting(1452) });
    expect(query.length).toBe(14 + 1500);
    const { verdict, out } = fx.ingress(query);
    expect(verdict).toBe(TC_ACT_REDIRECT);
    const icmp = parseIcmp6(out);
    expect(icmp).toMatchObject({ src: EMPTY_UDP_VIP, dst: CLIENT, type: ICMPV6_DEST_UNREACH, code: ICMPV6_PORT_UNREACH, checksumOk: true });
    expect(icmp.ipLength).toBe(IPV6_MIN_MTU);
    expect(out.length).toBe(14 + IPV6_MIN_MTU);
    expect(icmp.quote.equals(query.subarray(14, 14 + IPV6_MIN_MTU - 48))).toBe(true);
  });

  test('a packet from the unspecified address or a multicast one gets no error (RFC 4443 2.4 e)', () => {
    for (const src of ['::', 'ff02::1']) {
      const { verdict } = fx.ingress(ipv6Frame({ src, dst: EMPTY_VIP, proto: 'tcp', sport: 41002, dport: 80 }));
      expect(verdict).toBe(TC_ACT_SHOT);
    }
  });
});

describe('ICMPv6 rejects are rate-limited with the ICMP budget', () => {
  const rand = prng(6464);
  const forged6 = (): Buffer => ipv6Frame({
    src: `fd00:${(1 + rand(0xfffe)).toString(16)}::${(1 + rand(0xfffe)).toString(16)}`, dst: EMPTY_VIP, proto: 'tcp', sport: 1024 + rand(60000), dport: 80,
  });
  const forged4 = (): Buffer => ipv4Frame({ src: `10.${1 + rand(200)}.${rand(256)}.${1 + rand(250)}`, dst: EMPTY4_VIP, proto: 'tcp', sport: 1024 + rand(60000), dport: 80 });

  /** Sends the SYNs as fast as it can; the verdicts in order, and how long it took. */
  function flood(syns: Buffer[]): { verdicts: number[]; outs: Buffer[]; elapsedMs: number } {
    const start = process.hrtime.bigint();
    const runs = syns.map((s) => fx.ingress(s));
    return { verdicts: runs.map((r) => r.verdict), outs: runs.map((r) => r.out), elapsedMs: Number(process.hrtime.bigint() - start) / 1e6 };
  }
  /** The most replies a flood may get: the burst, plus what refills meanwhile. */
  const maxReplies = (elapsedMs: number): number => BURST + (elapsedMs >= REFILL_STEP_MS ? Math.ceil(elapsedMs * RATE_PER_MS) : 0);

  test('a flood from forged sources gets the burst of 50 replies, then drops counted as drop_icmp_rate_limit', async () => {
    await sleep(100);
    const limited = fx.counter('drop_icmp_rate_limit');
    const rejects = fx.counter('reject');
    const syns = Array.from({ length: 150 }, forged6);
    const b = flood(syns);
    expect(b.verdicts.slice(0, BURST).every((v) => v === TC_ACT_REDIRECT)).toBe(true);
    const replies = b.verdicts.filter((v) => v === TC_ACT_REDIRECT).length;
    const drops = b.verdicts.filter((v) => v === TC_ACT_SHOT).length;
    expect(replies + drops).toBe(150);
    expect(replies).toBeLessThanOrEqual(maxReplies(b.elapsedMs));
    expect(fx.counter('drop_icmp_rate_limit') - limited).toBe(drops);
    expect(fx.counter('reject') - rejects).toBe(150);
    // Each reply is a real one, to its forged source.
    b.outs.slice(0, BURST).forEach((out, i) => {
      expect(parseIcmp6(out)).toMatchObject({ dst: parseIcmp6(syns[i] as Buffer).src, type: ICMPV6_DEST_UNREACH, checksumOk: true });
    });
  });

  test('IPv4 and IPv6 rejects draw on one budget: a mixed flood gets one burst, not one per family', async () => {
    await sleep(100);
    const syns = Array.from({ length: 150 }, (_, i) => (i % 2 ? forged4() : forged6()));
    const b = flood(syns);
    expect(b.verdicts.slice(0, BURST).every((v) => v === TC_ACT_REDIRECT)).toBe(true);
    const replies = b.verdicts.filter((v) => v === TC_ACT_REDIRECT).length;
    // Separate budgets would give about 100 (50 per family) in a flood this short.
    expect(replies).toBeLessThanOrEqual(maxReplies(b.elapsedMs));
    expect(maxReplies(b.elapsedMs)).toBeLessThan(2 * BURST);
    expect(parseIcmp(b.outs[1] as Buffer)).toMatchObject({ src: EMPTY4_VIP, type: 3, code: 3, icmpChecksumOk: true });
    expect(parseIcmp6(b.outs[0] as Buffer)).toMatchObject({ src: EMPTY_VIP, type: ICMPV6_DEST_UNREACH, checksumOk: true });
  });
});

describe('ICMPv6 errors about translated flows', () => {
  test('Packet Too Big about a client\'s segment, from a router on the way to the backend, quotes what the client sent; the MTU stays', () => {
    const sport = 42000;
    const syn = ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN });
    const backend = parseQuote6(fx.ingress(syn).out.subarray(14)).dst;
    expect(BACKENDS).toContain(backend);
    const segment = ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_ACK, payload: counting(1400) });
    const toBackend = fx.ingress(segment).out;
    expect(parseQuote6(toBackend.subarray(14))).toMatchObject({ src: CLIENT, dst: backend, dport: 8080, l4ChecksumOk: true });
    const err = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toBackend });
    expect(err.length).toBe(14 + IPV6_MIN_MTU);

    // On its way in it is not yet the client's: egress rewrites it, as it rewrites replies.
    const atIngress = fx.ingress(err);
    expect(atIngress.verdict).toBe(TC_ACT_OK);
    expect(atIngress.out.equals(err)).toBe(true);

    const before = fx.counter('icmp_error_nat');
    const { verdict, out } = fx.egress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp6(out);
    expect(icmp).toMatchObject({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, checksumOk: true, ipLength: IPV6_MIN_MTU });
    // Exactly the bytes the client sent, as far as quoted: addresses, ports, TCP checksum.
    expect(icmp.quote.length).toBe(IPV6_MIN_MTU - 48);
    expect(icmp.quote.equals(segment.subarray(14, 14 + icmp.quote.length))).toBe(true);
    expect(fx.counter('icmp_error_nat')).toBe(before + 1);
  });

  test('a whole quoted segment gets a TCP checksum that verifies over the client\'s own addresses', () => {
    const syn = ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport: 42100, dport: 80, tcpFlags: TCP_SYN, payload: counting(33) });
    const toBackend = fx.ingress(syn).out;
    const err = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1300, about: toBackend });
    const icmp = parseIcmp6(fx.egress(err).out);
    expect(icmp).toMatchObject({ word: 1300, checksumOk: true });
    expect(parseQuote6(icmp.quote)).toEqual({ src: CLIENT, dst: WEB_VIP, sport: 42100, dport: 80, l4Complete: true, l4ChecksumOk: true });
  });

  test('port unreachable from the backend itself comes from the Service address', () => {
    const query = ipv6Frame({ src: CLIENT, dst: DNS_VIP, proto: 'udp', sport: 42200, dport: 53, payload: Buffer.from('query') });
    const toBackend = fx.ingress(query).out;
    const backend = parseQuote6(toBackend.subarray(14)).dst;
    const err = icmp6ErrorFrame({ src: backend, dst: CLIENT, type: ICMPV6_DEST_UNREACH, code: ICMPV6_PORT_UNREACH, about: toBackend });
    const { verdict, out } = fx.egress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp6(out);
    expect(icmp).toMatchObject({ src: DNS_VIP, dst: CLIENT, type: ICMPV6_DEST_UNREACH, code: ICMPV6_PORT_UNREACH, checksumOk: true });
    expect(icmp.quote.equals(query.subarray(14))).toBe(true);
    expect(parseQuote6(icmp.quote)).toMatchObject({ l4Complete: true, l4ChecksumOk: true });
  });

  test('Packet Too Big about a backend\'s reply, sent to the Service address, reaches the backend about its own packet', () => {
    const sport = 42300;
    const backend = parseQuote6(fx.ingress(ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN })).out.subarray(14)).dst;
    const reply = ipv6Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: sport, tcpFlags: TCP_SYN | TCP_ACK, payload: counting(1300) });
    const toClient = fx.egress(reply).out;
    expect(parseQuote6(toClient.subarray(14))).toMatchObject({ src: WEB_VIP, sport: 80, l4ChecksumOk: true });
    const err = icmp6ErrorFrame({ src: ROUTER, dst: WEB_VIP, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toClient });
    const { verdict, out } = fx.ingress(err);
    expect(verdict).toBe(TC_ACT_OK);
    const icmp = parseIcmp6(out);
    expect(icmp).toMatchObject({ src: ROUTER, dst: backend, type: ICMPV6_PKT_TOOBIG, word: 1280, checksumOk: true });
    expect(icmp.quote.equals(reply.subarray(14, 14 + icmp.quote.length))).toBe(true);
  });

  test('an error quoting a first fragment (a fragment header in the quote) is rewritten too', () => {
    const datagram = ipv6Frame({ src: CLIENT, dst: DNS_VIP, proto: 'udp', sport: 42400, dport: 53, payload: counting(3000) });
    const frags = fragmentFrame6(datagram, 1448, 0x6001); // cut for MTU 1500
    const toBackend = frags.map((f) => fx.ingress(f).out);
    const err = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toBackend[0] as Buffer });
    const before = fx.counter('icmp_error_nat');
    const icmp = parseIcmp6(fx.egress(err).out);
    expect(icmp).toMatchObject({ src: ROUTER, dst: CLIENT, word: 1280, checksumOk: true });
    expect(icmp.quote.equals((frags[0] as Buffer).subarray(14, 14 + icmp.quote.length))).toBe(true);
    expect(fx.counter('icmp_error_nat')).toBe(before + 1);
  });

  describe('a NodePort flow SNATed to this node for a remote backend', () => {
    const sport = 42500;
    let toBackend: Buffer;

    beforeAll(() => {
      const r = fx.ingress(ipv6Frame({ src: EXT_CLIENT, dst: NODE_IP6, proto: 'tcp', sport, dport: NP_REMOTE_PORT, tcpFlags: TCP_SYN }));
      // Forwarded by FIB lookup (the route may be missing where the test runs: then dropped, rewritten).
      expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(r.verdict);
      toBackend = r.out;
      expect(parseQuote6(toBackend.subarray(14))).toMatchObject({ src: NODE_IP6, dst: REMOTE, dport: 8080 });
    });

    test('an error about the client\'s packet comes to the node and is sent on to the client about what it sent', () => {
      const err = icmp6ErrorFrame({ src: 'fd00:192:168:60::12', dst: NODE_IP6, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1400, about: toBackend });
      const { verdict, out } = fx.ingress(err);
      expect([TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(verdict);
      const icmp = parseIcmp6(out);
      expect(icmp).toMatchObject({ src: 'fd00:192:168:60::12', dst: EXT_CLIENT, word: 1400, checksumOk: true });
      expect(parseQuote6(icmp.quote)).toEqual({ src: EXT_CLIENT, sport, dst: NODE_IP6, dport: NP_REMOTE_PORT, l4Complete: true, l4ChecksumOk: true });
    });

    test('an error from the remote backend itself comes from the node\'s address', () => {
      const err = icmp6ErrorFrame({ src: REMOTE, dst: NODE_IP6, type: ICMPV6_DEST_UNREACH, code: ICMPV6_PORT_UNREACH, about: toBackend });
      expect(parseIcmp6(fx.ingress(err).out)).toMatchObject({ src: NODE_IP6, dst: EXT_CLIENT, checksumOk: true });
    });
  });
});

describe('other ICMPv6 passes untouched', () => {
  test('an echo request to a Service address', () => {
    const echo = ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'icmp6', payload: counting(56) });
    for (const run of [fx.ingress(echo), fx.egress(echo)]) {
      expect(run.verdict).toBe(TC_ACT_OK);
      expect(run.out.equals(echo)).toBe(true);
    }
  });

  test('a truncated error about a tracked flow: too short a quote for the ports, or a frame cut inside its quote', () => {
    const toBackend = fx.ingress(ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport: 42600, dport: 80, tcpFlags: TCP_SYN })).out;
    const whole = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toBackend });
    const shortQuote = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toBackend, quoteLen: 40 + 2 });
    const cut = whole.subarray(0, 14 + 40 + 8 + 40 + 2);
    const before = fx.counter('icmp_error_nat');
    for (const err of [shortQuote, cut]) {
      for (const run of [fx.ingress(err), fx.egress(err)]) {
        expect(run.verdict).toBe(TC_ACT_OK);
        expect(run.out.equals(err)).toBe(true);
      }
    }
    expect(fx.counter('icmp_error_nat')).toBe(before);
    // Whole, the error about the same flow is rewritten: what kept them untouched is the truncation.
    expect(parseQuote6(parseIcmp6(fx.egress(whole).out).quote)).toMatchObject({ src: CLIENT, dst: WEB_VIP, dport: 80 });
  });

  test('errors about flows vipr never translated, and XDP leaves every error to TC', () => {
    const stranger = ipv6Frame({ src: CLIENT, dst: BACKENDS[0] as string, proto: 'tcp', sport: 42700, dport: 8080, tcpFlags: TCP_SYN });
    const err = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: stranger });
    for (const run of [fx.ingress(err), fx.egress(err)]) {
      expect(run.verdict).toBe(TC_ACT_OK);
      expect(run.out.equals(err)).toBe(true);
    }
    const toBackend = fx.ingress(ipv6Frame({ src: CLIENT, dst: WEB_VIP, proto: 'tcp', sport: 42800, dport: 80, tcpFlags: TCP_SYN })).out;
    const tracked = icmp6ErrorFrame({ src: ROUTER, dst: CLIENT, type: ICMPV6_PKT_TOOBIG, code: 0, word: 1280, about: toBackend });
    const x = fx.xdp(tracked);
    expect(x.verdict).toBe(XDP_PASS);
    expect(x.out.equals(tracked)).toBe(true);
  });
});
