/*
 * Client ports reused while conntrack still holds their previous flow, as under a
 * connection-per-request load (bench/rr.c --mode crr with TIME_WAIT reuse): whole connections
 * replayed through the TC programs (SYN, the backend's SYN-ACK, the client's ACK that promotes
 * the flow, data, FIN both ways, the last ACK), then a new SYN from the same client port, to the
 * same frontend or to another one whose backend is the same. Without SNAT the new flow's reply
 * tuple (backend -> client address:port) is then the old flow's, whose entry sits in the
 * established map that is looked up first.
 */
import { DatapathFixture, TC_ACT_OK, TC_ACT_SHOT, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, ipv4Frame, parseFrame } from './packets.js';
import { CT_FORWARD } from '../../src/bpf/layouts.js';

const CLIENT = '172.30.0.2';
const WEB: SvcDef = { name: 'web', vip: '10.0.0.30', port: 80, targetPort: 9000, backends: ['10.244.0.11', '10.244.0.12', '10.244.0.13'] };
// Two frontends with the one backend: a client port reused from one to the other always makes
// the same reply tuple.
const POD = '10.244.0.21';
const FIRST: SvcDef = { name: 'first', vip: '10.100.0.50', port: 80, targetPort: 9000, backends: [POD] };
const SECOND: SvcDef = { name: 'second', vip: '10.100.0.100', port: 80, targetPort: 9000, backends: [POD] };

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-ct-reuse-${process.pid}`);
  await fx.program([WEB, FIRST, SECOND]);
});

afterAll(() => fx?.close());

beforeEach(() => fx.flushFlows());

/** A packet of the client to `svc`, as it reaches the node; returns the frame the node sends on. */
function fromClient(svc: SvcDef, sport: number, tcpFlags: number, payload?: Buffer): { verdict: number; out: Buffer } {
  return fx.ingress(ipv4Frame({ src: CLIENT, dst: svc.vip, proto: 'tcp', sport, dport: svc.port, tcpFlags, ...(payload ? { payload } : {}) }));
}

/** A packet of `backend` to the client, leaving the node towards it. */
function toClient(backend: string, svc: SvcDef, sport: number, tcpFlags: number, payload?: Buffer): ReturnType<typeof parseFrame> {
  const r = fx.egress(ipv4Frame({ src: backend, dst: CLIENT, proto: 'tcp', sport: svc.targetPort, dport: sport, tcpFlags, ...(payload ? { payload } : {}) }));
  expect(r.verdict).toBe(TC_ACT_OK);
  return parseFrame(r.out);
}

/** The handshake and one request/response; returns the backend, and checks every rewrite. */
function open(svc: SvcDef, sport: number): string {
  const syn = fromClient(svc, sport, TCP_SYN);
  expect(syn.verdict).toBe(TC_ACT_OK);
  const backend = parseFrame(syn.out).dst;
  expect(svc.backends).toContain(backend);
  // The client only accepts a SYN-ACK from the address and port it connected to.
  expect(toClient(backend, svc, sport, TCP_SYN | TCP_ACK)).toMatchObject({ src: svc.vip, sport: svc.port, l4ChecksumOk: true });
  const promoted = fx.counter('ct_promoted');
  expect(parseFrame(fromClient(svc, sport, TCP_ACK).out)).toMatchObject({ dst: backend, dport: svc.targetPort });
  expect(fx.counter('ct_promoted')).toBe(promoted + 1);
  expect(fx.dp.maps.ctTcp.lookup({ saddr: CLIENT, daddr: svc.vip, sport, dport: svc.port, proto: 6, dir: CT_FORWARD })).not.toBeNull();
  const request = fromClient(svc, sport, TCP_ACK | TCP_PSH, Buffer.from('request'));
  expect(parseFrame(request.out)).toMatchObject({ dst: backend, dport: svc.targetPort, l4ChecksumOk: true });
  expect(toClient(backend, svc, sport, TCP_ACK | TCP_PSH, Buffer.from('reply'))).toMatchObject({ src: svc.vip, sport: svc.port, l4ChecksumOk: true });
  return backend;
}

/** The client closes first (rr.c's close() after the echo), the backend follows. */
function close(svc: SvcDef, sport: number, backend: string): void {
  expect(parseFrame(fromClient(svc, sport, TCP_FIN | TCP_ACK).out).dst).toBe(backend);
  expect(toClient(backend, svc, sport, TCP_FIN | TCP_ACK)).toMatchObject({ src: svc.vip, sport: svc.port });
  expect(parseFrame(fromClient(svc, sport, TCP_ACK).out).dst).toBe(backend);
}

test('a closed connection\'s 5-tuple reused: each new connection completes and may go to another backend', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 30; i++) {
    const backend = open(WEB, 41000);
    close(WEB, 41000, backend);
    seen.add(backend);
  }
  expect(seen.size).toBeGreaterThan(1);
  // One flow's two entries, the last one's; nothing of the earlier connections is left behind.
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(2);
});

test('a client port reused towards another frontend with the same backend: the answers carry the new frontend', () => {
  const first = open(FIRST, 42000);
  close(FIRST, 42000, first);
  // Before the fix the SYN-ACK was rewritten from the closed flow's entry, to FIRST's address:
  // the client dropped it and retransmitted its SYN until it gave up.
  const second = open(SECOND, 42000);
  expect(second).toBe(POD);
  // The closed flow left with both its entries: the new flow's entries are the only ones.
  expect(fx.dp.maps.ctTcp.lookup({ saddr: CLIENT, daddr: FIRST.vip, sport: 42000, dport: 80, proto: 6, dir: CT_FORWARD })).toBeNull();
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(2);
  close(SECOND, 42000, second);
  // And back again, as a load over many frontends does.
  close(FIRST, 42000, open(FIRST, 42000));
});

test('a SYN through another frontend whose reply tuple an open connection holds is dropped and counted; the open one goes on', () => {
  const backend = open(FIRST, 43000);
  const taken = fx.counter('drop_ct_tuple_taken');
  expect(fromClient(SECOND, 43000, TCP_SYN).verdict).toBe(TC_ACT_SHOT);
  expect(fx.counter('drop_ct_tuple_taken')).toBe(taken + 1);
  expect(parseFrame(fromClient(FIRST, 43000, TCP_ACK | TCP_PSH, Buffer.from('more')).out).dst).toBe(backend);
  expect(toClient(backend, FIRST, 43000, TCP_ACK | TCP_PSH, Buffer.from('answer'))).toMatchObject({ src: FIRST.vip, sport: 80 });
  // Half closed: the client is done, the backend may still send.
  expect(parseFrame(fromClient(FIRST, 43000, TCP_FIN | TCP_ACK).out).dst).toBe(backend);
  expect(fromClient(SECOND, 43000, TCP_SYN).verdict).toBe(TC_ACT_SHOT);
  expect(fx.counter('drop_ct_tuple_taken')).toBe(taken + 2);
  expect(toClient(backend, FIRST, 43000, TCP_ACK | TCP_PSH, Buffer.from('last words'))).toMatchObject({ src: FIRST.vip, sport: 80 });
  // Closed both ways: the same SYN opens its connection.
  expect(toClient(backend, FIRST, 43000, TCP_FIN | TCP_ACK)).toMatchObject({ src: FIRST.vip, sport: 80 });
  fromClient(FIRST, 43000, TCP_ACK);
  close(SECOND, 43000, open(SECOND, 43000));
  expect(fx.counter('drop_ct_tuple_taken')).toBe(taken + 2);
});

test('a connection reset frees its reply tuple for a connection through another frontend', () => {
  open(FIRST, 44000);
  fromClient(FIRST, 44000, TCP_RST);
  close(SECOND, 44000, open(SECOND, 44000));
});
