/*
 * Floods cannot empty conntrack. Established flows (SYN, the backend's SYN-ACK, the client's ACK)
 * are promoted to vipr_ct_tcp_v1, which nothing evicts; then more spoofed SYNs (and UDP flows) than
 * all conntrack maps together hold arrive, whose sources never answer. Afterwards every established
 * flow's next packet still goes to its backend, from its old entry, and new flows are still served.
 * Small maps (--ct-max-tcp 4096, --ct-max-udp 1024) keep the flood short.
 */
import { DatapathFixture, TC_ACT_OK, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_PSH, TCP_SYN, ipv4Frame, parseFrame } from './packets.js';
import { CT_ROLES, CT_FORWARD } from '../../src/bpf/layouts.js';
import { ctSizes } from '../../src/bpf/conntrack.js';

const WEB: SvcDef = { name: 'web', vip: '10.0.0.30', port: 80, targetPort: 8080, backends: ['10.244.1.81', '10.244.1.82', '10.244.1.83', '10.244.1.84'] };
const DNS: SvcDef = { name: 'dns', vip: '10.0.0.31', port: 53, targetPort: 53, protocol: 'UDP', backends: ['10.244.1.91', '10.244.1.92'] };
const SIZES = ctSizes({ tcp: 4096, udp: 1024 });
const ESTABLISHED = 50;

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-flood-${process.pid}`, {}, SIZES);
  await fx.program([WEB, DNS]);
});

afterAll(() => fx?.close());

const client = (i: number): string => `172.20.${i >> 8}.${i & 255}`;

/** Opens a connection the way a real client does; returns the backend it went to. */
function handshake(src: string, sport: number): string {
  const syn = fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN }));
  expect(syn.verdict).toBe(TC_ACT_OK);
  const backend = parseFrame(syn.out).dst;
  const synAck = fx.egress(ipv4Frame({ src: backend, dst: src, proto: 'tcp', sport: 8080, dport: sport, tcpFlags: TCP_SYN | TCP_ACK }));
  expect(parseFrame(synAck.out)).toMatchObject({ src: WEB.vip, sport: 80 });
  const ack = fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_ACK }));
  expect(parseFrame(ack.out).dst).toBe(backend);
  return backend;
}

function data(src: string, sport: number): string {
  const r = fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_ACK | TCP_PSH, payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') }));
  expect(r.verdict).toBe(TC_ACT_OK);
  const p = parseFrame(r.out);
  expect(p).toMatchObject({ dport: 8080, ipChecksumOk: true, l4ChecksumOk: true });
  return p.dst;
}

test('the maps have the sizes asked for: established TCP, a quarter of it half-open, UDP apart; IPv6\'s the same', () => {
  expect(fx.dp.ctMaxEntries).toEqual({ ctTcp: 4096, ctTcpSyn: 1024, ctUdp: 1024, ctTcp6: 4096, ctTcpSyn6: 1024, ctUdp6: 1024 });
});

test('established flows keep their backend through a flood of more SYNs and UDP flows than all maps hold', () => {
  const promotedBefore = fx.counter('ct_promoted');
  const backends = new Map<number, string>();
  for (let i = 0; i < ESTABLISHED; i++) backends.set(i, handshake(client(i), 30000 + i));
  expect(fx.counter('ct_promoted') - promotedBefore).toBe(ESTABLISHED);
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(2 * ESTABLISHED);

  const capacity = Object.values(fx.dp.ctMaxEntries).reduce((a, b) => a + b, 0);
  const flood = 2 * capacity;
  const newBefore = fx.counter('ct_new');
  for (let i = 0; i < flood; i++) {
    // Spoofed sources: a SYN each (half of them then a blind ACK, which cannot promote a flow the
    // backend never answered), and UDP queries.
    const src = `198.18.${(i >> 8) & 255}.${i & 255}`;
    const sport = 1024 + (i >> 16);
    fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_SYN }));
    if (i % 2 === 0) fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport, dport: 80, tcpFlags: TCP_ACK }));
    fx.ingress(ipv4Frame({ src, dst: DNS.vip, proto: 'udp', sport, dport: 53 }));
  }
  expect(fx.counter('ct_new') - newBefore).toBe(2 * flood);
  expect(fx.counter('ct_promoted') - promotedBefore).toBe(ESTABLISHED);

  // Every established flow: still there, its next packets to its backend, no new flow made.
  const newAfterFlood = fx.counter('ct_new');
  for (let i = 0; i < ESTABLISHED; i++) {
    expect(fx.dp.maps.ctTcp.lookup({ saddr: client(i), daddr: WEB.vip, sport: 30000 + i, dport: 80, proto: 6, dir: CT_FORWARD })).not.toBeNull();
    expect(data(client(i), 30000 + i)).toBe(backends.get(i));
  }
  expect(fx.counter('ct_new')).toBe(newAfterFlood);
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(2 * ESTABLISHED);
  // New flows are served all along: the flood only pushed out other half-open flows.
  expect(WEB.backends).toContain(handshake('172.21.0.1', 40000));
});

test('a half-open flow is promoted only once the backend answered and the client acknowledged', () => {
  const src = '172.22.0.1';
  fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport: 41000, dport: 80, tcpFlags: TCP_SYN }));
  fx.ingress(ipv4Frame({ src, dst: WEB.vip, proto: 'tcp', sport: 41000, dport: 80, tcpFlags: TCP_ACK }));
  const key = { saddr: src, daddr: WEB.vip, sport: 41000, dport: 80, proto: 6, dir: CT_FORWARD };
  expect(fx.dp.maps.ctTcp.lookup(key)).toBeNull();
  expect(fx.dp.maps.ctTcpSyn.lookup(key)).not.toBeNull();
});

test('with the established map full, new connections stay half-open and are still served (counted)', () => {
  fx.flushFlows();
  const fullBefore = fx.counter('ct_tcp_full');
  const flows = SIZES.tcp / 2;
  for (let i = 0; i < flows; i++) handshake(`172.23.${i >> 8}.${i & 255}`, 42000);
  expect(fx.dp.maps.ctTcp.entries()).toHaveLength(SIZES.tcp);
  expect(fx.counter('ct_tcp_full')).toBe(fullBefore);
  const backend = handshake('172.24.0.1', 43000);
  expect(fx.counter('ct_tcp_full')).toBe(fullBefore + 1);
  expect(fx.dp.maps.ctTcpSyn.lookup({ saddr: '172.24.0.1', daddr: WEB.vip, sport: 43000, dport: 80, proto: 6, dir: CT_FORWARD })).not.toBeNull();
  expect(data('172.24.0.1', 43000)).toBe(backend);
  for (const role of CT_ROLES) expect(fx.dp.maps[role].entries().length).toBeLessThanOrEqual(fx.dp.ctMaxEntries[role]);
});
