/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing for IPv4, independent of the hook: given a parsed packet, decide what
 * happens to it (pass, rewrite, drop, reject) and record the flow in conntrack. The TC and XDP
 * entry points apply the decision with their own means (skb helpers, direct writes).
 */
#ifndef __VIPR_LB_H
#define __VIPR_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "conntrack.h"
#include "sched.h"
#include "stats.h"
#include "frag.h"

enum lb_action {
	LB_PASS = 0, /* not ours: leave untouched */
	LB_NAT,      /* rewrite as planned */
	LB_DROP,     /* drop; the reason is counted */
	LB_REJECT,   /* service without endpoints: ICMP port unreachable */
};

static __always_inline struct vipr_config *lb_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&vipr_config_v1, &zero);
}

/* Sources inside --cluster-cidr are internal traffic (pods). */
static __always_inline bool lb4_is_internal(const struct vipr_config *cfg, __be32 saddr)
{
	return cfg->cluster_mask && (saddr & cfg->cluster_mask) == cfg->cluster_cidr;
}

static __always_inline struct vipr_svc_value *lb4_lookup_scoped(struct vipr_svc_key *key, bool internal)
{
	struct vipr_svc_value *svc;

	if (internal) {
		key->scope = VIPR_SCOPE_INTERNAL;
		svc = bpf_map_lookup_elem(&vipr_services_v1, key);
		if (svc)
			return svc;
	}
	key->scope = VIPR_SCOPE_EXTERNAL;
	return bpf_map_lookup_elem(&vipr_services_v1, key);
}

/*
 * The frontend a new flow is for: the destination address itself (ClusterIP, external IP,
 * LoadBalancer IP), else, when the destination is an address of this node, a NodePort.
 */
static __always_inline struct vipr_svc_value *lb4_lookup_service(const struct packet *pkt, bool internal)
{
	struct vipr_svc_key key = {
		.vip = pkt->daddr,
		.port = pkt->dport,
		.proto = pkt->proto,
	};
	struct vipr_node_ip node = { .addr = pkt->daddr };
	struct vipr_svc_value *svc = lb4_lookup_scoped(&key, internal);

	if (svc)
		return svc;
	if (!bpf_map_lookup_elem(&vipr_node_ips_v1, &node))
		return NULL;
	key.vip = VIPR_NODEPORT_VIP;
	return lb4_lookup_scoped(&key, internal);
}

static __always_inline bool lb4_source_allowed(const struct vipr_svc_value *svc, __be32 saddr)
{
	struct vipr_source_range key = {
		.prefixlen = 64,
		.svc_id = svc->svc_id,
		.addr = saddr,
	};

	return bpf_map_lookup_elem(&vipr_source_ranges_v1, &key) != NULL;
}

static __always_inline struct vipr_backend *lb4_backend_in_slot(__u32 svc_id, __u32 slot, __u32 *backend_id)
{
	struct vipr_slot_key key = { .svc_id = svc_id, .slot = slot };
	struct vipr_backend_id *id = bpf_map_lookup_elem(&vipr_slots_v1, &key);

	if (!id)
		return NULL;
	*backend_id = id->id;
	return bpf_map_lookup_elem(&vipr_backends_v1, id);
}

/*
 * Picks the backend of a new flow: the client's affinity backend while it is fresh, else the
 * scheduler's choice (which then becomes the client's affinity backend).
 */
static __always_inline struct vipr_backend *lb4_select_backend(const struct vipr_svc_value *svc,
							       const struct packet *pkt, __u64 now,
							       __u32 *backend_id, __u32 len)
{
	struct vipr_affinity_key akey = { .svc_id = svc->svc_id, .client = pkt->saddr };
	struct vipr_affinity_value aval = { .last_seen_ns = now };
	struct vipr_backend *be;
	struct sched_in in;

	if (svc->flags & VIPR_SVC_F_AFFINITY) {
		struct vipr_affinity_value *a = bpf_map_lookup_elem(&vipr_affinity_v1, &akey);

		if (a && now - a->last_seen_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			struct vipr_backend_id id = { .id = a->backend_id };

			be = bpf_map_lookup_elem(&vipr_backends_v1, &id);
			if (be) {
				a->last_seen_ns = now;
				*backend_id = id.id;
				stats_count(VIPR_STAT_AFFINITY_HIT, len);
				return be;
			}
		}
	}
	sched_in_packet(&in, svc, pkt);
	be = lb4_backend_in_slot(svc->svc_id, sched_pick_slot(svc, &in), backend_id);
	if (be && (svc->flags & VIPR_SVC_F_AFFINITY)) {
		aval.backend_id = *backend_id;
		bpf_map_update_elem(&vipr_affinity_v1, &akey, &aval, BPF_ANY);
	}
	return be;
}

static __always_inline void plan_identity(struct nat_plan *plan, const struct packet *pkt)
{
	plan->saddr = pkt->saddr;
	plan->daddr = pkt->daddr;
	plan->sport = pkt->sport;
	plan->dport = pkt->dport;
	plan->redirect = false;
	plan->dsr = false;
	plan->xdp_cache = 0;
}

/*
 * Whether a tracked flow's next packets may take XDP's flow cache (struct vipr_xdp_flow): past
 * its handshake (@steady: UDP, or TCP in the established map), not closing, not DSR, and this
 * packet neither changes its state (SYN, FIN, RST) nor is a fragment.
 */
static __always_inline bool lb4_flow_steady(const struct vipr_ct_value *ct, const struct packet *pkt, bool steady)
{
	return (steady || pkt->proto == IPPROTO_UDP) && !(ct->flags & (VIPR_CT_F_CLOSING | VIPR_CT_F_DSR)) &&
	       !(pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)) && pkt->frag == FRAG_NONE;
}

/*
 * Whether @pkt may be the reply of a flow SNATed to this node: addressed to the SNAT address, the
 * hairpin one, or another address of this node's (vipr_node_ips_v1; one the SNAT address was
 * before a change of it), where reply entries with SNAT point.
 */
static __always_inline bool lb4_may_be_snat_reply(const struct vipr_config *cfg, const struct packet *pkt)
{
	struct vipr_node_ip node = { .addr = pkt->daddr };

	return pkt->daddr == cfg->snat_addr || pkt->daddr == bpf_htonl(VIPR_HAIRPIN_ADDR) ||
	       bpf_map_lookup_elem(&vipr_node_ips_v1, &node);
}

/*
 * A packet arriving at the node (TC ingress, XDP). Tracked flows first: the client's packets
 * (forward entry) and replies to flows SNATed to this node (reply entry with SNAT: their
 * destination is a node address, so only ingress sees them). Then new flows to a frontend.
 * Failures after a frontend matched drop the packet (fail closed): letting it through would
 * route a packet for a virtual address nowhere, or worse, somewhere.
 */
static __always_inline enum lb_action lb4_plan_ingress(const struct packet *pkt, __u32 len,
						       struct nat_plan *plan, bool bare_syn_no_reply)
{
	struct vipr_config *cfg;
	struct vipr_ct_key ct_key;
	struct vipr_ct_value *ct;
	struct vipr_svc_value *svc;
	struct vipr_backend *be;
	struct ct_new n = {};
	bool established, snat_reply;
	__be16 sport;
	/* Read only on the paths that keep time (~25 ns a read): a packet that is no service's
	 * passes, and a refused one drops, without it. */
	__u64 now;

	plan_identity(plan, pkt);

	ct4_key_forward(&ct_key, pkt);
	ct = ct4_lookup(&ct_key, &established);
	if (ct && ct4_is_reusable(ct, pkt)) {
		bool steady = established;

		if (!established && pkt->proto == IPPROTO_TCP && ct4_may_promote(ct, pkt)) {
			/* The balancing node of a DSR flow never sees the replies: the client's
			 * ACK is all the handshake it can see. */
			struct vipr_ct_value *est = ct4_promote(&ct_key, ct, len, !(ct->flags & VIPR_CT_F_DSR));

			if (est) {
				ct = est;
				steady = true;
			}
		}
		now = ct_clock();
		ct4_touch(ct, pkt, now, true);
		plan->daddr = ct->nat_addr;
		plan->dport = ct->nat_port;
		if (ct->snat_addr) {
			plan->saddr = ct->snat_addr;
			plan->sport = ct->snat_port;
		}
		plan->redirect = ct->flags & VIPR_CT_F_REDIRECT;
		plan->dsr = ct->flags & VIPR_CT_F_DSR;
		if (lb4_flow_steady(ct, pkt, steady))
			plan->xdp_cache = VIPR_STAT_CT_HIT;
		stats_count(VIPR_STAT_CT_HIT, len);
		return LB_NAT;
	}

	if (ct && established)
		ct4_forget_established(&ct_key, ct);

	/*
	 * Reply entries matter here for two kinds of packet: the reply of a flow SNATed to this
	 * node, translated back (its destination is the SNAT address, a node address, or the
	 * hairpin one), and a packet a frontend would take for a new flow, which a reply of a
	 * tracked flow never is. Anything else (a pod's traffic to the world, to another pod,
	 * through the node) is no service's whatever the reply maps hold: not probed, two lookups
	 * of absent keys in maps too big for the caches less (~170 ns each on the bench's machine).
	 * Nor is a bare SYN with @bare_syn_no_reply (XDP): it opens a connection, never answers
	 * one. TC probes for bare SYNs anyway: with that skip, clang 16 builds vipr_tc_ingress with
	 * a read of a register it never set, which the verifier rejects ('R8 !read_ok').
	 */
	cfg = lb_config();
	snat_reply = !cfg || lb4_may_be_snat_reply(cfg, pkt);
	svc = cfg && !snat_reply ? lb4_lookup_service(pkt, lb4_is_internal(cfg, pkt->saddr)) : NULL;
	if ((snat_reply || svc) &&
	    !(bare_syn_no_reply && pkt->proto == IPPROTO_TCP &&
	      (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)) {
		ct4_key_reply(&ct_key, pkt);
		ct = ct4_lookup(&ct_key, &established);
		if (ct) {
			/* A reply of a tracked flow is never a new flow to a service: its destination
			 * is a client. Without SNAT it is rewritten on egress towards the client; with
			 * SNAT its destination is this node, so only ingress sees it. */
			if (!(ct->flags & VIPR_CT_F_SNAT)) {
				stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
				return LB_PASS;
			}
			now = ct_clock();
			ct4_touch(ct, pkt, now, false);
			ct4_mark_replied(ct);
			plan->saddr = ct->nat_addr;
			plan->sport = ct->nat_port;
			plan->daddr = ct->snat_addr;
			plan->dport = ct->snat_port;
			plan->redirect = ct->flags & VIPR_CT_F_REDIRECT;
			if (lb4_flow_steady(ct, pkt, established))
				plan->xdp_cache = VIPR_STAT_REV_NAT;
			stats_count(VIPR_STAT_REV_NAT, len);
			return LB_NAT;
		}
	}

	/* New flows: to a node address, the NodePort lookup comes after the reply probe. */
	if (!cfg)
		return LB_PASS;
	if (snat_reply)
		svc = lb4_lookup_service(pkt, lb4_is_internal(cfg, pkt->saddr));
	if (!svc) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	stats_count(VIPR_STAT_SERVICE_HIT, len);
	if ((svc->flags & VIPR_SVC_F_SOURCE_RANGES) && !lb4_source_allowed(svc, pkt->saddr)) {
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
	now = bpf_ktime_get_ns();
	be = lb4_select_backend(svc, pkt, now, &n.backend_id, len);
	if (!be) {
		stats_count(VIPR_STAT_DROP_NO_SLOT, len);
		return LB_DROP;
	}

	n.svc_id = svc->svc_id;
	if (be->addr == pkt->saddr) {
		/* Hairpin: a pod reaching itself through its service. Without SNAT it would get a
		 * packet from its own address and drop it. */
		n.snat_addr = bpf_htonl(VIPR_HAIRPIN_ADDR);
		n.flags = VIPR_CT_F_SNAT;
	} else if ((svc->flags & VIPR_SVC_F_EXTERNAL) && !(svc->flags & VIPR_SVC_F_LOCAL) &&
		   !(be->flags & VIPR_BE_F_LOCAL) && (svc->flags & VIPR_SVC_F_DSR)) {
		/* Direct server return (lib/dsr.h): the client's address stays, the frontend travels
		 * to the backend's node in an IPv4 option, and the reply goes from there to the
		 * client. The packet is forwarded by FIB lookup, as an SNATed one. */
		n.flags = VIPR_CT_F_DSR | VIPR_CT_F_REDIRECT;
	} else if ((svc->flags & VIPR_SVC_F_EXTERNAL) && !(svc->flags & VIPR_SVC_F_LOCAL) &&
		   !(be->flags & VIPR_BE_F_LOCAL) && cfg->snat_addr) {
		/* External traffic to another node's backend: SNAT to this node so the reply comes
		 * back here to be reverse-translated; the client only ever sees this node. */
		n.snat_addr = cfg->snat_addr;
		n.flags = VIPR_CT_F_SNAT | VIPR_CT_F_REDIRECT;
	}
	/* Without SNAT the reply tuple is the client's own: an earlier flow may still hold it. */
	if (!n.snat_addr && !ct4_take_reply_tuple(pkt, be)) {
		stats_count(VIPR_STAT_DROP_CT_TUPLE_TAKEN, len);
		return LB_DROP;
	}
	sport = ct4_create(pkt, be, &n, cfg, now);
	if (!sport) {
		stats_count(n.snat_addr ? VIPR_STAT_DROP_NO_SNAT_PORT : VIPR_STAT_DROP_CT_FULL, len);
		return LB_DROP;
	}
	stats_count(VIPR_STAT_CT_NEW, len);
	if (n.snat_addr) {
		stats_count(VIPR_STAT_SNAT, len);
		plan->saddr = n.snat_addr;
		plan->sport = sport;
	}
	plan->daddr = be->addr;
	plan->dport = be->port;
	plan->redirect = n.flags & VIPR_CT_F_REDIRECT;
	plan->dsr = n.flags & VIPR_CT_F_DSR;
	return LB_NAT;
}

/*
 * A packet leaving the node towards a client (TC egress): replies of flows that were not
 * SNATed get their source rewritten back to the frontend the client used. (Doing this at the
 * backend-facing ingress instead would make a NodePort reply arrive with a node address as its
 * source, which the kernel drops as martian.)
 */
static __always_inline enum lb_action lb4_plan_egress(const struct packet *pkt, __u32 len,
						      struct nat_plan *plan)
{
	struct vipr_ct_key ct_key;
	struct vipr_ct_value *ct;
	bool established;

	plan_identity(plan, pkt);
	ct4_key_reply(&ct_key, pkt);
	ct = ct4_lookup(&ct_key, &established);
	if (!ct || (ct->flags & VIPR_CT_F_SNAT)) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PASS;
	}
	ct4_touch(ct, pkt, ct_clock(), false);
	ct4_mark_replied(ct);
	plan->saddr = ct->nat_addr;
	plan->sport = ct->nat_port;
	plan->dsr = ct->flags & VIPR_CT_F_DSR;
	stats_count(VIPR_STAT_REV_NAT, len);
	return LB_NAT;
}

/* What a parsed packet is to the programs. */
enum lb_packet {
	LB_PACKET_PASS = 0,   /* not ours (counted): leave it */
	LB_PACKET_FLOW,       /* TCP/UDP with ports (a later fragment's from its first) */
	LB_PACKET_ICMP_ERROR, /* an ICMP error quoting a TCP/UDP packet */
	LB_PACKET_DROP,       /* a later fragment whose first was not seen (counted) */
	LB_PACKET_NOT_IPV4,   /* another ethertype: the IPv6 path (lb6.h) takes it from here */
};

/*
 * Counts a packet by what its parse found. Fragments: a first fragment's ports are recorded for
 * the later ones, which take them over (bpf/lib/frag.h).
 */
static __always_inline enum lb_packet lb4_classify(enum parse_result r, struct packet *pkt, __u32 len)
{
	stats_count(VIPR_STAT_PACKETS, len);
	switch (r) {
	case PARSE_OK:
		if (pkt->frag == FRAG_FIRST) {
			stats_count(VIPR_STAT_FRAGMENT, len);
			frag4_record(pkt);
		}
		return LB_PACKET_FLOW;
	case PARSE_FRAGMENT:
		stats_count(VIPR_STAT_FRAGMENT, len);
		if (frag4_lookup_ports(pkt))
			return LB_PACKET_FLOW;
		stats_count(VIPR_STAT_DROP_FRAG_NOT_FOUND, len);
		return LB_PACKET_DROP;
	case PARSE_ICMP_ERROR:
		return LB_PACKET_ICMP_ERROR;
	case PARSE_NOT_IPV4:
		/* Counted by lb6_classify: IPv6, or no IP at all. */
		return LB_PACKET_NOT_IPV4;
	case PARSE_OTHER_L4:
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, len);
		return LB_PACKET_PASS;
	default:
		stats_count(VIPR_STAT_MALFORMED, len);
		return LB_PACKET_PASS;
	}
}

/* Parses and counts a frame whose bytes are all in [data, data_end) (XDP). */
static __always_inline enum lb_packet lb4_parse(void *data, void *data_end, __u32 len, struct packet *pkt)
{
	return lb4_classify(parse_ipv4_l4(data, data_end, pkt), pkt, len);
}

#endif /* __VIPR_LB_H */
