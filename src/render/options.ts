/*
 * What the renderers need to know about the node and kube-proxy's configuration, with
 * kube-proxy's defaults for the knobs most users never set.
 */
import { cidrContains, isLoopback, parseIpv4Cidr } from '../model/ipv4.js';

export type IpvsScheduler = 'rr' | 'wrr' | 'lc' | 'wlc' | 'sh' | 'dh' | 'sed' | 'nq';

export interface RenderOptions {
  /** --cluster-cidr: traffic from outside it to a cluster IP is masqueraded; null = no local detector. */
  clusterCIDR: string | null;
  /** --masquerade-all. */
  masqueradeAll: boolean;
  /** The node's IPv4 addresses; the first is the primary node IP (kube-proxy's nodeIP). */
  nodeIPs: string[];
  /** --nodeport-addresses as CIDRs; empty = NodePorts on every local address. */
  nodePortAddresses: string[];
  /** --ipvs-scheduler. */
  ipvsScheduler: IpvsScheduler;
  /** --iptables-masquerade-bit; default 14. */
  masqueradeBit?: number;
  /**
   * The mark string itself. kube-proxy formats 1<<bit with Go's %#08x ("0x00004000"); its
   * unit tests hard-code "0x4000". Overrides masqueradeBit when set.
   */
  masqueradeMark?: string;
  /** --iptables-localhost-nodeports (iptables mode); default true, as kube-proxy. */
  localhostNodePorts?: boolean;
  /** iptables supports MASQUERADE --random-fully (any iptables >= 1.6.2); default true. */
  randomFully?: boolean;
  /** net.netfilter.nf_conntrack_tcp_be_liberal is set: kube-proxy then skips the INVALID drop. */
  conntrackTCPLiberal?: boolean;
  /**
   * The nfacct counters kube-proxy creates exist (ct_state_invalid_dropped_pkts,
   * localhost_nps_accepted_pkts). Default false: rules naming a missing counter make
   * iptables-restore fail, and vipr does not create them.
   */
  nfacct?: boolean;
  /** ServiceCIDRs (nftables mode drops traffic to unallocated cluster IPs in them). */
  serviceCIDRs?: string[];
}

export interface ResolvedOptions {
  clusterCIDR: string | null;
  masqueradeAll: boolean;
  nodeIPs: string[];
  /** kube-proxy's nodeIP: the primary node address, used for loadBalancerSourceRanges. */
  primaryNodeIP: string | null;
  nodePortAddressesMatchAll: boolean;
  /** Node IPs NodePorts listen on (nodePortAddresses applied; loopback included if matched). */
  nodePortIPs: string[];
  ipvsScheduler: IpvsScheduler;
  masqueradeMark: string;
  localhostNodePorts: boolean;
  randomFully: boolean;
  conntrackTCPLiberal: boolean;
  nfacct: boolean;
  serviceCIDRs: string[];
}

/** Go's fmt.Sprintf("%#08x", v): the width counts digits only, so 0x4000 -> "0x00004000". */
export function goHexMark(bit: number): string {
  return `0x${(2 ** bit).toString(16).padStart(8, '0')}`;
}

export function resolveOptions(opts: RenderOptions): ResolvedOptions {
  const matchAll = opts.nodePortAddresses.length === 0;
  const cidrs = opts.nodePortAddresses.map(parseIpv4Cidr);
  const nodePortIPs = matchAll
    ? [...opts.nodeIPs]
    : opts.nodeIPs.filter((ip) => cidrs.some((c) => cidrContains(c, ip)));
  // kube-proxy turns localhost NodePorts off when --nodeport-addresses excludes 127.0.0.1.
  const containsLoopback = matchAll || cidrs.some((c) => cidrContains(c, '127.0.0.1'));
  if (!matchAll && containsLoopback && !nodePortIPs.some(isLoopback)) nodePortIPs.push('127.0.0.1');
  return {
    clusterCIDR: opts.clusterCIDR,
    masqueradeAll: opts.masqueradeAll,
    nodeIPs: [...opts.nodeIPs],
    primaryNodeIP: opts.nodeIPs[0] ?? null,
    nodePortAddressesMatchAll: matchAll,
    nodePortIPs,
    ipvsScheduler: opts.ipvsScheduler,
    masqueradeMark: opts.masqueradeMark ?? goHexMark(opts.masqueradeBit ?? 14),
    localhostNodePorts: (opts.localhostNodePorts ?? true) && containsLoopback,
    randomFully: opts.randomFully ?? true,
    conntrackTCPLiberal: opts.conntrackTCPLiberal ?? false,
    nfacct: opts.nfacct ?? false,
    serviceCIDRs: opts.serviceCIDRs ?? [],
  };
}
