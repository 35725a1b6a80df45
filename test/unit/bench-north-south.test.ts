/*
 * The pure parts of `vipr bench --north-south`: the CPU figures from /proc/stat, how XDP attached
 * from `ip -j link`, the frames BPF_PROG_TEST_RUN is given (checksums verified independently),
 * the Services the balancing node serves, and the CLI's answers to options it does not take.
 */
import { buildDesiredState } from '../../src/model/build.js';
import { parseEndpointSlice, parseService } from '../../src/sources/parse.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { ipv4Frame, parseIpv4Frame } from '../../src/bench/frames.js';
import {
  REFUSED_LB_IP, TCP_NODE_PORT, UDP_NODE_PORT, northSouthAgentArgs, northSouthLabName, northSouthManifests, parseSchedstatRunNs, parseXdpDrops, trafficFigures, xdpAttachMode,
} from '../../src/bench/north-south-plan.js';
import { parseNorthSouthModes, run } from '../../src/cli/bench.js';
import { labNameProblem } from '../../src/lab/topology.js';

/** RFC 1071: the ones' complement sum over data holding its own checksum folds to 0xffff. */
function onesSum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) sum += (buf[buf.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function l4Verifies(frame: Buffer): boolean {
  const ip = frame.subarray(14, 34);
  const l4 = frame.subarray(34);
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, ip[9] as number, l4.length >> 8, l4.length & 255])]);
  return onesSum(Buffer.concat([pseudo, l4])) === 0xffff;
}

/* veth's ethtool -S with an XDP program, two receive queues (the sink sums them). */
const ETHTOOL_S = `NIC statistics:
     peer_ifindex: 2
     rx_queue_0_xdp_packets: 1237872
     rx_queue_0_xdp_bytes: 74272316
     rx_queue_0_xdp_drops: 1007279
     rx_queue_1_xdp_drops: 21
     rx_queue_0_xdp_tx: 0
`;

describe('north-south figures', () => {
  test('schedstat: the first field is the ns the thread ran; anything else is refused', () => {
    expect(parseSchedstatRunNs('12345678901 2222 333\n')).toBe(12_345_678_901);
    expect(() => parseSchedstatRunNs('')).toThrow('unexpected schedstat');
    expect(() => parseSchedstatRunNs('x 1 2')).toThrow("unexpected schedstat 'x 1 2'");
  });

  test('the sink counts what its XDP program dropped, every queue; an interface without one is refused', () => {
    expect(parseXdpDrops(ETHTOOL_S)).toBe(1_007_300);
    expect(() => parseXdpDrops('NIC statistics:\n     peer_ifindex: 2\n')).toThrow('no rx_queue_<n>_xdp_drops');
  });

  test('rates over the elapsed time; the node thread\'s CPU per delivered packet and its share of the run', () => {
    const f = trafficFigures({ sent: 2_000_000, elapsedS: 2, delivered: 1_000_000, nodeRunNs: 1.5e9 });
    expect(f).toEqual({ sentPps: 1_000_000, deliveredPps: 500_000, nodeNsPerPacket: 1500, nodeBusy: 0.75 });
    expect(trafficFigures({ sent: 10, elapsedS: 1, delivered: 0, nodeRunNs: 5e6 })).toEqual({ sentPps: 10, deliveredPps: 0, nodeNsPerPacket: 0, nodeBusy: 0.005 });
  });

  test('XDP attach mode from ip -j link: 1 native, 2 generic, none without a program', () => {
    expect(xdpAttachMode('[{"ifname":"eth0","xdp":{"mode":1,"prog":{"id":3}}}]')).toBe('native');
    expect(xdpAttachMode('[{"ifname":"eth0","xdp":{"mode":2,"prog":{"id":3}}}]')).toBe('generic');
    expect(xdpAttachMode('[{"ifname":"eth0"}]')).toBe('none');
  });
});

describe('BPF_PROG_TEST_RUN frames', () => {
  test.each([
    ['UDP', { proto: 'udp' as const, saddr: '192.168.60.100', sport: 20000, daddr: '192.168.60.11', dport: 30053 }],
    ['TCP SYN', { proto: 'tcp' as const, syn: true, saddr: '192.168.60.200', sport: 1024, daddr: '192.168.60.11', dport: 30080 }],
    ['TCP ACK', { proto: 'tcp' as const, syn: false, saddr: '192.168.60.200', sport: 65535, daddr: '10.250.0.9', dport: 80 }],
  ])('%s: IPv4 and L4 checksums verify; addresses and ports read back', (_what, flow) => {
    const frame = ipv4Frame({ src: '02:00:00:00:00:01', dst: '02:00:00:00:00:02' }, flow);
    expect(frame.subarray(0, 12).toString('hex')).toBe('020000000002020000000001');
    expect(onesSum(frame.subarray(14, 34))).toBe(0xffff);
    expect(l4Verifies(frame)).toBe(true);
    expect(parseIpv4Frame(frame)).toEqual({ saddr: flow.saddr, sport: flow.sport, daddr: flow.daddr, dport: flow.dport });
    if (flow.proto === 'tcp') expect(frame[14 + 20 + 13]).toBe(flow.syn ? 0x02 : 0x10);
  });

  test('bad addresses are named', () => {
    expect(() => ipv4Frame({ src: 'nope', dst: '02:00:00:00:00:02' }, { proto: 'udp', saddr: '1.2.3.4', sport: 1, daddr: '1.2.3.5', dport: 2 })).toThrow("'nope' is not a MAC address");
    expect(() => parseIpv4Frame(Buffer.alloc(20))).toThrow('not an IPv4 frame');
  });
});

describe('north-south Services', () => {
  test('NodePorts on the balancing node: UDP (Cluster) to node2\'s pods, TCP (Local) to node1\'s, and a refusing LoadBalancer IP', () => {
    const list = northSouthManifests({ name: 'node1', backends: ['10.244.1.2', '10.244.1.3'] }, { name: 'node2', backends: ['10.244.2.2'] }) as { items: Array<{ kind: string }> };
    const services = list.items.filter((i) => i.kind === 'Service').map((i) => parseService(i));
    const slices = list.items.filter((i) => i.kind === 'EndpointSlice').map((i) => parseEndpointSlice(i));
    const state = buildDesiredState(clusterObjects(services, slices), { name: 'node1', zone: null, ips: ['192.168.60.11'] });
    const text = JSON.stringify(state);
    for (const needle of [String(UDP_NODE_PORT), String(TCP_NODE_PORT), REFUSED_LB_IP, '10.244.2.2', '10.244.1.3']) expect([needle, text.includes(needle)]).toEqual([needle, true]);
  });

  test('agent flags per mode: both BPF modes on the NIC too, XDP native on it only for xdp, socket LB off', () => {
    expect(northSouthAgentArgs('xdp', ['eth0', 'vbe1'], 'nic0')).toEqual(['--iface', 'eth0', '--iface', 'vbe1', '--iface', 'nic0', '--xdp', 'nic0', '--xdp-mode', 'native', '--socket-lb', 'off']);
    expect(northSouthAgentArgs('xdp-redirect', ['eth0'], 'nic0')).toEqual(['--iface', 'eth0', '--iface', 'nic0', '--xdp', 'nic0', '--xdp-mode', 'native', '--xdp-local-backends', 'redirect', '--socket-lb', 'off']);
    expect(northSouthAgentArgs('tc', ['eth0'], 'nic0')).toEqual(['--iface', 'eth0', '--iface', 'nic0', '--socket-lb', 'off']);
    expect(northSouthAgentArgs('iptables', ['eth0'], 'nic0')).toEqual(['--mode', 'iptables', '--iptables-backend', 'legacy']);
  });

  test('lab names are valid lab names', () => {
    expect(labNameProblem(northSouthLabName('bench', 'nftables'))).toBeNull();
  });
});

describe('vipr bench --north-south options', () => {
  test('--modes takes the north-south modes only', () => {
    expect(parseNorthSouthModes(undefined)).toEqual(['xdp', 'xdp-redirect', 'tc', 'iptables', 'nftables', 'ipvs']);
    expect(parseNorthSouthModes('iptables,xdp,xdp')).toEqual(['iptables', 'xdp']);
    expect(() => parseNorthSouthModes('bpf')).toThrow("--modes bpf: 'bpf' is not one of xdp, xdp-redirect, tc, iptables, nftables, ipvs (the modes of --north-south)");
  });

  test('options of the other benchmarks are refused in one line naming them', async () => {
    await expect(run(['--north-south', '--services', '1'])).rejects.toThrow('--services is not an option of --north-south; drop it');
    await expect(run(['--north-south', '--families', 'ipv4'])).rejects.toThrow('--families is not an option of --north-south; drop it');
  });
});
