/*
 * What the renderers need to know about the node and kube-proxy's configuration, with
 * kube-proxy's defaults for the knobs most users never set.
 *
 * The options hold both families (kube-proxy's dual-stack flags: `--cluster-cidr
 * 10.244.0.0/16,fd00:10:244::/56`); resolveOptions() picks one family's share, as kube-proxy
 * hands each of its two proxiers its own local detector, node IPs and NodePortAddresses
 * (proxyutil.NewNodePortAddresses: a family without a CIDR of its own matches every address).
 */
import { cidrHas, familyOf, parseCidr, type IpFamily } from '../model/ip.js';

export type IpvsScheduler = 'rr' | 'wrr' | 'lc' | 'wlc' | 'sh' | 'dh' | 'sed' | 'nq';

export interface RenderOptions {
  /**
   * --cluster-cidr, both families: traffic from outside its family's CIDR to a cluster IP is
   * masqueraded; a family without one has no local detector.
   */
  clusterCIDRs: string[];
  /** --masquerade-all. */
  masqueradeAll: boolean;
  /** The node's addresses of both families; each family's first is its primary node IP (kube-proxy's nodeIP). */
  nodeIPs: string[];
  /** --nodeport-addresses as CIDRs of both families; none of a family = NodePorts on every local address of it. */
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
  /** ServiceCIDRs of both families (nftables mode drops traffic to unallocated cluster IPs in them). */
  serviceCIDRs?: string[];
}

/** One family's share of the options: what that family's proxier is configured with. */
export interface ResolvedOptions {
  family: IpFamily;
  /** The family's --cluster-cidr, or null (no local detector). */
  clusterCIDR: string | null;
  masqueradeAll: boolean;
  nodeIPs: string[];
  /** kube-proxy's nodeIP: the primary node address, used for loadBalancerSourceRanges. */
  primaryNodeIP: string | null;
  nodePortAddressesMatchAll: boolean;
  /** Node IPs NodePorts listen on (nodePortAddresses applied; 127.0.0.1 included if matched). */
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

/** Whether `ip` is a loopback address of its family (127.0.0.0/8, ::1). */
export function isLoopbackIp(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

/** The addresses or CIDRs of `family` among `items`, in order. */
function ofFamily(items: readonly string[], family: IpFamily): string[] {
  return items.filter((item) => familyOf(item.split('/')[0] ?? '') === family);
}

/**
 * `family`'s share of the options (IPv4 by default). IPv6 never has localhost NodePorts:
 * kube-proxy's route_localnet trick exists only for IPv4 (ContainsIPv4Loopback).
 */
export function resolveOptions(opts: RenderOptions, family: IpFamily = 'IPv4'): ResolvedOptions {
  const nodeIPs = ofFamily(opts.nodeIPs, family);
  const cidrs = ofFamily(opts.nodePortAddresses, family).map(parseCidr);
  const matchAll = cidrs.length === 0;
  const nodePortIPs = matchAll ? [...nodeIPs] : nodeIPs.filter((ip) => cidrs.some((c) => cidrHas(c, ip)));
  // kube-proxy turns localhost NodePorts off when --nodeport-addresses excludes 127.0.0.1.
  const containsLoopback = family === 'IPv4' && (matchAll || cidrs.some((c) => cidrHas(c, '127.0.0.1')));
  if (!matchAll && containsLoopback && !nodePortIPs.some(isLoopbackIp)) nodePortIPs.push('127.0.0.1');
  return {
    family,
    clusterCIDR: ofFamily(opts.clusterCIDRs, family)[0] ?? null,
    masqueradeAll: opts.masqueradeAll,
    nodeIPs,
    primaryNodeIP: nodeIPs[0] ?? null,
    nodePortAddressesMatchAll: matchAll,
    nodePortIPs,
    ipvsScheduler: opts.ipvsScheduler,
    masqueradeMark: opts.masqueradeMark ?? goHexMark(opts.masqueradeBit ?? 14),
    localhostNodePorts: (opts.localhostNodePorts ?? true) && containsLoopback,
    randomFully: opts.randomFully ?? true,
    conntrackTCPLiberal: opts.conntrackTCPLiberal ?? false,
    nfacct: opts.nfacct ?? false,
    serviceCIDRs: ofFamily(opts.serviceCIDRs ?? [], family),
  };
}
