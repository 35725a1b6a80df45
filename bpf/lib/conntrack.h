/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: one LRU map holds two entries per flow, the forward one (client ->
 * service, as the client sends it) and the reply one (backend -> client, as the backend sends
 * it). The forward entry pins the backend for the flow's life, also after the backend left the
 * service: established connections drain instead of breaking.
 */
#ifndef __VIPR_CONNTRACK_H
#define __VIPR_CONNTRACK_H

#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "parse.h"

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

/* Updates a tracked flow with one more packet; FIN/RST marks it closing. */
static __always_inline void ct4_touch(struct vipr_ct_value *ct, const struct packet *pkt,
				      __u64 now)
{
	/* Written only when it changes by more than ~1 ms: saves a cache-line write per packet. */
	if (now - ct->last_seen_ns > 1000000ULL)
		ct->last_seen_ns = now;
	if (pkt->tcp_flags & ~ct->tcp_flags)
		ct->tcp_flags |= pkt->tcp_flags;
	if ((pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(ct->flags & VIPR_CT_F_CLOSING))
		ct->flags |= VIPR_CT_F_CLOSING;
}

/*
 * Whether a tracked forward flow may keep its backend. A bare SYN on a flow that was closing is a
 * new connection reusing the 5-tuple: it is balanced again, as a new flow.
 */
static __always_inline bool ct4_is_reusable(const struct vipr_ct_value *ct,
					     const struct packet *pkt)
{
	bool bare_syn = (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;

	return !(bare_syn && (ct->flags & VIPR_CT_F_CLOSING));
}

/*
 * Creates both entries of a new flow: the reply entry first, so that by the time a packet can
 * have reached the backend its answer is recognised. Returns 0 or a negative errno.
 */
static __always_inline int ct4_create(const struct packet *pkt, const struct vipr_backend *be,
				      __u32 svc_id, __u32 backend_id, __u64 now)
{
	struct vipr_ct_key fwd_key, rep_key = {};
	struct vipr_ct_value val = {
		.created_ns = now,
		.last_seen_ns = now,
		.svc_id = svc_id,
		.backend_id = backend_id,
	};
	int ret;

	rep_key.saddr = be->addr;
	rep_key.daddr = pkt->saddr;
	rep_key.sport = be->port;
	rep_key.dport = pkt->sport;
	rep_key.proto = pkt->proto;
	rep_key.dir = VIPR_CT_REPLY;
	ret = bpf_map_update_elem(&vipr_conntrack_v1, &rep_key, &val, BPF_ANY);
	if (ret)
		return ret;

	ct4_key_forward(&fwd_key, pkt);
	val.nat_addr = be->addr;
	val.nat_port = be->port;
	val.tcp_flags = pkt->tcp_flags;
	return bpf_map_update_elem(&vipr_conntrack_v1, &fwd_key, &val, BPF_ANY);
}

#endif /* __VIPR_CONNTRACK_H */
