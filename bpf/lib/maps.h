/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vipr's maps. Every map is pinned by name under the loader's pin root (/sys/fs/bpf/vipr), so
 * programs of a new agent reuse the state of the previous one and a restart moves no flow.
 * Names carry the layout version of vipr_types.h.
 */
#ifndef __VIPR_MAPS_H
#define __VIPR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "vipr_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_svc_key);
	__type(value, struct vipr_svc_value);
	__uint(max_entries, VIPR_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_services_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_slot_key);
	__type(value, struct vipr_backend_id);
	__uint(max_entries, VIPR_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_slots_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_backend_id);
	__type(value, struct vipr_backend);
	__uint(max_entries, VIPR_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_backends_v1 SEC(".maps");

#ifdef VIPR_LAYOUT_PREVIOUS
/*
 * Test builds only (make: dist/bpf-test/tc_lb_previous.bpf.o): the conntrack of the layout before
 * the three maps, one LRU for every flow, so test/e2e/upgrade.test.ts can run an agent of that
 * layout and upgrade it. The three names below all reach it; VIPR_CT_ONE_MAP tells conntrack.h.
 */
#define VIPR_CT_ONE_MAP 1
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_ct_value);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_conntrack_v1 SEC(".maps");
#define vipr_ct_tcp_v1 vipr_conntrack_v1
#define vipr_ct_tcp_syn_v1 vipr_conntrack_v1
#define vipr_ct_udp_v1 vipr_conntrack_v1
#else
#define VIPR_CT_ONE_MAP 0
/*
 * Conntrack, in three maps (see struct vipr_ct_key): established TCP flows in a plain hash that
 * nothing evicts, half-open TCP flows and UDP flows in LRUs of their own. The agent sets the
 * sizes before load (bpf_map__set_max_entries); a pinned map of another size is migrated into a
 * new one (src/bpf/migrate.ts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_ct_value);
	__uint(max_entries, VIPR_MAX_CT_TCP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct_tcp_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_ct_value);
	__uint(max_entries, VIPR_MAX_CT_TCP_SYN);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct_tcp_syn_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_ct_value);
	__uint(max_entries, VIPR_MAX_CT_UDP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct_udp_v1 SEC(".maps");
#endif /* VIPR_LAYOUT_PREVIOUS */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_affinity_key);
	__type(value, struct vipr_affinity_value);
	__uint(max_entries, VIPR_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_affinity_v1 SEC(".maps");

/* Addresses of this node that answer NodePorts (--nodeport-addresses applied by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_node_ip);
	__type(value, __u32); /* reserved flags, 0 */
	__uint(max_entries, VIPR_MAX_NODE_IPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_node_ips_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct vipr_source_range);
	__type(value, __u32); /* reserved flags, 0 */
	__uint(max_entries, VIPR_MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_source_ranges_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* svc_id */
	__type(value, struct vipr_sched_state);
	__uint(max_entries, VIPR_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_sched_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_backend_id);
	__type(value, struct vipr_backend_conns);
	__uint(max_entries, VIPR_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_backend_conns_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vipr_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_config_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* enum vipr_stat */
	__type(value, struct vipr_stat_value);
	__uint(max_entries, VIPR_STAT_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_stats_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* 0 */
	__type(value, struct vipr_icmp_bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_icmp_bucket_v1 SEC(".maps");

/* Backends whose SNAT port range a walk found full (struct vipr_snat_full), per family. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_snat_full);
	__uint(max_entries, VIPR_SNAT_FULL_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_snat_full_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct6_key);
	__type(value, struct vipr_snat_full);
	__uint(max_entries, VIPR_SNAT_FULL_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_snat_full6_v1 SEC(".maps");

/*
 * XDP's flow cache (struct vipr_xdp_flow). Declared with the other maps, not in the XDP object
 * alone, so the agent always has it to empty when it cuts flows. Per-CPU LRU lists: a flow is
 * received on one CPU (RSS), and a miss evicts that CPU's oldest entry, not another's hot one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct_key);
	__type(value, struct vipr_xdp_flow);
	__uint(max_entries, VIPR_XDP_FLOW_ENTRIES);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_flows_v1 SEC(".maps");

/* IPv6's (struct vipr_xdp_flow6), kept as vipr_xdp_flows_v1. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct6_key);
	__type(value, struct vipr_xdp_flow6);
	__uint(max_entries, VIPR_XDP_FLOW_ENTRIES);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_flows6_v1 SEC(".maps");

/* This node's pods that XDP sends frames to itself (struct vipr_xdp_pod); empty unless asked for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_xdp_pod_key);
	__type(value, struct vipr_xdp_pod);
	__uint(max_entries, VIPR_XDP_POD_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_pods_v1 SEC(".maps");

/* IPv6's (key struct vipr_xdp_pod6_key), kept as vipr_xdp_pods_v1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_xdp_pod6_key);
	__type(value, struct vipr_xdp_pod);
	__uint(max_entries, VIPR_XDP_POD_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_pods6_v1 SEC(".maps");

/* Socket LB: the frontend each translated socket used (LRU: closed sockets age out). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_sock_rev_key);
	__type(value, struct vipr_sock_rev_value);
	__uint(max_entries, VIPR_MAX_SOCK_REV);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_sock_rev_v1 SEC(".maps");

/* Socket LB: sessionAffinity by network namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_sock_affinity_key);
	__type(value, struct vipr_affinity_value);
	__uint(max_entries, VIPR_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_sock_affinity_v1 SEC(".maps");

/* The ports of IPv4 datagrams whose first fragment passed, for their later fragments. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_frag_key);
	__type(value, struct vipr_frag_ports);
	__uint(max_entries, VIPR_MAX_FRAGMENTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_fragments_v1 SEC(".maps");

/*
 * IPv6 (see vipr_types.h): frontends, backends, flows and node settings of their own; slots,
 * scheduler state, connection counts, stats and the ICMP bucket are shared with IPv4.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_svc6_key);
	__type(value, struct vipr_svc_value);
	__uint(max_entries, VIPR_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_services6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_backend_id);
	__type(value, struct vipr_backend6);
	__uint(max_entries, VIPR_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_backends6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_ct6_key);
	__type(value, struct vipr_ct6_value);
	__uint(max_entries, VIPR_MAX_CT_TCP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct6_tcp_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct6_key);
	__type(value, struct vipr_ct6_value);
	__uint(max_entries, VIPR_MAX_CT_TCP_SYN);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct6_tcp_syn_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_ct6_key);
	__type(value, struct vipr_ct6_value);
	__uint(max_entries, VIPR_MAX_CT_UDP);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_ct6_udp_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_affinity6_key);
	__type(value, struct vipr_affinity_value);
	__uint(max_entries, VIPR_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_affinity6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vipr_node_ip6);
	__type(value, __u32); /* reserved flags, 0 */
	__uint(max_entries, VIPR_MAX_NODE_IPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_node_ips6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct vipr_source_range6);
	__type(value, __u32); /* reserved flags, 0 */
	__uint(max_entries, VIPR_MAX_SOURCE_RANGES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_source_ranges6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vipr_config6);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_config6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_frag6_key);
	__type(value, struct vipr_frag_ports);
	__uint(max_entries, VIPR_MAX_FRAGMENTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_fragments6_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_sock_rev6_key);
	__type(value, struct vipr_sock_rev6_value);
	__uint(max_entries, VIPR_MAX_SOCK_REV);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_sock_rev6_v1 SEC(".maps");

#endif /* __VIPR_MAPS_H */
