/*
 * Which local backends XDP sends to itself (src/bpf/xdp-pods.ts): the node's tables as `ip -j`
 * prints them decide (IPv4's and IPv6's), and everything but a pod on a veth with a neighbour
 * entry stays with the stack, with the reason logged. Then the maps follow the plan (IPv4 pods
 * in vipr_xdp_pods_v1, IPv6 pods in vipr_xdp_pods6_v1), writing only what changed.
 */
import {
  XdpPods, clearXdpPods, localBackendAddrs, monitorLineMatters, parseLinks, parseNeighbours, parseRoutes, planXdpPods, routeTo, type NodeTables, type XdpPodMaps,
} from '../../src/bpf/xdp-pods.js';
import type { MapLike } from '../../src/bpf/map.js';
import type { XdpPodT } from '../../src/bpf/layouts.js';
import type { DesiredState } from '../../src/model/types.js';

// As iproute2 6.1 prints them (fields trimmed to what is read, plus some that are not).
const LINKS = JSON.stringify([
  { ifindex: 1, ifname: 'lo', mtu: 65536, address: '00:00:00:00:00:00', link_type: 'loopback' },
  { ifindex: 2, ifname: 'eth0', mtu: 1500, address: '52:54:00:12:34:56', link_type: 'ether' },
  { ifindex: 7, ifname: 'vbe1', mtu: 1450, address: 'aa:bb:cc:00:00:07', link_type: 'ether', link_netnsid: 0, linkinfo: { info_kind: 'veth' } },
  { ifindex: 8, ifname: 'cni0', mtu: 1500, address: 'aa:bb:cc:00:00:08', link_type: 'ether', linkinfo: { info_kind: 'bridge' } },
]);
const NEIGH = JSON.stringify([
  { dst: '10.244.1.11', dev: 'vbe1', lladdr: '0a:58:0a:f4:01:0b', state: ['REACHABLE'] },
  { dst: '10.244.1.12', dev: 'vbe1', lladdr: '0a:58:0a:f4:01:0c', state: ['STALE'] },
  { dst: '10.244.1.13', dev: 'vbe1', state: ['FAILED'] },
  { dst: '10.244.9.5', dev: 'cni0', lladdr: '0a:58:0a:f4:09:05', state: ['REACHABLE'] },
  // `ip -j neigh show` lists both families.
  { dst: 'fd00:10:244:1::11', dev: 'vbe1', lladdr: '0a:58:0a:f4:01:0b', state: ['REACHABLE'] },
  { dst: 'fd00:10:244:1::13', dev: 'vbe1', state: ['INCOMPLETE'] },
  { dst: 'fd00:10:244:9::5', dev: 'cni0', lladdr: '0a:58:0a:f4:09:05', state: ['STALE'] },
  { dst: 'fe80::1', dev: 'eth0', lladdr: '52:54:00:00:00:01', router: null, state: ['STALE'] },
]);
const ROUTES = JSON.stringify([
  { dst: 'default', gateway: '192.168.60.1', dev: 'eth0', flags: [] },
  { dst: '10.244.1.0/24', dev: 'vbe1', scope: 'link', flags: [] },
  { dst: '10.244.1.14', gateway: '192.168.60.12', dev: 'eth0', flags: [] },
  { dst: '10.244.9.0/24', dev: 'cni0', scope: 'link', flags: [] },
  { type: 'blackhole', dst: '10.244.7.0/24', flags: [] },
]);
// As `ip -j -6 route show table main` prints them: a pod's /128 prints without its prefix length.
const ROUTES6 = JSON.stringify([
  { dst: 'fd00:10:244:1::/64', dev: 'vbe1', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
  { dst: 'fd00:10:244:1::14', gateway: 'fd00:192:168:60::12', dev: 'eth0', metric: 1024, flags: [], pref: 'medium' },
  { dst: 'fd00:10:244:9::/64', dev: 'cni0', metric: 1024, flags: [], pref: 'medium' },
  { dst: 'fe80::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
  { dst: 'default', gateway: 'fe80::1', dev: 'eth0', protocol: 'ra', metric: 1024, flags: [], pref: 'medium' },
]);
const tables = (): NodeTables => ({
  links: parseLinks(LINKS),
  neighbours: parseNeighbours(NEIGH),
  routes: [...parseRoutes(ROUTES, 'IPv4'), ...parseRoutes(ROUTES6, 'IPv6')],
});

class FakeMap implements MapLike<{ addr: string }, XdpPodT> {
  readonly data = new Map<string, XdpPodT>();
  writes = 0;
  constructor(readonly name = 'vipr_xdp_pods_v1') {}
  lookup(k: { addr: string }): XdpPodT | null { return this.data.get(k.addr) ?? null; }
  update(k: { addr: string }, v: XdpPodT): void { this.writes++; this.data.set(k.addr, v); }
  delete(k: { addr: string }): boolean { return this.data.delete(k.addr); }
  entries(): Array<[{ addr: string }, XdpPodT]> { return [...this.data].map(([addr, v]) => [{ addr }, v]); }
  updateBatch(e: ReadonlyArray<readonly [{ addr: string }, XdpPodT]>): void { for (const [k, v] of e) this.update(k, v); }
}
const fakeMaps = (): XdpPodMaps & { ipv4: FakeMap; ipv6: FakeMap } => ({ ipv4: new FakeMap(), ipv6: new FakeMap('vipr_xdp_pods6_v1') });

describe('XDP to local pods: the plan from the node\'s tables', () => {
  test('the longest prefix wins; default is /0', () => {
    const routes = parseRoutes(ROUTES);
    expect(routeTo(routes, '10.244.1.14')).toMatchObject({ cidr: { prefix: 32 }, gateway: '192.168.60.12' });
    expect(routeTo(routes, '10.244.1.11')).toMatchObject({ cidr: { prefix: 24 }, dev: 'vbe1', gateway: null });
    expect(routeTo(routes, '8.8.8.8')).toMatchObject({ cidr: { prefix: 0 }, dev: 'eth0' });
    // A blackhole has no device to send to: not a route to a pod, so the default one answers.
    expect(routeTo(routes, '10.244.7.1')).toMatchObject({ cidr: { prefix: 0 }, dev: 'eth0' });
  });

  test('IPv6 the same, over its own table: default is ::/0, and an IPv4 route never answers for an IPv6 address', () => {
    const routes = [...parseRoutes(ROUTES, 'IPv4'), ...parseRoutes(ROUTES6, 'IPv6')];
    expect(routeTo(routes, 'fd00:10:244:1::14')).toMatchObject({ cidr: { family: 'IPv6', prefix: 128 }, gateway: 'fd00:192:168:60::12' });
    expect(routeTo(routes, 'fd00:10:244:1::11')).toMatchObject({ cidr: { prefix: 64 }, dev: 'vbe1', gateway: null });
    expect(routeTo(routes, '2001:db8::1')).toMatchObject({ cidr: { family: 'IPv6', prefix: 0 }, dev: 'eth0', gateway: 'fe80::1' });
    expect(routeTo(parseRoutes(ROUTES, 'IPv4'), 'fd00:10:244:1::11')).toBeNull();
  });

  test('a pod on a veth with a neighbour entry is listed with the veth\'s index, MTU and MAC and the pod\'s MAC; the rest stay with the stack, each with why', () => {
    const plan = planXdpPods(['10.244.1.11', '10.244.1.12', '10.244.1.13', '10.244.1.14', '10.244.9.5'], tables());
    expect(Object.fromEntries(plan.entries)).toEqual({
      '10.244.1.11': { ifindex: 7, len_ok: 1450, pod_mac: '0a:58:0a:f4:01:0b', host_mac: 'aa:bb:cc:00:00:07' },
      '10.244.1.12': { ifindex: 7, len_ok: 1450, pod_mac: '0a:58:0a:f4:01:0c', host_mac: 'aa:bb:cc:00:00:07' },
    });
    expect(Object.fromEntries(plan.skipped)).toEqual({
      '10.244.1.13': 'no neighbour entry on vbe1 yet',
      '10.244.1.14': 'routed via 192.168.60.12, not on a link of this node',
      '10.244.9.5': 'behind cni0 (bridge): XDP sends to veths only',
    });
  });

  test('IPv6 pods by the same rules, from IPv6\'s neighbour entries and main table', () => {
    const plan = planXdpPods(['fd00:10:244:1::11', 'fd00:10:244:1::12', 'fd00:10:244:1::13', 'fd00:10:244:1::14', 'fd00:10:244:9::5', 'fd00:10:244:3::1'], {
      ...tables(),
      routes: [...parseRoutes(ROUTES, 'IPv4'), ...parseRoutes(ROUTES6, 'IPv6').filter((r) => r.cidr.prefix > 0)],
    });
    expect(Object.fromEntries(plan.entries)).toEqual({
      'fd00:10:244:1::11': { ifindex: 7, len_ok: 1450, pod_mac: '0a:58:0a:f4:01:0b', host_mac: 'aa:bb:cc:00:00:07' },
    });
    expect(Object.fromEntries(plan.skipped)).toEqual({
      'fd00:10:244:1::12': 'no neighbour entry on vbe1 yet',
      'fd00:10:244:1::13': 'no neighbour entry on vbe1 yet',
      'fd00:10:244:1::14': 'routed via fd00:192:168:60::12, not on a link of this node',
      'fd00:10:244:9::5': 'behind cni0 (bridge): XDP sends to veths only',
      // IPv4's default route (0.0.0.0/0) does not cover it, and IPv6's was left out here.
      'fd00:10:244:3::1': 'no route to it in the main table',
    });
  });

  test('the local backends of a synced state: this node\'s endpoints of both families, once each', () => {
    const ep = (ip: string, isLocal: boolean) => ({ ip, port: 80, ready: true, serving: true, terminating: false, nodeName: null, zone: null, zoneHints: null, isLocal });
    const state = { services: [
      { endpoints: [ep('10.244.1.11', true), ep('10.244.2.11', false)] },
      { endpoints: [ep('10.244.1.11', true), ep('fd00:10:244::5', true)] },
    ] } as unknown as DesiredState;
    expect([...localBackendAddrs(state)]).toEqual(['10.244.1.11', 'fd00:10:244::5']);
  });
});

describe('XDP to local pods: which ip monitor lines make the agent read the tables again', () => {
  // As `ip -o monitor link neigh route` prints them.
  const addrs = new Set(['10.244.1.11', '10.244.1.12', 'fd00:10:244:1::11', 'fd00:10:244:1::12']);
  const listed = (a: string): string | null => (a === '10.244.1.11' || a === 'fd00:10:244:1::11' ? '0a:58:0a:f4:01:0b' : null);
  test.each([
    ['a link appears', '7: vbe3@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default \\    link/ether aa:bb:cc:00:00:09 brd ff:ff:ff:ff:ff:ff', true],
    ['a backend not listed yet gets a neighbour entry', '10.244.1.12 dev vbe1 lladdr 0a:58:0a:f4:01:0c REACHABLE ', true],
    ['a listed backend\'s MAC changes (the pod recreated)', '10.244.1.11 dev vbe1 lladdr 0a:58:0a:f4:01:99 REACHABLE ', true],
    ['a listed backend\'s neighbour entry goes', 'Deleted 10.244.1.11 dev vbe1 lladdr 0a:58:0a:f4:01:0b STALE ', true],
    ['a listed backend\'s entry fails', '10.244.1.11 dev vbe1 FAILED ', true],
    ['a route to a backend', '10.244.1.12 dev vbe2 scope link ', true],
    ['a prefix route', '10.244.3.0/24 via 192.168.60.13 dev eth0 ', true],
    ['the same MAC, another state (the NUD cycle)', '10.244.1.11 dev vbe1 lladdr 0a:58:0a:f4:01:0b STALE ', false],
    ['another address\'s neighbour entry', '192.168.60.1 dev eth0 lladdr 02:fc:00:00:00:05 REACHABLE ', false],
    ['a local route', 'local 10.9.0.1 dev va table local proto kernel scope host src 10.9.0.1 ', false],
    ['an IPv6 link-local prefix (every link has one)', 'fe80::/64 dev vb proto kernel metric 256 pref medium', false],
    ['an IPv6 backend not listed yet gets a neighbour entry', 'fd00:10:244:1::12 dev vbe1 lladdr 0a:58:0a:f4:01:0c REACHABLE ', true],
    ['a listed IPv6 backend\'s neighbour entry goes', 'Deleted fd00:10:244:1::11 dev vbe1 lladdr 0a:58:0a:f4:01:0b STALE ', true],
    ['a listed IPv6 backend, the same MAC (the NUD cycle)', 'fd00:10:244:1::11 dev vbe1 lladdr 0a:58:0a:f4:01:0b router STALE ', false],
    ['an IPv6 prefix route', 'fd00:10:244:3::/64 via fd00:192:168:60::13 dev eth0 metric 1024 pref medium', true],
    ['an IPv6 multicast route', 'multicast ff00::/8 dev vb table local proto kernel metric 256 pref medium', false],
    ['another IPv6 address\'s neighbour entry', 'fe80::1 dev eth0 lladdr 52:54:00:00:00:01 router STALE ', false],
  ])('%s: %s', (_what, line, matters) => {
    expect(monitorLineMatters(line, addrs, listed)).toBe(matters);
  });
});

describe('XDP to local pods: the map follows', () => {
  test('a pod the map will not take (full) stays with the stack, with why, and the others are written', async () => {
    class FullAfterOne extends FakeMap {
      override update(k: { addr: string }, v: XdpPodT): void {
        if (this.data.size >= 1 && !this.data.has(k.addr)) throw new Error('bpf_map_update_elem(vipr_xdp_pods_v1) failed: E2BIG (errno 7)');
        super.update(k, v);
      }
    }
    const map = new FullAfterOne();
    const pods = new XdpPods({ ipv4: map, ipv6: new FakeMap('vipr_xdp_pods6_v1') }, () => Promise.resolve(tables()));
    pods.setBackends(new Set(['10.244.1.11', '10.244.1.12']));
    await pods.refresh();
    pods.stop();
    expect(map.data.size).toBe(1);
  });

  test('writes the planned entries, rewrites only what changed, removes what went', async () => {
    const map = new FakeMap();
    let t = tables();
    const pods = new XdpPods({ ipv4: map, ipv6: new FakeMap('vipr_xdp_pods6_v1') }, () => Promise.resolve(t));
    pods.setBackends(new Set(['10.244.1.11', '10.244.1.12']));
    await pods.refresh();
    expect([...map.data.keys()].sort()).toEqual(['10.244.1.11', '10.244.1.12']);
    expect(map.writes).toBe(2);
    await pods.refresh();
    expect(map.writes).toBe(2); // nothing changed, nothing written
    // The pod behind 10.244.1.12 was recreated: a new MAC.
    t = { ...t, neighbours: new Map([...t.neighbours, ['10.244.1.12 vbe1', '0a:58:0a:f4:01:99']]) };
    await pods.refresh();
    expect(map.writes).toBe(3);
    expect(map.data.get('10.244.1.12')?.pod_mac).toBe('0a:58:0a:f4:01:99');
    pods.setBackends(new Set(['10.244.1.12']));
    await pods.refresh();
    expect([...map.data.keys()]).toEqual(['10.244.1.12']);
    pods.setBackends(new Set());
    await pods.refresh();
    expect(map.data.size).toBe(0);
    pods.stop();
  });

  test('a veth that refuses frames XDP sent it (its pod side takes none) sends its pods back to the stack; other veths stay', async () => {
    const two: NodeTables = {
      links: [...parseLinks(LINKS), { ifindex: 9, name: 'vbe2', mac: 'aa:bb:cc:00:00:09', mtu: 1500, kind: 'veth' }],
      neighbours: new Map([...parseNeighbours(NEIGH), ['10.244.2.11 vbe2', '0a:58:0a:f4:02:0b']]),
      routes: [...tables().routes, ...parseRoutes(JSON.stringify([{ dst: '10.244.2.11', dev: 'vbe2' }]))],
    };
    const maps = fakeMaps();
    let drops = new Map([[7, 5]]);
    const pods = new XdpPods(maps, () => Promise.resolve(two), () => drops);
    // be1 (10.244.1.11, fd00:10:244:1::11) on vbe1 (7), dual-stack; 10.244.2.11 on vbe2 (9).
    pods.setBackends(new Set(['10.244.1.11', 'fd00:10:244:1::11', '10.244.2.11']));
    await pods.refresh();
    expect([[...maps.ipv4.data.keys()].sort(), [...maps.ipv6.data.keys()]]).toEqual([['10.244.1.11', '10.244.2.11'], ['fd00:10:244:1::11']]);
    expect(await pods.checkDrops()).toEqual([]); // the counts when first seen: earlier refusals do not count
    expect(await pods.checkDrops()).toEqual([]);
    drops = new Map([[7, 9]]);
    expect(await pods.checkDrops()).toEqual([7]);
    // The veth's IPv6 pod leaves with its IPv4 one.
    expect([[...maps.ipv4.data.keys()], [...maps.ipv6.data.keys()]]).toEqual([['10.244.2.11'], []]);
    // Still refused on the next refreshes, while that veth is there; a new veth (ifindex) is not.
    await pods.refresh();
    expect([[...maps.ipv4.data.keys()], [...maps.ipv6.data.keys()]]).toEqual([['10.244.2.11'], []]);
    pods.stop();
  });
});


describe('XDP to local pods: IPv6 pods in their own map', () => {
  test('each family\'s pods in its map; a change, a removal and clearing reach both', async () => {
    const maps = fakeMaps();
    let t = tables();
    const asked: string[][] = [];
    const pods = new XdpPods(maps, (families) => {
      asked.push([...families].sort());
      return Promise.resolve(t);
    });
    pods.setBackends(new Set(['10.244.1.11', 'fd00:10:244:1::11', 'fd00:10:244:9::5']));
    await pods.refresh();
    expect(Object.fromEntries(maps.ipv4.data)).toEqual({ '10.244.1.11': { ifindex: 7, len_ok: 1450, pod_mac: '0a:58:0a:f4:01:0b', host_mac: 'aa:bb:cc:00:00:07' } });
    expect(Object.fromEntries(maps.ipv6.data)).toEqual({ 'fd00:10:244:1::11': { ifindex: 7, len_ok: 1450, pod_mac: '0a:58:0a:f4:01:0b', host_mac: 'aa:bb:cc:00:00:07' } });
    // The pod recreated with a new MAC, seen in its IPv6 neighbour entry first: only that entry is rewritten.
    t = { ...t, neighbours: new Map([...t.neighbours, ['fd00:10:244:1::11 vbe1', '0a:58:0a:f4:01:99']]) };
    await pods.refresh();
    expect([maps.ipv4.writes, maps.ipv6.writes, maps.ipv6.data.get('fd00:10:244:1::11')?.pod_mac]).toEqual([1, 2, '0a:58:0a:f4:01:99']);
    pods.setBackends(new Set(['10.244.1.11']));
    await pods.refresh();
    expect([maps.ipv4.data.size, maps.ipv6.data.size]).toEqual([1, 0]);
    // A family's routes are read only while a backend is of it (a node without IPv6 cannot list its routes).
    expect(asked).toEqual([['IPv4', 'IPv6'], ['IPv4', 'IPv6'], ['IPv4']]);
    pods.setBackends(new Set(['10.244.1.11', 'fd00:10:244:1::11']));
    await pods.refresh();
    pods.stop();
    clearXdpPods(maps);
    expect([maps.ipv4.data.size, maps.ipv6.data.size]).toEqual([0, 0]);
  });

  test('neighbour entries are keyed by the canonical address, whatever spelling ip printed', () => {
    const n = parseNeighbours(JSON.stringify([{ dst: 'FD00:10:244:1:0:0:0:11', dev: 'vbe1', lladdr: '0a:58:0a:f4:01:0b', state: ['REACHABLE'] }]));
    expect([...n.keys()]).toEqual(['fd00:10:244:1::11 vbe1']);
  });
});
