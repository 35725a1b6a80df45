/*
 * Codecs for every map key and value of bpf/include/vipr_types.h, and the list of vipr's maps.
 * Field names are the C member names (checked against BTF by test/bpf/btf-layout.test.ts).
 */
import { defineStruct, U32Codec, type Codec } from './codec.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

export const SvcKey = defineStruct('vipr_svc_key', [
  ['vip', 'ipv4'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['scope', 'u8'],
] as const);

export const SvcValue = defineStruct('vipr_svc_value', [
  ['svc_id', 'u32'],
  ['backend_count', 'u16'],
  ['flags', 'u16'],
  ['affinity_timeout', 'u32'],
  ['scheduler', 'u8'],
  ['pad', 'pad', 3],
] as const);

export const SlotKey = defineStruct('vipr_slot_key', [
  ['svc_id', 'u32'],
  ['slot', 'u32'],
] as const);

export const BackendId = defineStruct('vipr_backend_id', [['id', 'u32']] as const);

export const Backend = defineStruct('vipr_backend', [
  ['addr', 'ipv4'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['flags', 'u8'],
] as const);

export const CtKey = defineStruct('vipr_ct_key', [
  ['saddr', 'ipv4'],
  ['daddr', 'ipv4'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['dir', 'u8'],
  ['pad', 'pad', 2],
] as const);

export const CtValue = defineStruct('vipr_ct_value', [
  ['created_ns', 'u64'],
  ['last_seen_ns', 'u64'],
  ['nat_addr', 'ipv4'],
  ['nat_port', 'be16'],
  ['flags', 'u8'],
  ['tcp_flags', 'u8'],
  ['snat_addr', 'ipv4'],
  ['snat_port', 'be16'],
  ['pad', 'pad', 2],
  ['svc_id', 'u32'],
  ['backend_id', 'u32'],
] as const);

export const NodeIp = defineStruct('vipr_node_ip', [['addr', 'ipv4']] as const);

export const SourceRange = defineStruct('vipr_source_range', [
  ['prefixlen', 'u32'],
  ['svc_id', 'u32'],
  ['addr', 'ipv4'],
] as const);

export const SchedState = defineStruct('vipr_sched_state', [
  ['rr_next', 'u32'],
  ['pad', 'pad', 4],
] as const);

export const BackendConns = defineStruct('vipr_backend_conns', [
  ['active', 'i32'],
  ['pad', 'pad', 4],
] as const);

/*
 * XDP's flow cache entry (struct vipr_xdp_flow): the agent only empties that map, so the next hop
 * it holds (struct vipr_nexthop: expiry, egress, MTU, MACs) is kept as bytes.
 */
export const XdpFlow = defineStruct('vipr_xdp_flow', [
  ['nh', 'pad', 32],
  ['saddr', 'ipv4'],
  ['daddr', 'ipv4'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['stat', 'u8'],
  ['pad', 'pad', 3],
] as const);

/* IPv6's flow cache entry (struct vipr_xdp_flow6), kept as bytes where the agent only empties it. */
export const XdpFlow6 = defineStruct('vipr_xdp_flow6', [
  ['nh', 'pad', 32],
  ['saddr', 'ipv6'],
  ['daddr', 'ipv6'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['stat', 'u8'],
  ['pad', 'pad', 3],
] as const);

/* This node's pods that XDP sends frames to itself (struct vipr_xdp_pod; src/bpf/xdp-pods.ts writes them). */
export const XdpPodKey = defineStruct('vipr_xdp_pod_key', [['addr', 'ipv4']] as const);
export const XdpPod6Key = defineStruct('vipr_xdp_pod6_key', [['addr', 'ipv6']] as const);

export const XdpPod = defineStruct('vipr_xdp_pod', [
  ['ifindex', 'u32'],
  ['len_ok', 'u16'],
  ['pod_mac', 'mac'],
  ['host_mac', 'mac'],
  ['pad', 'pad', 2],
] as const);

/* Until when a backend's SNAT port range was found full (struct vipr_snat_full, keyed by a reply key with port 0). */
export const SnatFull = defineStruct('vipr_snat_full', [['until_ns', 'u64']] as const);

export const Config = defineStruct('vipr_config', [
  ['snat_addr', 'ipv4'],
  ['cluster_cidr', 'ipv4'],
  ['cluster_mask', 'ipv4'],
  ['snat_port_min', 'u16'],
  ['snat_port_max', 'u16'],
] as const);

export const AffinityKey = defineStruct('vipr_affinity_key', [
  ['svc_id', 'u32'],
  ['client', 'ipv4'],
] as const);

export const AffinityValue = defineStruct('vipr_affinity_value', [
  ['last_seen_ns', 'u64'],
  ['backend_id', 'u32'],
  ['pad', 'pad', 4],
] as const);

export const StatValue = defineStruct('vipr_stat_value', [
  ['packets', 'u64'],
  ['bytes', 'u64'],
] as const);

export const IcmpBucket = defineStruct('vipr_icmp_bucket', [
  ['refilled_ns', 'u64'],
  ['tokens', 'u32'],
  ['pad', 'pad', 4],
] as const);

export const SockRevKey = defineStruct('vipr_sock_rev_key', [
  ['cookie', 'u64'],
  ['addr', 'ipv4'],
  ['port', 'be16'],
  ['pad', 'pad', 2],
] as const);

export const SockRevValue = defineStruct('vipr_sock_rev_value', [
  ['addr', 'ipv4'],
  ['port', 'be16'],
  ['pad', 'pad', 2],
  ['backend_id', 'u32'],
] as const);

export const SockAffinityKey = defineStruct('vipr_sock_affinity_key', [
  ['netns_cookie', 'u64'],
  ['svc_id', 'u32'],
  ['pad', 'pad', 4],
] as const);

/** The socket-LB object's `.rodata` (its `const volatile` settings), written before load. */
export const SockConfig = defineStruct('vipr_sock_config', [
  ['host_netns_cookie', 'u64'],
  ['host_ns_only', 'u8'],
  ['nodeport_loopback', 'u8'],
  ['pad', 'pad', 6],
] as const);

/** The conntrack GC object's `.rodata` (its `const volatile` timeouts), written before load. */
export const CtTimeoutsLayout = defineStruct('vipr_ct_timeouts', [
  ['syn_ns', 'u64'],
  ['established_ns', 'u64'],
  ['closing_ns', 'u64'],
  ['udp_ns', 'u64'],
] as const);

/** What the conntrack GC iterator writes as it goes, the last one being the pass's result. */
export const CtGcReport = defineStruct('vipr_ct_gc_report', [
  ['seen', 'u64'],
  ['deleted', 'u64'],
  ['kept', 'u64'],
] as const);

export const FragKey = defineStruct('vipr_frag_key', [
  ['saddr', 'ipv4'],
  ['daddr', 'ipv4'],
  ['id', 'be16'],
  ['proto', 'u8'],
  ['pad', 'pad', 1],
] as const);

export const FragPorts = defineStruct('vipr_frag_ports', [
  ['sport', 'be16'],
  ['dport', 'be16'],
] as const);

/*
 * IPv6 (the end of vipr_types.h): the same shapes with 16-byte addresses, so each decodes to the
 * same TypeScript type as its IPv4 twin (addresses are text either way) and code that only moves
 * entries around serves both families.
 */
export const Svc6Key = defineStruct('vipr_svc6_key', [
  ['vip', 'ipv6'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['scope', 'u8'],
] as const);

export const Backend6 = defineStruct('vipr_backend6', [
  ['addr', 'ipv6'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['flags', 'u8'],
] as const);

export const Ct6Key = defineStruct('vipr_ct6_key', [
  ['saddr', 'ipv6'],
  ['daddr', 'ipv6'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['dir', 'u8'],
  ['pad', 'pad', 2],
] as const);

export const Ct6Value = defineStruct('vipr_ct6_value', [
  ['created_ns', 'u64'],
  ['last_seen_ns', 'u64'],
  ['nat_addr', 'ipv6'],
  ['nat_port', 'be16'],
  ['flags', 'u8'],
  ['tcp_flags', 'u8'],
  ['snat_addr', 'ipv6'],
  ['snat_port', 'be16'],
  ['pad', 'pad', 2],
  ['svc_id', 'u32'],
  ['backend_id', 'u32'],
] as const);

export const NodeIp6 = defineStruct('vipr_node_ip6', [['addr', 'ipv6']] as const);

export const SourceRange6 = defineStruct('vipr_source_range6', [
  ['prefixlen', 'u32'],
  ['svc_id', 'u32'],
  ['addr', 'ipv6'],
] as const);

export const Config6 = defineStruct('vipr_config6', [
  ['snat_addr', 'ipv6'],
  ['cluster_cidr', 'ipv6'],
  ['cluster_mask', 'ipv6'],
] as const);

export const Affinity6Key = defineStruct('vipr_affinity6_key', [
  ['svc_id', 'u32'],
  ['client', 'ipv6'],
] as const);

export const Frag6Key = defineStruct('vipr_frag6_key', [
  ['saddr', 'ipv6'],
  ['daddr', 'ipv6'],
  ['id', 'be32'],
  ['proto', 'u8'],
  ['pad', 'pad', 3],
] as const);

export const SockRev6Key = defineStruct('vipr_sock_rev6_key', [
  ['cookie', 'u64'],
  ['addr', 'ipv6'],
  ['port', 'be16'],
  ['pad', 'pad', 6],
] as const);

export const SockRev6Value = defineStruct('vipr_sock_rev6_value', [
  ['addr', 'ipv6'],
  ['port', 'be16'],
  ['pad', 'pad', 2],
  ['backend_id', 'u32'],
] as const);

export const U32 = new U32Codec();

export type SvcKeyT = ReturnType<typeof SvcKey.decode>;
export type SvcValueT = ReturnType<typeof SvcValue.decode>;
export type SlotKeyT = ReturnType<typeof SlotKey.decode>;
export type BackendIdT = ReturnType<typeof BackendId.decode>;
export type BackendT = ReturnType<typeof Backend.decode>;
export type CtKeyT = ReturnType<typeof CtKey.decode>;
export type CtValueT = ReturnType<typeof CtValue.decode>;
export type AffinityKeyT = ReturnType<typeof AffinityKey.decode>;
export type AffinityValueT = ReturnType<typeof AffinityValue.decode>;
export type StatValueT = ReturnType<typeof StatValue.decode>;
export type IcmpBucketT = ReturnType<typeof IcmpBucket.decode>;
export type SockRevKeyT = ReturnType<typeof SockRevKey.decode>;
export type SockRevValueT = ReturnType<typeof SockRevValue.decode>;
export type SockAffinityKeyT = ReturnType<typeof SockAffinityKey.decode>;
export type SockConfigT = ReturnType<typeof SockConfig.decode>;
export type NodeIpT = ReturnType<typeof NodeIp.decode>;
export type SourceRangeT = ReturnType<typeof SourceRange.decode>;
export type SchedStateT = ReturnType<typeof SchedState.decode>;
export type BackendConnsT = ReturnType<typeof BackendConns.decode>;
export type ConfigT = ReturnType<typeof Config.decode>;
export type XdpFlowT = ReturnType<typeof XdpFlow.decode>;
export type XdpFlow6T = ReturnType<typeof XdpFlow6.decode>;
export type XdpPodKeyT = ReturnType<typeof XdpPodKey.decode>;
export type XdpPod6KeyT = ReturnType<typeof XdpPod6Key.decode>;
export type XdpPodT = ReturnType<typeof XdpPod.decode>;
export type Config6T = ReturnType<typeof Config6.decode>;
export type Frag6KeyT = ReturnType<typeof Frag6Key.decode>;

/* enum vipr_scope */
export const SCOPE_EXTERNAL = 0;
/* enum vipr_svc_flags */
export const SCOPE_INTERNAL = 1;
/* VIPR_NODEPORT_VIP: a NodePort frontend answers on every node address */
export const NODEPORT_VIP = '0.0.0.0';
/* The same for IPv6 frontends (vipr_svc6_key.vip all zero) */
export const NODEPORT_VIP6 = '::';
export const SVC_F_AFFINITY = 1 << 0;
export const SVC_F_LOCAL = 1 << 1;
export const SVC_F_EXTERNAL = 1 << 2;
export const SVC_F_SOURCE_RANGES = 1 << 3;
export const SVC_F_REJECT = 1 << 4;
export const SVC_F_DSR = 1 << 5;
/* enum vipr_scheduler, in order */
export const SCHEDULERS = ['random', 'rr', 'sh', 'maglev', 'lc'] as const;
/* enum vipr_backend_flags */
export const BE_F_TERMINATING = 1 << 0;
export const BE_F_LOCAL = 1 << 1;
/* enum vipr_ct_dir */
export const CT_FORWARD = 0;
export const CT_REPLY = 1;
/* enum vipr_ct_flags */
export const CT_F_SEEN_REPLY = 1 << 0;
export const CT_F_CLOSING = 1 << 1;
export const CT_F_SNAT = 1 << 2;
export const CT_F_REDIRECT = 1 << 3;
export const CT_F_DSR = 1 << 4;

/** enum vipr_stat, in order: the index of each counter in vipr_stats_v2 (which has spare slots). */
export const STAT_NAMES = [
  'packets',
  'pass_non_ipv4',
  'pass_not_service',
  'fragment',
  'service_hit',
  'ct_hit',
  'ct_new',
  'dnat',
  'rev_nat',
  'drop_no_backend',
  'malformed',
  'drop_no_slot',
  'drop_ct_full',
  'drop_rewrite',
  'snat',
  'affinity_hit',
  'drop_source_range',
  'reject',
  'drop_no_snat_port',
  'drop_fib',
  'xdp_pass',
  'xdp_tx',
  'xdp_redirect',
  'drop_icmp_rate_limit',
  'sock_xlate',
  'sock_rev_nat',
  'sock_reject',
  'sock_destroyed',
  'ct_promoted',
  'ct_tcp_full',
  'drop_frag_not_found',
  'icmp_error_nat',
  'pulled',
  'drop_ct_tuple_taken',
  'ipv6_ext_hdr_limit',
  'pass_ipv6_no_program',
  'dsr_encap',
  'dsr_decap',
  'drop_dsr_mtu',
  'xdp_flow_cache_hit',
  'snat_port_walk',
  'tc_xdp_done',
] as const;
export type StatName = (typeof STAT_NAMES)[number];

export interface MapSpec<K, V> {
  /** The pinned name: `vipr_<what>_v<layout>`. */
  name: string;
  key: Codec<K>;
  value: Codec<V>;
  perCpu: boolean;
}

function spec<K, V>(name: string, key: Codec<K>, value: Codec<V>, perCpu = false): MapSpec<K, V> {
  return { name, key, value, perCpu };
}

/** Every map of the datapath object, by role. */
export const MAPS = {
  services: spec('vipr_services_v1', SvcKey, SvcValue),
  slots: spec('vipr_slots_v1', SlotKey, BackendId),
  backends: spec('vipr_backends_v1', BackendId, Backend),
  ctTcp: spec('vipr_ct_tcp_v1', CtKey, CtValue),
  ctTcpSyn: spec('vipr_ct_tcp_syn_v1', CtKey, CtValue),
  ctUdp: spec('vipr_ct_udp_v1', CtKey, CtValue),
  affinity: spec('vipr_affinity_v1', AffinityKey, AffinityValue),
  nodeIps: spec('vipr_node_ips_v1', NodeIp, U32),
  sourceRanges: spec('vipr_source_ranges_v1', SourceRange, U32),
  sched: spec('vipr_sched_v1', U32, SchedState),
  backendConns: spec('vipr_backend_conns_v1', BackendId, BackendConns),
  config: spec('vipr_config_v1', U32, Config),
  stats: spec('vipr_stats_v2', U32, StatValue, true),
  icmpBucket: spec('vipr_icmp_bucket_v1', U32, IcmpBucket, true),
  sockRev: spec('vipr_sock_rev_v1', SockRevKey, SockRevValue),
  sockAffinity: spec('vipr_sock_affinity_v1', SockAffinityKey, AffinityValue),
  fragments: spec('vipr_fragments_v1', FragKey, FragPorts),
  services6: spec('vipr_services6_v1', Svc6Key, SvcValue),
  backends6: spec('vipr_backends6_v1', BackendId, Backend6),
  ctTcp6: spec('vipr_ct6_tcp_v1', Ct6Key, Ct6Value),
  ctTcpSyn6: spec('vipr_ct6_tcp_syn_v1', Ct6Key, Ct6Value),
  ctUdp6: spec('vipr_ct6_udp_v1', Ct6Key, Ct6Value),
  affinity6: spec('vipr_affinity6_v1', Affinity6Key, AffinityValue),
  nodeIps6: spec('vipr_node_ips6_v1', NodeIp6, U32),
  sourceRanges6: spec('vipr_source_ranges6_v1', SourceRange6, U32),
  config6: spec('vipr_config6_v1', U32, Config6),
  fragments6: spec('vipr_fragments6_v1', Frag6Key, FragPorts),
  sockRev6: spec('vipr_sock_rev6_v1', SockRev6Key, SockRev6Value),
  xdpFlows: spec('vipr_xdp_flows_v1', CtKey, XdpFlow),
  xdpFlows6: spec('vipr_xdp_flows6_v1', Ct6Key, XdpFlow6),
  xdpPods: spec('vipr_xdp_pods_v1', XdpPodKey, XdpPod),
  xdpPods6: spec('vipr_xdp_pods6_v1', XdpPod6Key, XdpPod),
  snatFull: spec('vipr_snat_full_v1', CtKey, SnatFull),
  snatFull6: spec('vipr_snat_full6_v1', Ct6Key, SnatFull),
} as const;

export type MapRole = keyof typeof MAPS;

/**
 * The conntrack maps (struct vipr_ct_key in vipr_types.h says why three), IPv4's then IPv6's. An
 * IPv6 map's entries decode to the same shape (addresses as text), so flows of both families are
 * read, flushed and collected by the same code.
 */
export const CT_ROLES = ['ctTcp', 'ctTcpSyn', 'ctUdp', 'ctTcp6', 'ctTcpSyn6', 'ctUdp6'] as const;
export type CtRole = (typeof CT_ROLES)[number];
/** What each conntrack map holds, either family: established TCP, half-open TCP, UDP. */
export const CT_SIZE_KIND: Record<CtRole, 'tcp' | 'tcpSyn' | 'udp'> = {
  ctTcp: 'tcp', ctTcpSyn: 'tcpSyn', ctUdp: 'udp', ctTcp6: 'tcp', ctTcpSyn6: 'tcpSyn', ctUdp6: 'udp',
};
