/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: one LRU map holds two entries per flow, the forward one (client ->
 * frontend, as the client sends it) and the reply one (backend -> client or -> the SNAT address,
 * as the backend sends it). The forward entry pins the backend for the flow's life, also after
 * the backend left the service: established connections drain instead of breaking. The reply
 * entry carries the frontend address the client used (for NodePorts that is the node address the
 * client chose), so replies are rewritten without any per-service state.
 */
#ifndef __VIPR_CONNTRACK_H
#define __VIPR_CONNTRACK_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parse.h"

/* Tries at a free SNAT port before the flow is dropped. */
#define SNAT_PORT_TRIES 16

static __always_inline void ct4_key_forward(struct vipr_ct_key *key, const struct packet *pkt)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
	key->dir = VIPR_CT_FORWARD;
	key->pad[0] = 0;
	key->pad[1] = 0;
}

static __always_inline void ct4_key_reply(struct vipr_ct_key *key, const struct packet *pkt)
{
	ct4_key_forward(key, pkt);
	key->dir = VIPR_CT_REPLY;
}

static __always_inline void lc_account(__u32 backend_id, int delta)
{
	struct vipr_backend_id id = { .id = backend_id };
	struct vipr_backend_conns *c = bpf_map_lookup_elem(&vipr_backend_conns_v1, &id);

	if (c)
		__sync_fetch_and_add(&c->active, delta);
}

/*
 * Updates a tracked flow with one more packet. The first FIN or RST marks it closing: a new SYN
 * on the same 5-tuple is then balanced afresh, and the backend's open-flow count drops.
 */
static __always_inline void ct4_touch(struct vipr_ct_value *ct, const struct packet *pkt,
				      __u64 now, bool forward)
{
	/* Written only when it changes by more than ~1 ms: saves a cache-line write per packet. */
	if (now - ct->last_seen_ns > 1000000ULL)
		ct->last_seen_ns = now;
	if (pkt->tcp_flags & ~ct->tcp_flags)
		ct->tcp_flags |= pkt->tcp_flags;
	if ((pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(ct->flags & VIPR_CT_F_CLOSING)) {
		ct->flags |= VIPR_CT_F_CLOSING;
		if (forward)
			lc_account(ct->backend_id, -1);
	}
}

/* A bare SYN on a flow that was closing is a new connection reusing the 5-tuple. */
static __always_inline bool ct4_is_reusable(const struct vipr_ct_value *ct,
					     const struct packet *pkt)
{
	bool bare_syn = (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;

	return !(bare_syn && (ct->flags & VIPR_CT_F_CLOSING));
}

struct ct_new {
	__u32 svc_id;
	__u32 backend_id;
	__be32 snat_addr; /* 0: no SNAT */
	__u8 flags;       /* VIPR_CT_F_SNAT, VIPR_CT_F_REDIRECT */
};

/*
 * Creates both entries of a new flow, the reply entry first, so that by the time a packet can
 * have reached the backend its answer is recognised. With SNAT, the source port is chosen at
 * random in the configured range until a reply key is free (BPF_NOEXIST makes the claim atomic).
 * Returns the source port the flow leaves with (network order), or 0 when none was free.
 */
static __always_inline __be16 ct4_create(const struct packet *pkt, const struct vipr_backend *be,
					 const struct ct_new *n, const struct vipr_config *cfg,
					 __u64 now)
{
	struct vipr_ct_key fwd_key, rep_key = {};
	struct vipr_ct_value val = {
		.created_ns = now,
		.last_seen_ns = now,
		.nat_addr = pkt->daddr,
		.nat_port = pkt->dport,
		.flags = n->flags,
		.svc_id = n->svc_id,
		.backend_id = n->backend_id,
	};
	__be16 sport = pkt->sport;
	int i;

	rep_key.saddr = be->addr;
	rep_key.sport = be->port;
	rep_key.proto = pkt->proto;
	rep_key.dir = VIPR_CT_REPLY;
	if (n->snat_addr) {
		__u32 lo = cfg->snat_port_min, span = cfg->snat_port_max - cfg->snat_port_min + 1;

		val.snat_addr = pkt->saddr;
		val.snat_port = pkt->sport;
		rep_key.daddr = n->snat_addr;
		sport = 0;
		for (i = 0; i < SNAT_PORT_TRIES; i++) {
			__be16 port = bpf_htons(lo + bpf_get_prandom_u32() % span);

			rep_key.dport = port;
			if (bpf_map_update_elem(&vipr_conntrack_v1, &rep_key, &val, BPF_NOEXIST) == 0) {
				sport = port;
				break;
			}
		}
		if (!sport)
			return 0;
	} else {
		rep_key.daddr = pkt->saddr;
		rep_key.dport = pkt->sport;
		if (bpf_map_update_elem(&vipr_conntrack_v1, &rep_key, &val, BPF_ANY))
			return 0;
	}

	ct4_key_forward(&fwd_key, pkt);
	val.nat_addr = be->addr;
	val.nat_port = be->port;
	val.snat_addr = n->snat_addr;
	val.snat_port = n->snat_addr ? sport : 0;
	val.tcp_flags = pkt->tcp_flags;
	if (bpf_map_update_elem(&vipr_conntrack_v1, &fwd_key, &val, BPF_ANY)) {
		bpf_map_delete_elem(&vipr_conntrack_v1, &rep_key);
		return 0;
	}
	lc_account(n->backend_id, 1);
	return sport;
}

#endif /* __VIPR_CONNTRACK_H */
