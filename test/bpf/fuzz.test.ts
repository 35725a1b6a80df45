/*
 * Random, truncated and corrupted packets through TC egress and XDP, as the ingress fuzz in
 * tc-lb.test.ts does for TC ingress: nothing is rewritten unless it is a tracked reply (egress) or
 * a packet of a Service or of a tracked flow (XDP), and every rewrite changes only addresses,
 * ports, checksums (and, when XDP sends the frame back out, TTL and MACs), leaving each checksum
 * exactly as valid as it was. The generators mix intact packets of real flows, near misses (one
 * field off) and noise; a deterministic PRNG makes a failure reproducible.
 */
import { DatapathFixture, NODE_IP, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, type SvcDef } from './fixture.js';
import {
  TCP_ACK, TCP_SYN, changedOffsets, ipv4Frame, isLaterFragment, laterFragmentNatOffsets, mangleFrame, natFieldOffsets, parseFrame, prng,
  type Ipv4Packet,
} from './packets.js';

const WEB: SvcDef = { name: 'web', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: ['10.244.0.11', '10.244.0.12'] };
const DNS: SvcDef = { name: 'dns', vip: '10.0.0.53', port: 53, protocol: 'UDP', targetPort: 5353, backends: ['10.244.0.21', '10.244.0.22'] };
const NP_LOCAL: SvcDef = { name: 'np-local', vip: '10.0.0.10', port: 80, targetPort: 80, type: 'NodePort', nodePort: 30080, backends: ['10.244.1.11', '10.244.1.12'] };
const NP_REMOTE: SvcDef = { name: 'np-remote', vip: '10.0.0.11', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30081, backends: [], remote: ['10.244.2.11'] };

/** A frontend as a client addresses it, and the service behind it. */
interface Frontend {
  addr: string;
  port: number;
  proto: 'tcp' | 'udp';
  svc: SvcDef;
}

const FRONTENDS: Frontend[] = [
  { addr: WEB.vip, port: 80, proto: 'tcp', svc: WEB },
  { addr: DNS.vip, port: 53, proto: 'udp', svc: DNS },
  { addr: NODE_IP, port: 30080, proto: 'tcp', svc: NP_LOCAL },
  { addr: NODE_IP, port: 30081, proto: 'tcp', svc: NP_REMOTE },
];

/** A flow opened through TC ingress before the fuzz: what its replies look like before and after NAT. */
interface Flow {
  client: string;
  clientPort: number;
  frontend: Frontend;
  backend: string;
  /** The client as the backend sees it: itself, or the node with an SNAT port. */
  seenAs: { addr: string; port: number };
}

const HAIRPIN_ADDR = '169.254.42.1';
const protoNumber = (p: 'tcp' | 'udp'): number => (p === 'tcp' ? 6 : 17);
const CLIENTS = ['172.30.0.2', '172.30.0.3', '192.168.60.100'];

let fx: DatapathFixture;
const flows: Flow[] = [];

/** Opens a flow through TC ingress and records where it went. */
function open(client: string, clientPort: number, frontend: Frontend): void {
  const { verdict, out } = fx.ingress(ipv4Frame({ src: client, dst: frontend.addr, proto: frontend.proto, sport: clientPort, dport: frontend.port }));
  // A remote backend's flow is redirected by FIB lookup, or dropped for want of a route here; the
  // conntrack entry exists either way.
  expect([TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT]).toContain(verdict);
  const p = parseFrame(out);
  flows.push({ client, clientPort, frontend, backend: p.dst, seenAs: { addr: p.src, port: p.sport } });
}

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-fuzz-${process.pid}`);
  await fx.program([WEB, DNS, NP_LOCAL, NP_REMOTE]);
  for (const frontend of FRONTENDS) {
    for (let i = 0; i < 8; i++) open(CLIENTS[i % CLIENTS.length] as string, 20000 + i, frontend);
  }
});

afterAll(() => fx?.close());

/** The reply a flow's backend sends (before any reverse NAT). */
function replyOf(f: Flow, payload: Buffer): Ipv4Packet {
  return { src: f.backend, dst: f.seenAs.addr, proto: f.frontend.proto, sport: f.frontend.svc.targetPort, dport: f.seenAs.port, tcpFlags: TCP_ACK, payload };
}

/** The same packet with one field off: another port, another address, the other protocol. */
function nearMiss(p: Ipv4Packet, rand: (n: number) => number): Ipv4Packet {
  switch (rand(4)) {
    case 0: return { ...p, sport: ((p.sport ?? 0) + 1) & 0xffff };
    case 1: return { ...p, dport: ((p.dport ?? 0) + 1 + rand(100)) & 0xffff };
    case 2: return { ...p, src: `10.244.9.${1 + rand(250)}` };
    default: return { ...p, proto: p.proto === 'tcp' ? 'udp' : 'tcp' };
  }
}

/** Anything: addresses and ports of this fixture mixed at random, ICMP included. */
function noise(rand: (n: number) => number, payload: Buffer): Ipv4Packet {
  const addrs = [NODE_IP, WEB.vip, DNS.vip, '10.244.0.11', '10.244.2.11', '172.30.0.2', '192.168.60.99', '10.0.0.1'];
  const ports = [80, 53, 8080, 5353, 30080, 30081, 20000 + rand(8), 61000 + rand(4536), 1024 + rand(60000)];
  return {
    src: addrs[rand(addrs.length)] as string,
    dst: addrs[rand(addrs.length)] as string,
    proto: (['tcp', 'udp', 'icmp'] as const)[rand(3)] as 'tcp' | 'udp' | 'icmp',
    sport: ports[rand(ports.length)] as number,
    dport: ports[rand(ports.length)] as number,
    tcpFlags: [TCP_SYN, TCP_ACK][rand(2)] as number,
    payload,
  };
}

/** Every changed byte is one NAT may change. */
function expectOnlyNatFields(before: Buffer, after: Buffer, forwarded: boolean): void {
  const allowed = natFieldOffsets(before, forwarded);
  expect(changedOffsets(before, after).filter((o) => !allowed.has(o))).toEqual([]);
}

describe('TC egress: random, truncated and corrupted packets', () => {
  const rand = prng(24680);
  // Egress rewrites replies of flows that were not SNATed; the SNATed ones are ingress's.
  const reversible = (): Flow[] => flows.filter((f) => f.seenAs.addr === f.client);

  test('none is rewritten unless it is a tracked reply, and every rewrite is valid', () => {
    const candidates = reversible();
    expect(candidates.length).toBe(24);
    let rewritten = 0;
    for (let i = 0; i < 3000; i++) {
      const payload = Buffer.alloc(rand(40), rand(256));
      const kind = rand(3);
      // Replies of SNATed flows too: they look tracked, but are ingress's to reverse.
      const flow = flows[rand(flows.length)] as Flow;
      const packet = kind === 0 ? replyOf(flow, payload) : kind === 1 ? nearMiss(replyOf(flow, payload), rand) : noise(rand, payload);
      const { frame, intact } = mangleFrame(ipv4Frame(packet), rand);
      const { verdict, out } = fx.egress(frame);
      if (isLaterFragment(frame)) {
        // Corrupted into a later fragment: dropped unless a first fragment of its datagram passed,
        // and then at most its addresses are rewritten (it has no ports).
        expect([TC_ACT_OK, TC_ACT_SHOT]).toContain(verdict);
        expect(changedOffsets(frame, out).filter((o) => !laterFragmentNatOffsets().has(o))).toEqual([]);
        continue;
      }
      // Egress never drops or redirects: at worst it leaves a packet alone.
      expect(verdict).toBe(TC_ACT_OK);
      if (out.equals(frame)) {
        // An intact reply of a flow egress reverses must not slip through unrewritten.
        expect(kind === 0 && intact && candidates.includes(flow)).toBe(false);
        continue;
      }
      rewritten++;
      const before = parseFrame(frame);
      const after = parseFrame(out);
      const f = candidates.find((c) => c.backend === before.src && c.frontend.svc.targetPort === before.sport &&
        c.client === before.dst && c.clientPort === before.dport && protoNumber(c.frontend.proto) === before.proto);
      expect(f).toBeDefined();
      expect(after).toMatchObject({ src: f?.frontend.addr, sport: f?.frontend.port, dst: before.dst, dport: before.dport });
      expect(after.ipChecksumOk).toBe(before.ipChecksumOk);
      expect(after.l4ChecksumOk).toBe(before.l4ChecksumOk);
      expectOnlyNatFields(frame, out, false);
    }
    expect(rewritten).toBeGreaterThan(400);
  });
});

describe('XDP: random, truncated and corrupted packets', () => {
  const rand = prng(13579);
  const snated = (): Flow[] => flows.filter((f) => f.seenAs.addr !== f.client);
  const SNAT_PORT_MIN = 61000;

  test('none is rewritten unless it is for a service or a tracked flow, and every rewrite is valid', () => {
    const replies = snated();
    expect(replies.length).toBe(8);
    let rewritten = 0;
    for (let i = 0; i < 3000; i++) {
      const payload = Buffer.alloc(rand(40), rand(256));
      const kind = rand(4);
      const fe = FRONTENDS[rand(FRONTENDS.length)] as Frontend;
      // Few client ports, so later packets often hit the conntrack entries of earlier ones.
      const toService: Ipv4Packet = { src: CLIENTS[rand(CLIENTS.length)] as string, dst: fe.addr, proto: fe.proto, sport: 30000 + rand(50), dport: fe.port, payload };
      const reply = replyOf(replies[rand(replies.length)] as Flow, payload);
      const packet = kind === 0 ? toService : kind === 1 ? reply : kind === 2 ? nearMiss(rand(2) ? toService : reply, rand) : noise(rand, payload);
      const { frame, intact } = mangleFrame(ipv4Frame(packet), rand);
      const { verdict, out } = fx.xdp(frame);
      if (isLaterFragment(frame)) {
        // As on TC egress: dropped without its first fragment, else only addresses rewritten.
        expect([XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT]).toContain(verdict);
        expect(changedOffsets(frame, out).filter((o) => !laterFragmentNatOffsets(verdict !== XDP_PASS).has(o))).toEqual([]);
        continue;
      }
      // No policy in this fixture drops: a packet is passed, or rewritten and passed or sent.
      expect([XDP_PASS, XDP_TX, XDP_REDIRECT]).toContain(verdict);
      if (out.equals(frame)) {
        // Flows to local backends need no route: an intact packet of one is always rewritten.
        expect(kind === 0 && intact && fe.svc !== NP_REMOTE).toBe(false);
        continue;
      }
      rewritten++;
      const sent = verdict !== XDP_PASS;
      const before = parseFrame(frame);
      const after = parseFrame(out);
      const svcFrontend = FRONTENDS.find((x) => x.addr === before.dst && x.port === before.dport && protoNumber(x.proto) === before.proto);
      const snatReply = replies.find((r) => r.backend === before.src && r.frontend.svc.targetPort === before.sport &&
        r.seenAs.addr === before.dst && r.seenAs.port === before.dport && protoNumber(r.frontend.proto) === before.proto);
      if (svcFrontend) {
        // A client's packet: DNAT to a backend of that service, SNAT to the node for a remote
        // one, to the hairpin address for a backend reaching itself.
        const svc = svcFrontend.svc;
        expect([...svc.backends, ...(svc.remote ?? [])]).toContain(after.dst);
        expect(after.dport).toBe(svc.targetPort);
        if (after.dst === before.src) {
          expect(after.src).toBe(HAIRPIN_ADDR);
        } else if (svc.remote?.includes(after.dst)) {
          expect(after.src).toBe(NODE_IP);
          expect(after.sport).toBeGreaterThanOrEqual(SNAT_PORT_MIN);
        } else {
          expect(after).toMatchObject({ src: before.src, sport: before.sport });
        }
      } else {
        // Otherwise only a remote backend's reply to the node, turned back into the frontend's.
        expect(snatReply).toBeDefined();
        expect(after).toMatchObject({ src: NODE_IP, sport: snatReply?.frontend.port, dst: snatReply?.client, dport: snatReply?.clientPort });
      }
      expect(after.ipChecksumOk).toBe(before.ipChecksumOk);
      expect(after.l4ChecksumOk).toBe(before.l4ChecksumOk);
      // Sent back out: routed like the stack would, TTL one less; handed to the stack: TTL kept.
      expect(out[22]).toBe(sent ? (frame[22] as number) - 1 : frame[22]);
      expectOnlyNatFields(frame, out, sent);
    }
    expect(rewritten).toBeGreaterThan(300);
  });
});
