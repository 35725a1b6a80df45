/*
 * SNAT source ports: a flow to a remote backend is dropped only once every port of the range is
 * taken for that backend (--snat-port-range), and the drop is counted; a range found full is not
 * walked again for a second. External clients open flows
 * to a NodePort whose only endpoint is on another node, so each is SNATed to the node address.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DatapathFixture, NODE_IP, TC_ACT_SHOT, type SvcDef } from './fixture.js';
import { TCP_SYN, ipv4Frame } from './packets.js';
import { CT_REPLY, IPPROTO_TCP, IPPROTO_UDP } from '../../src/bpf/layouts.js';

const REMOTE = '10.244.2.11';
const WEB: SvcDef = { name: 'np-web', vip: '10.0.0.40', port: 80, targetPort: 8080, type: 'NodePort', nodePort: 30090, backends: [], remote: [REMOTE] };
const DNS: SvcDef = { name: 'np-dns', vip: '10.0.0.41', port: 53, targetPort: 5353, protocol: 'UDP', type: 'NodePort', nodePort: 30091, backends: [], remote: [REMOTE] };
const PORTS: [number, number] = [62000, 63999];
const SPAN = PORTS[1] - PORTS[0] + 1;

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-snat-${process.pid}`, { snatPorts: PORTS });
  await fx.program([WEB, DNS]);
});

afterAll(() => fx?.close());

const client = (i: number): string => `192.168.61.${1 + (i % 250)}`;

/** Ports held by SNATed flows to the remote backend, from their reply entries. */
function snatPorts(proto: number, targetPort: number): number[] {
  const map = proto === IPPROTO_TCP ? fx.dp.maps.ctTcpSyn : fx.dp.maps.ctUdp;
  return map.entries()
    .filter(([k]) => k.dir === CT_REPLY && k.proto === proto && k.saddr === REMOTE && k.sport === targetPort && k.daddr === NODE_IP)
    .map(([k]) => k.dport);
}

test.each([
  ['TCP', IPPROTO_TCP, WEB],
  ['UDP', IPPROTO_UDP, DNS],
] as const)('%s: every port of the range is used before a flow is dropped, the drop is counted, and a range found full is not walked again for a second', async (_name, proto, svc) => {
  const dropsBefore = fx.counter('drop_no_snat_port');
  const frame = (i: number): Buffer => ipv4Frame({
    src: client(i), dst: NODE_IP, proto: proto === IPPROTO_TCP ? 'tcp' : 'udp', sport: 20000 + Math.floor(i / 250), dport: svc.nodePort as number, tcpFlags: TCP_SYN,
  });
  for (let i = 0; i < SPAN; i++) fx.ingress(frame(i));
  const ports = snatPorts(proto, svc.targetPort);
  expect(new Set(ports).size).toBe(SPAN);
  expect(ports.every((p) => p >= PORTS[0] && p <= PORTS[1])).toBe(true);
  expect(fx.counter('drop_no_snat_port')).toBe(dropsBefore);

  // The range is used up for this backend: the next flow is dropped, and counted.
  expect(fx.ingress(frame(SPAN)).verdict).toBe(TC_ACT_SHOT);
  expect(fx.counter('drop_no_snat_port')).toBe(dropsBefore + 1);

  // That flow walked the whole range to find it full. For a second, flows to the backend are
  // dropped without walking it again (a flood of new sources would walk it every packet).
  const walks = fx.counter('snat_port_walk');
  for (let i = 1; i <= 20; i++) expect(fx.ingress(frame(SPAN + i)).verdict).toBe(TC_ACT_SHOT);
  expect(fx.counter('snat_port_walk')).toBe(walks);
  expect(fx.counter('drop_no_snat_port')).toBe(dropsBefore + 21);
  // Then the next one walks again (a port freed meanwhile would be found).
  await sleep(1100);
  expect(fx.ingress(frame(SPAN + 21)).verdict).toBe(TC_ACT_SHOT);
  expect(fx.counter('snat_port_walk')).toBe(walks + 1);
});
