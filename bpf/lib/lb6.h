/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing for IPv6, as lb.h for IPv4 (read it first): the same decisions over the
 * IPv6 maps. Frontends are vipr_services6_v1 (NodePorts under vip ::, for an address in
 * vipr_node_ips6_v1), backends vipr_backends6_v1; service and backend ids, slots, scheduler
 * state and connection counts are shared with IPv4, and so are the scheduler, the TCP flow-state
 * decisions and the counters. Internal traffic is a source inside vipr_config6's cluster CIDR;
 * NodePort flows to remote backends are SNATed to vipr_config6.snat_addr, with a port from
 * vipr_config's range.
 */
#ifndef __VIPR_LB6_H
#define __VIPR_LB6_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h"
#include "parse6.h"
#include "nat6.h"
#include "ct6.h"
#include "frag6.h"

static __always_inline struct vipr_config6 *lb_config6(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&vipr_config6_v1, &zero);
}

/* Sources inside --cluster-cidr's IPv6 network are internal traffic (pods). */
static __always_inline bool lb6_is_internal(const struct vipr_config6 *cfg, const __be32 *saddr)
{
	if (ipv6_is_zero(cfg->cluster_mask))
		return false;
	return (((saddr[0] & cfg->cluster_mask[0]) ^ cfg->cluster_cidr[0]) |
		((saddr[1] & cfg->cluster_mask[1]) ^ cfg->cluster_cidr[1]) |
		((saddr[2] & cfg->cluster_mask[2]) ^ cfg->cluster_cidr[2]) |
		((saddr[3] & cfg->cluster_mask[3]) ^ cfg->cluster_cidr[3])) == 0;
}

static __always_inline struct vipr_svc_value *lb6_lookup_scoped(struct vipr_svc6_key *key, bool internal)
{
	struct vipr_svc_value *svc;

	if (internal) {
		key->scope = VIPR_SCOPE_INTERNAL;
		svc = bpf_map_lookup_elem(&vipr_services6_v1, key);
		if (svc)
			return svc;
	}
	key->scope = VIPR_SCOPE_EXTERNAL;
	return bpf_map_lookup_elem(&vipr_services6_v1, key);
}

/* As lb4_lookup_service: the destination itself, else a NodePort on an address of this node. */
static __always_inline struct vipr_svc_value *lb6_lookup_service(const struct packet6 *pkt, bool internal)
{
	struct vipr_svc6_key key = {
		.port = pkt->dport,
		.proto = pkt->proto,
	};
	struct vipr_node_ip6 node;
	struct vipr_svc_value *svc;

	ipv6_copy(key.vip, pkt->daddr);
	svc = lb6_lookup_scoped(&key, internal);
	if (svc)
		return svc;
	ipv6_copy(node.addr, pkt->daddr);
	if (!bpf_map_lookup_elem(&vipr_node_ips6_v1, &node))
		return NULL;
	__builtin_memset(key.vip, 0, sizeof(key.vip));
	return lb6_lookup_scoped(&key, internal);
}

static __always_inline bool lb6_source_allowed(const struct vipr_svc_value *svc, const __be32 *saddr)
{
	struct vipr_source_range6 key = {
		.prefixlen = 32 + 128,
		.svc_id = svc->svc_id,
	};

	ipv6_copy(key.addr, saddr);
	return bpf_map_lookup_elem(&vipr_source_ranges6_v1, &key) != NULL;
}

static __always_inline struct vipr_backend6 *lb6_backend_in_slot(__u32 svc_id, __u32 slot, __u32 *backend_id)
{
	struct vipr_slot_key key = { .svc_id = svc_id, .slot = slot };
	struct vipr_backend_id *id = bpf_map_lookup_elem(&vipr_slots_v1, &key);

	if (!id)
		return NULL;
	*backend_id = id->id;
	return bpf_map_lookup_elem(&vipr_backends6_v1, id);
}

/* As lb4_select_backend: the client's fresh affinity backend, else the scheduler's choice. */
static __always_inline struct vipr_backend6 *lb6_select_backend(const struct vipr_svc_value *svc,
								const struct packet6 *pkt, __u64 now,
								__u32 *backend_id, __u32 len)
{
	struct vipr_affinity6_key akey = { .svc_id = svc->svc_id };
	struct vipr_affinity_value aval = { .last_seen_ns = now };
	struct vipr_backend6 *be;
	struct sched_in in;

	ipv6_copy(akey.client, pkt->saddr);
	if (svc->flags & VIPR_SVC_F_AFFINITY) {
		struct vipr_affinity_value *a = bpf_map_lookup_elem(&vipr_affinity6_v1, &akey);

		if (a && now - a->last_seen_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			struct vipr_backend_id id = { .id = a->backend_id };

			be = bpf_map_lookup_elem(&vipr_backends6_v1, &id);
			if (be) {
				a->last_seen_ns = now;
				*backend_id = id.id;
				stats_count(VIPR_STAT_AFFINITY_HIT, len);
				return be;
			}
		}
	}
	sched_in_flow6(&in, svc, pkt->saddr, pkt->daddr, ((__u32)pkt->sport << 16) | pkt->dport, pkt->proto);
	be = lb6_backend_in_slot(svc->svc_id, sched_pick_slot(svc, &in), backend_id);
	if (be && (svc->flags & VIPR_SVC_F_AFFINITY)) {
		aval.backend_id = *backend_id;
		bpf_map_update_elem(&vipr_affinity6_v1, &akey, &aval, BPF_ANY);
	}
	return be;
}

static __always_inline void plan6_identity(struct nat_plan6 *plan, const struct packet6 *pkt)
{
	ipv6_copy(plan->saddr, pkt->saddr);
	ipv6_copy(plan->daddr, pkt->daddr);
	plan->sport = pkt->sport;
	plan->dport = pkt->dport;
	plan->redirect = false;
	plan->xdp_cache = 0;
}

/* As lb4_flow_steady: whether the flow's next packets may take XDP's flow cache (vipr_xdp_flows6_v1). */
static __always_inline bool lb6_flow_steady(const struct vipr_ct6_value *ct, const struct packet6 *pkt, bool steady)
{
	return (steady || pkt->proto == IPPROTO_UDP) && !(ct->flags & (VIPR_CT_F_CLOSING | VIPR_CT_F_DSR)) &&
	       !(pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)) && pkt->frag == FRAG_NONE;
}

/* A tracked flow's forward packet: to the backend, from the SNAT address when there is one. */
static __always_inline void plan6_forward(struct nat_plan6 *plan, const struct vipr_ct6_value *ct)
{
	ipv6_copy(plan->daddr, ct->nat_addr);
	plan->dport = ct->nat_port;
	if (!ipv6_is_zero(ct->snat_addr)) {
		ipv6_copy(plan->saddr, ct->snat_addr);
		plan->sport = ct->snat_port;
	}
	plan->redirect = ct->flags & VIPR_CT_F_REDIRECT;
}

/* As lb4_may_be_snat_reply: addressed to the SNAT address, the hairpin one, or another of this node's. */
static __always_inline bool lb6_may_be_snat_reply(const struct vipr_config6 *cfg6, const struct packet6 *pkt)
{
	struct vipr_node_ip6 node;

	if (ipv6_equal(pkt->daddr, cfg6->snat_addr))
		return true;
	if (pkt->daddr[0] == bpf_htonl(VIPR_HAIRPIN_ADDR6_HI) && !pkt->daddr[1] && !pkt->daddr[2] &&
	    pkt->daddr[3] == bpf_htonl(VIPR_HAIRPIN_ADDR6_LO))
		return true;
	ipv6_copy(node.addr, pkt->daddr);
	return bpf_map_lookup_elem(&vipr_node_ips6_v1, &node);
}

/*
 * The IPv6 path runs in subprograms (the entry points say why): the verifier adds up the stack
 * frames of a call chain, and IPv6's keys and values are 2.5 times IPv4's. Tracked flows and new
 * flows, the backend choice, the reply-tuple check, promotion and creation each get a frame of
 * their own, so no chain holds more than one of them. lb6_plan_tracked returns this when the
 * packet belongs to no tracked flow.
 */
#define LB6_UNTRACKED (-1)

/* Tracked flows: the client's packets (forward entry), replies of SNATed flows (reply entry). */
static __noinline int lb6_plan_tracked(const struct packet6 *pkt, __u32 len, struct nat_plan6 *plan)
{
	struct vipr_config6 *cfg6;
	struct vipr_ct6_key ct_key;
	struct vipr_ct6_value *ct;
	__u64 now = ct_clock();
	bool established;

	ct6_key_forward(&ct_key, pkt);
	ct = ct6_lookup(&ct_key, &established);
	if (ct && ct_is_reusable(ct->flags, pkt->tcp_flags)) {
		bool steady = established;

		if (!established && pkt->proto == IPPROTO_TCP && ct_may_promote(ct->flags, pkt->tcp_flags)) {
			struct vipr_ct6_value *est = ct6_promote(&ct_key, ct, len);

			if (est) {
				ct = est;
				steady = true;
			}
		}
		ct6_touch(ct, pkt, now, true);
		plan6_forward(plan, ct);
		if (lb6_flow_steady(ct, pkt, steady))
			plan->xdp_cache = VIPR_STAT_CT_HIT;
		stats_count(VIPR_STAT_CT_HIT, len);
		return LB_NAT;
	}

	if (ct && established)
		ct6_forget_established(&ct_key, ct);

	/* As lb4_plan_ingress: reply entries are probed only for a packet to this node (a SNATed
	 * flow's reply) or one a frontend would take as a new flow (lb6_plan_new looks it up again,
	 * in a small map). */
	cfg6 = lb_config6();
	if (cfg6 && !lb6_may_be_snat_reply(cfg6, pkt) && !lb6_lookup_service(pkt, lb6_is_internal(cfg6, pkt->saddr))) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	ct6_key_reply(&ct_key, pkt);
	ct = ct6_lookup(&ct_key, &established);
	if (!ct)
		return LB6_UNTRACKED;
	/* Without SNAT, egress rewrites the reply towards the client; with SNAT only ingress sees it. */
	if (!(ct->flags & VIPR_CT_F_SNAT)) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	ct6_touch(ct, pkt, now, false);
	ct_mark_replied(&ct->flags);
	ipv6_copy(plan->saddr, ct->nat_addr);
	plan->sport = ct->nat_port;
	ipv6_copy(plan->daddr, ct->snat_addr);
	plan->dport = ct->snat_port;
	plan->redirect = ct->flags & VIPR_CT_F_REDIRECT;
	if (lb6_flow_steady(ct, pkt, established))
		plan->xdp_cache = VIPR_STAT_REV_NAT;
	stats_count(VIPR_STAT_REV_NAT, len);
	return LB_NAT;
}

/* The backend of a new flow (lb6_select_backend in a frame of its own); NULL when its slot is empty. */
static __noinline struct vipr_backend6 *lb6_pick_backend(const struct vipr_svc_value *svc, const struct packet6 *pkt,
							 __u32 *backend_id, __u32 len)
{
	return lb6_select_backend(svc, pkt, bpf_ktime_get_ns(), backend_id, len);
}

/* New flows to a frontend, as the second half of lb4_plan_ingress. */
static __noinline int lb6_plan_new(const struct packet6 *pkt, __u32 len, struct nat_plan6 *plan)
{
	struct vipr_config *cfg;
	struct vipr_config6 *cfg6;
	struct vipr_svc_value *svc;
	struct vipr_backend6 *be;
	struct ct6_new n = {};
	__be16 sport;

	cfg = lb_config();
	cfg6 = lb_config6();
	if (!cfg || !cfg6)
		return LB_PASS;
	svc = lb6_lookup_service(pkt, lb6_is_internal(cfg6, pkt->saddr));
	if (!svc) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	stats_count(VIPR_STAT_SERVICE_HIT, len);
	if ((svc->flags & VIPR_SVC_F_SOURCE_RANGES) && !lb6_source_allowed(svc, pkt->saddr)) {
		stats_count(VIPR_STAT_DROP_SOURCE_RANGE, len);
		return LB_DROP;
	}
	if (svc->backend_count == 0) {
		if (svc->flags & VIPR_SVC_F_REJECT) {
			stats_count(VIPR_STAT_REJECT, len);
			return LB_REJECT;
		}
		stats_count(VIPR_STAT_DROP_NO_BACKEND, len);
		return LB_DROP;
	}
	be = lb6_pick_backend(svc, pkt, &n.backend_id, len);
	if (!be) {
		stats_count(VIPR_STAT_DROP_NO_SLOT, len);
		return LB_DROP;
	}

	n.svc_id = svc->svc_id;
	if (ipv6_equal(be->addr, pkt->saddr)) {
		/* Hairpin: SNAT to an address no host has (vipr_types.h says why this one). */
		n.snat_addr[0] = bpf_htonl(VIPR_HAIRPIN_ADDR6_HI);
		n.snat_addr[3] = bpf_htonl(VIPR_HAIRPIN_ADDR6_LO);
		n.flags = VIPR_CT_F_SNAT;
	} else if ((svc->flags & VIPR_SVC_F_EXTERNAL) && !(svc->flags & VIPR_SVC_F_LOCAL) &&
		   !(be->flags & VIPR_BE_F_LOCAL) && !ipv6_is_zero(cfg6->snat_addr)) {
		/* External traffic to another node's backend: SNAT to this node (see lb4_plan_ingress). */
		ipv6_copy(n.snat_addr, cfg6->snat_addr);
		n.flags = VIPR_CT_F_SNAT | VIPR_CT_F_REDIRECT;
	}
	if (!n.flags && !ct6_take_reply_tuple(pkt, be)) {
		stats_count(VIPR_STAT_DROP_CT_TUPLE_TAKEN, len);
		return LB_DROP;
	}
	sport = ct6_create(pkt, be, &n, cfg, bpf_ktime_get_ns());
	if (!sport) {
		stats_count(n.flags ? VIPR_STAT_DROP_NO_SNAT_PORT : VIPR_STAT_DROP_CT_FULL, len);
		return LB_DROP;
	}
	stats_count(VIPR_STAT_CT_NEW, len);
	if (n.flags) {
		stats_count(VIPR_STAT_SNAT, len);
		ipv6_copy(plan->saddr, n.snat_addr);
		plan->sport = sport;
	}
	ipv6_copy(plan->daddr, be->addr);
	plan->dport = be->port;
	plan->redirect = n.flags & VIPR_CT_F_REDIRECT;
	return LB_NAT;
}

/* As lb4_plan_ingress (its comment says what arrives here and why failures drop). */
static __always_inline enum lb_action lb6_plan_ingress(const struct packet6 *pkt, __u32 len,
						       struct nat_plan6 *plan)
{
	int action;

	plan6_identity(plan, pkt);
	action = lb6_plan_tracked(pkt, len, plan);
	if (action != LB6_UNTRACKED)
		return action;
	return lb6_plan_new(pkt, len, plan);
}

/* As lb4_plan_egress: replies of flows without SNAT, rewritten back to the frontend the client used. */
static __always_inline enum lb_action lb6_plan_egress(const struct packet6 *pkt, __u32 len,
						      struct nat_plan6 *plan)
{
	struct vipr_ct6_key ct_key;
	struct vipr_ct6_value *ct;
	bool established;

	plan6_identity(plan, pkt);
	ct6_key_reply(&ct_key, pkt);
	ct = ct6_lookup(&ct_key, &established);
	if (!ct || (ct->flags & VIPR_CT_F_SNAT)) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	ct6_touch(ct, pkt, ct_clock(), false);
	ct_mark_replied(&ct->flags);
	ipv6_copy(plan->saddr, ct->nat_addr);
	plan->sport = ct->nat_port;
	stats_count(VIPR_STAT_REV_NAT, len);
	return LB_NAT;
}

/*
 * As lb4_classify, for a frame lb4_classify found not to be IPv4 (it counted the packet): IPv6,
 * or another ethertype, counted as such here. A chain of extension headers longer than the walk
 * passes untouched, counted.
 */
static __always_inline enum lb_packet lb6_classify(enum parse_result r, struct packet6 *pkt, __u32 len)
{
	switch (r) {
	case PARSE_OK:
		if (pkt->frag == FRAG_FIRST) {
			stats_count(VIPR_STAT_FRAGMENT, len);
			frag6_record(pkt);
		}
		return LB_PACKET_FLOW;
	case PARSE_FRAGMENT:
		stats_count(VIPR_STAT_FRAGMENT, len);
		if (frag6_lookup_ports(pkt))
			return LB_PACKET_FLOW;
		stats_count(VIPR_STAT_DROP_FRAG_NOT_FOUND, len);
		return LB_PACKET_DROP;
	case PARSE_ICMP_ERROR:
		return LB_PACKET_ICMP_ERROR;
	case PARSE_NOT_IPV4:
		stats_count(VIPR_STAT_PASS_NON_IPV4, len);
		return LB_PACKET_PASS;
	case PARSE_OTHER_L4:
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PACKET_PASS;
	case PARSE_EXT_HDR_LIMIT:
		stats_count(VIPR_STAT_IPV6_EXT_HDR_LIMIT, len);
		return LB_PACKET_PASS;
	default:
		stats_count(VIPR_STAT_MALFORMED, len);
		return LB_PACKET_PASS;
	}
}

/* Parses and counts a frame whose bytes are all in [data, data_end) (XDP). */
static __always_inline enum lb_packet lb6_parse(void *data, void *data_end, __u32 len, struct packet6 *pkt)
{
	return lb6_classify(parse_ipv6_l4(data, data_end, pkt), pkt, len);
}

#endif /* __VIPR_LB6_H */
