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

export const RevNat = defineStruct('vipr_revnat', [
  ['vip', 'ipv4'],
  ['port', 'be16'],
  ['pad', 'pad', 2],
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
  ['svc_id', 'u32'],
  ['backend_id', 'u32'],
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

export const U32 = new U32Codec();

export type SvcKeyT = ReturnType<typeof SvcKey.decode>;
export type SvcValueT = ReturnType<typeof SvcValue.decode>;
export type SlotKeyT = ReturnType<typeof SlotKey.decode>;
export type BackendIdT = ReturnType<typeof BackendId.decode>;
export type BackendT = ReturnType<typeof Backend.decode>;
export type RevNatT = ReturnType<typeof RevNat.decode>;
export type CtKeyT = ReturnType<typeof CtKey.decode>;
export type CtValueT = ReturnType<typeof CtValue.decode>;
export type AffinityKeyT = ReturnType<typeof AffinityKey.decode>;
export type AffinityValueT = ReturnType<typeof AffinityValue.decode>;
export type StatValueT = ReturnType<typeof StatValue.decode>;

/* enum vipr_scope */
export const SCOPE_EXTERNAL = 0;
/* enum vipr_svc_flags */
export const SVC_F_AFFINITY = 1 << 0;
export const SVC_F_LOCAL = 1 << 1;
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

/** enum vipr_stat, in order: the index of each counter in vipr_stats_v1. */
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
  revnat: spec('vipr_revnat_v1', U32, RevNat),
  conntrack: spec('vipr_conntrack_v1', CtKey, CtValue),
  affinity: spec('vipr_affinity_v1', AffinityKey, AffinityValue),
  stats: spec('vipr_stats_v1', U32, StatValue, true),
} as const;

export type MapRole = keyof typeof MAPS;
