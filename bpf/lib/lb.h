/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing for IPv4: frontend lookup, backend selection, DNAT of the client's
 * packets and reverse NAT of the backend's replies.
 */
#ifndef __VIPR_LB_H
#define __VIPR_LB_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "conntrack.h"
#include "stats.h"

static __always_inline struct vipr_svc_value *lb4_lookup_service(const struct packet *pkt)
{
	struct vipr_svc_key key = {
		.vip = pkt->daddr,
		.port = pkt->dport,
		.proto = pkt->proto,
		.scope = VIPR_SCOPE_EXTERNAL,
	};

	return bpf_map_lookup_elem(&vipr_services_v1, &key);
}

/*
 * Picks a backend for a new flow. Slots 0..backend_count-1 are always complete: the agent writes
 * slots before raising the count and lowers the count before deleting slots.
 */
static __always_inline struct vipr_backend *
lb4_select_backend(const struct vipr_svc_value *svc, __u32 *backend_id)
{
	struct vipr_slot_key slot = { .svc_id = svc->svc_id };
	struct vipr_backend_id *id;

	slot.slot = bpf_get_prandom_u32() % svc->backend_count;
	id = bpf_map_lookup_elem(&vipr_slots_v1, &slot);
	if (!id)
		return NULL;
	*backend_id = id->id;
	return bpf_map_lookup_elem(&vipr_backends_v1, id);
}

/*
 * Client -> service. Returns a TC verdict. A tracked flow keeps its backend; a new one is
 * balanced and tracked. Failures after a service matched drop the packet (fail closed): letting
 * it through would route a packet for a virtual address nowhere, or worse, somewhere.
 */
static __always_inline int lb4_dnat(struct __sk_buff *skb, const struct packet *pkt)
{
	struct vipr_ct_key ct_key;
	struct vipr_ct_value *ct;
	struct vipr_svc_value *svc;
	struct vipr_backend *be;
	__u32 backend_id = 0;
	__u64 now = bpf_ktime_get_ns();

	ct4_key_forward(&ct_key, pkt);
	ct = bpf_map_lookup_elem(&vipr_conntrack_v1, &ct_key);
	if (ct && ct4_is_reusable(ct, pkt)) {
		__be32 addr = ct->nat_addr;
		__be16 port = ct->nat_port;

		ct4_touch(ct, pkt, now);
		stats_count(VIPR_STAT_CT_HIT, skb->len);
		if (nat4_rewrite(skb, pkt, NAT_DST, addr, port)) {
			stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
			return TC_ACT_SHOT;
		}
		stats_count(VIPR_STAT_DNAT, skb->len);
		return TC_ACT_OK;
	}

	svc = lb4_lookup_service(pkt);
	if (!svc) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, skb->len);
		return TC_ACT_OK;
	}
	stats_count(VIPR_STAT_SERVICE_HIT, skb->len);
	if (svc->backend_count == 0) {
		stats_count(VIPR_STAT_DROP_NO_BACKEND, skb->len);
		return TC_ACT_SHOT;
	}
	be = lb4_select_backend(svc, &backend_id);
	if (!be) {
		stats_count(VIPR_STAT_DROP_NO_SLOT, skb->len);
		return TC_ACT_SHOT;
	}
	if (ct4_create(pkt, be, svc->svc_id, backend_id, now)) {
		stats_count(VIPR_STAT_DROP_CT_FULL, skb->len);
		return TC_ACT_SHOT;
	}
	stats_count(VIPR_STAT_CT_NEW, skb->len);
	if (nat4_rewrite(skb, pkt, NAT_DST, be->addr, be->port)) {
		stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	stats_count(VIPR_STAT_DNAT, skb->len);
	return TC_ACT_OK;
}

/* Backend -> client: rewrites the source back to the service the client talked to. */
static __always_inline int lb4_rev_nat(struct __sk_buff *skb, const struct packet *pkt)
{
	struct vipr_ct_key ct_key;
	struct vipr_ct_value *ct;
	struct vipr_revnat *rev;
	__u32 svc_id;

	ct4_key_reply(&ct_key, pkt);
	ct = bpf_map_lookup_elem(&vipr_conntrack_v1, &ct_key);
	if (!ct) {
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, skb->len);
		return TC_ACT_OK;
	}
	svc_id = ct->svc_id;
	rev = bpf_map_lookup_elem(&vipr_revnat_v1, &svc_id);
	if (!rev) {
		/* The service is gone: its replies are no longer ours to rewrite. */
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, skb->len);
		return TC_ACT_OK;
	}
	ct4_touch(ct, pkt, bpf_ktime_get_ns());
	if (!(ct->flags & VIPR_CT_F_SEEN_REPLY))
		ct->flags |= VIPR_CT_F_SEEN_REPLY;
	if (nat4_rewrite(skb, pkt, NAT_SRC, rev->vip, rev->port)) {
		stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	stats_count(VIPR_STAT_REV_NAT, skb->len);
	return TC_ACT_OK;
}

/* Parses and counts; returns true when the packet is IPv4 TCP/UDP worth looking at. */
static __always_inline bool lb4_parse(struct __sk_buff *skb, struct packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	stats_count(VIPR_STAT_PACKETS, skb->len);
	switch (parse_ipv4_l4(data, data_end, pkt)) {
	case PARSE_OK:
		return true;
	case PARSE_NOT_IPV4:
		stats_count(VIPR_STAT_PASS_NON_IPV4, skb->len);
		return false;
	case PARSE_FRAGMENT:
		stats_count(VIPR_STAT_FRAGMENT, skb->len);
		return false;
	case PARSE_OTHER_L4:
		stats_count(VIPR_STAT_PASS_NOT_SERVICE, skb->len);
		return false;
	default:
		stats_count(VIPR_STAT_MALFORMED, skb->len);
		return false;
	}
}

#endif /* __VIPR_LB_H */
