/*
 * `vipr bench --north-south` as plain data: the modes, the traffic, the Services the balancing
 * node serves, what the JSON holds. Pure, so the CLI, the runner and the tests agree on it.
 *
 * The lab of each mode is a two-node lab (`<prefix>-ns<tag>`, IPv4) with one cable more: a veth
 * pair from the external host `ext` straight to node1 (NODE_NIC), the node's NIC. ext's
 * generator (bench/xdp-flood.c) puts frames on it with XDP live frames, so they land in node1's
 * receive queue as xdp_frames, as from a NIC: no skb exists until node1 builds one (or, with XDP,
 * never). node1 balances them on its own CPU (the NIC's NAPI thread, pinned); an XDP sink drops
 * and counts each frame rewritten for a backend where it lands (the underlay port facing node1,
 * the backends' eth0), on the generator's CPU, the same in every mode. Two kinds of traffic:
 *   udp  UDP to NodePort 30053 (externalTrafficPolicy Cluster, backends on node2 only): 64 flows
 *        from ext, tracked after their first packet; node1 DNATs + SNATs and sends them on over
 *        the underlay (XDP: back out of the interface they came in on).
 *   syn  TCP SYNs to NodePort 30080 (externalTrafficPolicy Local, backends on node1) from 16
 *        addresses × 64,512 ports of the underlay: every packet a new flow until the cycle of
 *        1,032,192 repeats (a SYN flood), DNATed to a pod of node1.
 */
import { z } from 'zod';
import { EXTERNAL_IP, LOAD_BALANCER_CIDR, SERVICE_CIDR, UNDERLAY_PREFIX } from '../lab/topology.js';

/** xdp-redirect: xdp with `--xdp-local-backends redirect` (XDP sends node1's pods their frames itself). */
export type NorthSouthMode = 'xdp' | 'xdp-redirect' | 'tc' | 'iptables' | 'nftables' | 'ipvs';
export const NORTH_SOUTH_MODES: readonly NorthSouthMode[] = ['xdp', 'xdp-redirect', 'tc', 'iptables', 'nftables', 'ipvs'];

/** The modes whose agent attaches XDP to node1's NIC. */
export function isXdpMode(mode: NorthSouthMode): boolean {
  return mode === 'xdp' || mode === 'xdp-redirect';
}

export type NorthSouthTraffic = 'udp' | 'syn';
export const NORTH_SOUTH_TRAFFIC: readonly NorthSouthTraffic[] = ['udp', 'syn'];

const LAB_TAG: Record<NorthSouthMode, string> = { xdp: 'xdp', 'xdp-redirect': 'xdpr', tc: 'tc', iptables: 'ipt', nftables: 'nft', ipvs: 'ipvs' };

export function northSouthLabName(prefix: string, mode: NorthSouthMode): string {
  return `${prefix}-ns${LAB_TAG[mode]}`;
}

export const UDP_NODE_PORT = 30053;
export const TCP_NODE_PORT = 30080;
export const REFUSED_NODE_PORT = 30081;
/** A LoadBalancer IP whose loadBalancerSourceRanges refuse every lab address (the XDP drop path). */
export const REFUSED_LB_IP = `${LOAD_BALANCER_CIDR.split('.').slice(0, 3).join('.')}.9`;
export const REFUSED_LB_PORT = 80;
export const BACKEND_TCP_PORT = 9000;
export const BACKEND_UDP_PORT = 9053;

/** node1's NIC in the north-south labs: ext's cable lands here; XDP attaches here. */
export const NODE_NIC = 'nic0';
/** ext's end of that cable: the generator's interface. */
export const EXT_NIC = 'nic0';

/** What `xdp-flood` sends for each traffic kind: from ext's address up, this many addresses and ports. */
export const FLOOD_SOURCES: Record<NorthSouthTraffic, { srcIps: number; srcPorts: number }> = {
  udp: { srcIps: 1, srcPorts: 64 },
  syn: { srcIps: 16, srcPorts: 64_512 },
};
export const FLOOD_SOURCE_IP = EXTERNAL_IP;
/** BPF_PROG_TEST_RUN's "new" TCP flows come from <prefix>.198 up, addresses the flood never uses. */
export const NEW_FLOW_PREFIX = UNDERLAY_PREFIX;

export interface NorthSouthDurations {
  /** Each traffic run, per mode and round. */
  trafficMs: number;
  /** Sent before each run, not counted: neighbours resolved, caches warm. */
  warmupMs: number;
  /** BPF_PROG_TEST_RUN: runs in each repeated call (a path's warm figure; a single run's overhead). */
  repeat: number;
  /** BPF_PROG_TEST_RUN: single runs per path (new flows: this many distinct clients). */
  newFlows: number;
}

export const FULL_NS_DURATIONS: NorthSouthDurations = { trafficMs: 2000, warmupMs: 300, repeat: 1_000_000, newFlows: 4000 };
/* newFlows stays under the 4,536 SNAT ports a backend has by default: new remote flows need one each. */
export const QUICK_NS_DURATIONS: NorthSouthDurations = { trafficMs: 400, warmupMs: 100, repeat: 100_000, newFlows: 500 };

export interface NorthSouthPlan {
  modes: NorthSouthMode[];
  rounds: number;
  /** Backends per node. */
  backends: number;
  durations: NorthSouthDurations;
  labPrefix: string;
  /** The CPU the generator and the sinks are pinned to (the balancing node gets another one). */
  cpu: number;
}

/** The XDP program's paths whose cost BPF_PROG_TEST_RUN measures. */
export type XdpPath =
  | 'not_service'
  | 'nodeport_new_local'
  | 'nodeport_tracked_local'
  | 'nodeport_new_remote'
  | 'nodeport_tracked_remote'
  | 'reply_rev_nat'
  | 'drop_source_range';
export const XDP_PATHS: readonly XdpPath[] = [
  'not_service', 'nodeport_new_local', 'nodeport_tracked_local', 'nodeport_new_remote', 'nodeport_tracked_remote', 'reply_rev_nat', 'drop_source_range',
];

export const XDP_PATH_TITLES: Record<XdpPath, string> = {
  not_service: 'not a service (SYN to the node\'s port 22): passed',
  nodeport_new_local: 'NodePort, new flow, local backend (Local policy): DNAT, passed to the stack',
  nodeport_tracked_local: 'NodePort, tracked flow, local backend: DNAT from conntrack, passed',
  nodeport_new_remote: 'NodePort, new flow, remote backend: DNAT + SNAT, FIB, sent out',
  nodeport_tracked_remote: 'NodePort, tracked flow, remote backend: DNAT + SNAT, FIB, sent out',
  reply_rev_nat: 'reply from the remote backend: reverse NAT, FIB, sent out to the client',
  drop_source_range: 'LoadBalancer IP refusing the source (loadBalancerSourceRanges): dropped',
};

export interface XdpPathResult {
  path: XdpPath;
  /**
   * Nanoseconds per packet, warm as at line rate: the mean over `warmRuns` runs in one call of the
   * bench's harness (which writes the frame back before each run) and the program, less the
   * harness alone (`harnessNs`). The figure against the target.
   */
  ns: number;
  warmRuns: number;
  /** The harness alone, mean ns per run (already taken off `ns`). */
  harnessNs: number;
  /** Cold: the median single run less a single run's fixed cost (XdpPaths.overheadNs). */
  coldNs: number;
  /** The median single run as the kernel timed it, overhead included. */
  singleRunNs: number;
  verdict: 'aborted' | 'drop' | 'pass' | 'tx' | 'redirect';
  /** Single runs the cold median is taken over. */
  runs: number;
}

/** What xdp-paths-worker prints. */
export interface XdpPaths {
  /** A single run's fixed cost: a non-IPv4 frame's single-run median less its mean over `repeat` runs in one call. */
  overheadNs: number;
  paths: XdpPathResult[];
}

export const XdpPathsRequestSchema = z.object({
  pinDir: z.string().min(1),
  nodeIp: z.string().min(1),
  nodeMac: z.string().min(1),
  clientMac: z.string().min(1),
  /** The external host's address (remote flows come from it: their replies need its neighbour entry). */
  clientIp: z.string().min(1),
  /** The underlay MAC of the backends' node (source of the replies). */
  peerMac: z.string().min(1),
  newFlowPrefix: z.string().min(1),
  udpNodePort: z.number().int(),
  tcpNodePort: z.number().int(),
  refusedLbIp: z.string().min(1),
  refusedLbPort: z.number().int(),
  repeat: z.number().int().positive(),
  newFlows: z.number().int().positive(),
});
export type XdpPathsRequest = z.infer<typeof XdpPathsRequestSchema>;

/** One mode's figures for one kind of traffic (medians over rounds). */
export interface NorthSouthRow {
  mode: NorthSouthMode;
  traffic: NorthSouthTraffic;
  /** Packets per second the generator put on the wire. */
  sentPps: number;
  /** Packets per second that left node1 rewritten for a backend (counted by the sinks). */
  deliveredPps: number;
  /** CPU time of node1's receive thread (the NIC's NAPI thread: XDP, the stack, netfilter, the sends on) per delivered packet, ns. */
  nodeNsPerPacket: number;
  /** That thread's CPU time over the run's length: near 1, node1 was the bottleneck and delivered pps its capacity. */
  nodeBusy: number;
  /** How XDP was attached to node1's NIC: `native`, `generic`, or `none` (modes without XDP). */
  xdp: 'native' | 'generic' | 'none';
  rounds: number;
  /** Each round's delivered packets per second, in round order. */
  deliveredPpsByRound: number[];
  /** Each round's node CPU time per delivered packet, ns, in round order. */
  nodeNsPerPacketByRound: number[];
}

export interface NorthSouthSummary {
  rows: NorthSouthRow[];
  /** The CPU node1's receive thread ran on (the generator and the sinks: NorthSouthPlan.cpu). */
  nodeCpu: number;
  /** BPF_PROG_TEST_RUN per XDP path, in the xdp lab's node after its traffic; null without the xdp mode. */
  xdpPaths: XdpPaths | null;
  unavailable: Array<{ mode: NorthSouthMode; reason: string }>;
  /** Delivered pps of xdp over iptables for each traffic kind, where both ran. */
  xdpOverIptables: Partial<Record<NorthSouthTraffic, number>>;
  /** The same for xdp-redirect. */
  xdpRedirectOverIptables: Partial<Record<NorthSouthTraffic, number>>;
}

type Json = Record<string, unknown>;

const CLUSTER_IP_BASE = SERVICE_CIDR.split('.').slice(0, 3).join('.');

function endpoints(name: string, ips: readonly string[], nodeName: string, port: number, protocol: 'TCP' | 'UDP'): Json {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'default', name: `${name}-ns`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: '', protocol, port }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName })),
  };
}

/**
 * The north-south Services: `ns-udp` (NodePort 30053, Cluster, node2's pods), `ns-tcp` (NodePort
 * 30080, Local, node1's pods) and `ns-refused` (LoadBalancer REFUSED_LB_IP whose source ranges
 * admit no lab address).
 */
export function northSouthManifests(node1: { name: string; backends: readonly string[] }, node2: { name: string; backends: readonly string[] }): Json {
  const svc = (name: string, ip: string, spec: Json): Json => ({
    apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'default', name }, spec: { clusterIP: ip, clusterIPs: [ip], ...spec },
  });
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      svc('ns-udp', `${CLUSTER_IP_BASE}.53`, {
        type: 'NodePort', externalTrafficPolicy: 'Cluster',
        ports: [{ name: '', protocol: 'UDP', port: 53, targetPort: BACKEND_UDP_PORT, nodePort: UDP_NODE_PORT }],
      }),
      endpoints('ns-udp', node2.backends, node2.name, BACKEND_UDP_PORT, 'UDP'),
      svc('ns-tcp', `${CLUSTER_IP_BASE}.80`, {
        type: 'NodePort', externalTrafficPolicy: 'Local',
        ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: BACKEND_TCP_PORT, nodePort: TCP_NODE_PORT }],
      }),
      endpoints('ns-tcp', node1.backends, node1.name, BACKEND_TCP_PORT, 'TCP'),
      {
        ...svc('ns-refused', `${CLUSTER_IP_BASE}.81`, {
          type: 'LoadBalancer', externalTrafficPolicy: 'Cluster', loadBalancerSourceRanges: ['203.0.113.0/24'],
          ports: [{ name: '', protocol: 'TCP', port: REFUSED_LB_PORT, targetPort: BACKEND_TCP_PORT, nodePort: REFUSED_NODE_PORT }],
        }),
        status: { loadBalancer: { ingress: [{ ip: REFUSED_LB_IP }] } },
      },
      endpoints('ns-refused', node1.backends, node1.name, BACKEND_TCP_PORT, 'TCP'),
    ],
  };
}

/**
 * A mode's `vipr run` flags beyond the common ones (manifests, pin dir, node name and IP): the BPF
 * modes on every interface and the NIC, XDP in native mode on the NIC (its peer and the sinks
 * have NAPI, so native XDP_TX and XDP_REDIRECT deliver).
 */
export function northSouthAgentArgs(mode: NorthSouthMode, ifaces: readonly string[], nic: string): string[] {
  const all = [...ifaces, nic].flatMap((i) => ['--iface', i]);
  switch (mode) {
    case 'xdp':
      return [...all, '--xdp', nic, '--xdp-mode', 'native', '--socket-lb', 'off'];
    case 'xdp-redirect':
      // The pods' eth0 poll (NAPI: their sinks are XDP programs), so veth delivers XDP frames there.
      return [...all, '--xdp', nic, '--xdp-mode', 'native', '--xdp-local-backends', 'redirect', '--socket-lb', 'off'];
    case 'tc':
      return [...all, '--socket-lb', 'off'];
    case 'iptables':
      return ['--mode', 'iptables', '--iptables-backend', 'legacy'];
    case 'nftables':
      return ['--mode', 'nftables'];
    case 'ipvs':
      return ['--mode', 'ipvs'];
  }
}

/** `/proc/<pid>/schedstat`'s first field: the ns the task has run on a CPU (exact, not tick-sampled). */
export function parseSchedstatRunNs(text: string): number {
  const ns = Number(text.trim().split(/\s+/)[0]);
  if (!Number.isFinite(ns) || text.trim() === '') throw new Error(`unexpected schedstat '${text.trim().slice(0, 80)}'`);
  return ns;
}

/** veth's `ethtool -S`: frames its XDP program dropped, every receive queue (the sink's count). */
export function parseXdpDrops(ethtoolStats: string): number {
  let n = 0;
  let found = false;
  for (const m of ethtoolStats.matchAll(/^\s*rx_queue_\d+_xdp_drops: (\d+)$/gm)) {
    n += Number(m[1]);
    found = true;
  }
  if (!found) throw new Error('ethtool -S shows no rx_queue_<n>_xdp_drops: not a veth with an XDP program');
  return n;
}

/** Figures of one traffic run from the counters around it. */
export function trafficFigures(o: { sent: number; elapsedS: number; delivered: number; nodeRunNs: number }): {
  sentPps: number; deliveredPps: number; nodeNsPerPacket: number; nodeBusy: number;
} {
  return {
    sentPps: o.elapsedS > 0 ? o.sent / o.elapsedS : 0,
    deliveredPps: o.elapsedS > 0 ? o.delivered / o.elapsedS : 0,
    nodeNsPerPacket: o.delivered > 0 ? o.nodeRunNs / o.delivered : 0,
    nodeBusy: o.elapsedS > 0 ? o.nodeRunNs / 1e9 / o.elapsedS : 0,
  };
}

/** `ip -j link show`'s xdp.mode: 1 driver (native), 2 skb (generic); anything else is no XDP of ours. */
export function xdpAttachMode(ipLinkJson: string): NorthSouthRow['xdp'] {
  const links = JSON.parse(ipLinkJson) as Array<{ xdp?: { mode?: number } }>;
  const mode = links[0]?.xdp?.mode;
  return mode === 1 ? 'native' : mode === 2 ? 'generic' : 'none';
}
