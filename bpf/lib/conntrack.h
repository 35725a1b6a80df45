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
 * Which fields of a conntrack value race, and how they are written. A flow's packets can be
 * processed on several CPUs at once (RSS queues, the two directions, XDP and TC), all writing
 * the same value in place:
 *  - flags: VIPR_CT_F_CLOSING decides the flow's one lc decrement, so it is set with an atomic
 *    fetch-or and only the CPU whose fetch-or set it decrements. Every later bit goes through the
 *    same atomic (ct4_set_flags), so no plain read-modify-write of the byte can erase another.
 *    BPF atomics are 32 or 64 bits wide: the fetch-or targets the aligned word holding nat_port,
 *    flags and tcp_flags, with zero bits outside flags, so the other two bytes are unchanged.
 *  - tcp_flags, last_seen_ns: plain writes. A race loses at most one flag bit or timestamp, which
 *    only changes which timeout the agent's GC applies.
 *  - everything else: written once, when the entry is created (a whole-value map update).
 */
#define CT_FLAGS_WORD_OFF __builtin_offsetof(struct vipr_ct_value, nat_port)
_Static_assert(CT_FLAGS_WORD_OFF % 4 == 0, "the word holding vipr_ct_value.flags is aligned");
_Static_assert(__builtin_offsetof(struct vipr_ct_value, flags) - CT_FLAGS_WORD_OFF < 4,
	       "vipr_ct_value.flags lies in the word at CT_FLAGS_WORD_OFF");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CT_FLAGS_SHIFT ((__builtin_offsetof(struct vipr_ct_value, flags) - CT_FLAGS_WORD_OFF) * 8)
#else
#define CT_FLAGS_SHIFT ((3 - (__builtin_offsetof(struct vipr_ct_value, flags) - CT_FLAGS_WORD_OFF)) * 8)
#endif

/* Sets @bits in ct->flags atomically; returns the bits of @bits that were clear (set by us). */
static __always_inline __u8 ct4_set_flags(struct vipr_ct_value *ct, __u8 bits)
{
	__u32 *word = (__u32 *)((void *)ct + CT_FLAGS_WORD_OFF);
	__u32 old = __sync_fetch_and_or(word, (__u32)bits << CT_FLAGS_SHIFT);

	return bits & ~(__u8)(old >> CT_FLAGS_SHIFT);
}

/* A reply was rewritten: the flow is established. */
static __always_inline void ct4_mark_replied(struct vipr_ct_value *ct)
{
	if (!(ct->flags & VIPR_CT_F_SEEN_REPLY))
		ct4_set_flags(ct, VIPR_CT_F_SEEN_REPLY);
}

/*
 * Updates a tracked flow with one more packet. The first FIN or RST marks it closing: a new SYN
 * on the same 5-tuple is then balanced afresh, and the backend's open-flow count drops, once.
 */
static __always_inline void ct4_touch(struct vipr_ct_value *ct, const struct packet *pkt,
				      __u64 now, bool forward)
{
	/* Written only when it changes by more than ~1 ms: saves a cache-line write per packet. */
	if (now - ct->last_seen_ns > 1000000ULL)
		ct->last_seen_ns = now;
	if (pkt->tcp_flags & ~ct->tcp_flags)
		ct->tcp_flags |= pkt->tcp_flags;
	/* The plain read only skips the atomic for flows already closing; the atomic decides. */
	if ((pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(ct->flags & VIPR_CT_F_CLOSING) &&
	    ct4_set_flags(ct, VIPR_CT_F_CLOSING) && forward)
		lc_account(ct->backend_id, -1);
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
