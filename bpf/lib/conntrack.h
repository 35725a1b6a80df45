/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: every flow has two entries, the forward one (client -> frontend, as the
 * client sends it) and the reply one (backend -> client or -> the SNAT address, as the backend
 * sends it), in the same map. The forward entry pins the backend for the flow's life, also after
 * the backend left the service: established connections drain instead of breaking. The reply
 * entry carries the frontend address the client used (for NodePorts that is the node address the
 * client chose), so replies are rewritten without any per-service state.
 *
 * Which map a flow lives in (struct vipr_ct_key explains the three): a new TCP flow starts in
 * vipr_ct_tcp_syn_v1 and is promoted to vipr_ct_tcp_v1 when the client acknowledges an answer of
 * the backend (a forward ACK after a reply was rewritten). A spoofed SYN flood never gets there:
 * its sources never see the backend's SYN-ACK, so it can only evict other half-open flows.
 * vipr_ct_tcp_v1 is no LRU: established entries leave only by closing and the agent's GC
 * (bpf/ct_gc.bpf.c). Lookups try vipr_ct_tcp_v1 first, so established flows pay one lookup.
 */
#ifndef __VIPR_CONNTRACK_H
#define __VIPR_CONNTRACK_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parse.h"
#include "stats.h"

/* Random tries at a free SNAT port before the range is searched in order, from a random start. */
#define SNAT_PORT_RANDOM_TRIES 8

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

/* The map new flows of @proto start in. */
static __always_inline void *ct4_new_map(__u8 proto)
{
	return proto == IPPROTO_TCP ? (void *)&vipr_ct_tcp_syn_v1 : (void *)&vipr_ct_udp_v1;
}

/*
 * Finds a tracked entry: established TCP first, then half-open TCP; UDP in its own map.
 * *@established tells which TCP map answered.
 */
static __always_inline struct vipr_ct_value *ct4_lookup(const struct vipr_ct_key *key, bool *established)
{
	struct vipr_ct_value *ct;

	*established = false;
	if (key->proto != IPPROTO_TCP)
		return bpf_map_lookup_elem(&vipr_ct_udp_v1, key);
	ct = bpf_map_lookup_elem(&vipr_ct_tcp_v1, key);
	if (ct) {
		*established = true;
		return ct;
	}
	return bpf_map_lookup_elem(&vipr_ct_tcp_syn_v1, key);
}

/* The reply key of a flow, from its forward key and value (replyKeyOf in src/sync/bpf-dataplane.ts). */
static __always_inline void ct4_reply_key_of(struct vipr_ct_key *rep, const struct vipr_ct_key *fwd,
					     const struct vipr_ct_value *ct)
{
	rep->saddr = ct->nat_addr;
	rep->sport = ct->nat_port;
	rep->daddr = ct->snat_addr ? ct->snat_addr : fwd->saddr;
	rep->dport = ct->snat_addr ? ct->snat_port : fwd->sport;
	rep->proto = fwd->proto;
	rep->dir = VIPR_CT_REPLY;
	rep->pad[0] = 0;
	rep->pad[1] = 0;
}

/* The forward key of a flow, from its reply key and value (the inverse of ct4_reply_key_of). */
static __always_inline void ct4_forward_key_of(struct vipr_ct_key *fwd, const struct vipr_ct_key *rep,
					       const struct vipr_ct_value *ct)
{
	fwd->saddr = ct->snat_addr ? ct->snat_addr : rep->daddr;
	fwd->sport = ct->snat_addr ? ct->snat_port : rep->dport;
	fwd->daddr = ct->nat_addr;
	fwd->dport = ct->nat_port;
	fwd->proto = rep->proto;
	fwd->dir = VIPR_CT_FORWARD;
	fwd->pad[0] = 0;
	fwd->pad[1] = 0;
}

static __always_inline bool ct4_key_equal(const struct vipr_ct_key *a, const struct vipr_ct_key *b)
{
	return a->saddr == b->saddr && a->daddr == b->daddr && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto && a->dir == b->dir;
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
/* Where flags sits in its word; the same in vipr_ct6_value, so the flow-state code below serves both. */
#define CT_FLAGS_IN_WORD (__builtin_offsetof(struct vipr_ct_value, flags) - CT_FLAGS_WORD_OFF)
_Static_assert(__builtin_offsetof(struct vipr_ct6_value, nat_port) % 4 == 0 &&
	       __builtin_offsetof(struct vipr_ct6_value, flags) -
	       __builtin_offsetof(struct vipr_ct6_value, nat_port) == CT_FLAGS_IN_WORD,
	       "vipr_ct6_value.flags lies in its word as vipr_ct_value.flags does");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CT_FLAGS_SHIFT (CT_FLAGS_IN_WORD * 8)
#else
#define CT_FLAGS_SHIFT ((3 - CT_FLAGS_IN_WORD) * 8)
#endif

/*
 * Family-independent flow state: these take the fields of a vipr_ct_value or vipr_ct6_value
 * (their layouts differ only in address width), so both families decide alike.
 */

/* Sets @bits in *@flags atomically; returns the bits of @bits that were clear (set by us). */
static __always_inline __u8 ct_set_flags(__u8 *flags, __u8 bits)
{
	__u32 *word = (__u32 *)((void *)flags - CT_FLAGS_IN_WORD);
	__u32 old = __sync_fetch_and_or(word, (__u32)bits << CT_FLAGS_SHIFT);

	return bits & ~(__u8)(old >> CT_FLAGS_SHIFT);
}

static __always_inline __u8 ct4_set_flags(struct vipr_ct_value *ct, __u8 bits)
{
	return ct_set_flags(&ct->flags, bits);
}

/* A reply was rewritten: the flow is established. */
static __always_inline void ct_mark_replied(__u8 *flags)
{
	if (!(*flags & VIPR_CT_F_SEEN_REPLY))
		ct_set_flags(flags, VIPR_CT_F_SEEN_REPLY);
}

static __always_inline void ct4_mark_replied(struct vipr_ct_value *ct)
{
	ct_mark_replied(&ct->flags);
}

/*
 * Updates a tracked flow with one more packet. The first FIN or RST marks it closing: a new SYN
 * on the same 5-tuple is then balanced afresh, and the backend's open-flow count drops, once.
 */
/*
 * The clock tracked packets keep time by: the coarse monotonic clock (the last tick's time, no
 * clock read: ~15 ns less a packet here than bpf_ktime_get_ns). It lags that clock by at most a
 * tick, far below every conntrack timeout; creation and GC keep the precise one.
 */
static __always_inline __u64 ct_clock(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void ct_touch(__u64 *last_seen_ns, __u8 *tcp_flags, __u8 *flags,
				     const __u32 *backend_id, __u8 pkt_tcp_flags, __u64 now, bool forward)
{
	/* Written only when it moves forward by more than ~1 ms: saves a cache-line write per
	 * packet, and a coarse reading a tick behind the precise clock never moves it back. */
	if ((__s64)(now - *last_seen_ns) > 1000000LL)
		*last_seen_ns = now;
	if (pkt_tcp_flags & ~*tcp_flags)
		*tcp_flags |= pkt_tcp_flags;
	/* The plain read only skips the atomic for flows already closing; the atomic decides. */
	if ((pkt_tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(*flags & VIPR_CT_F_CLOSING) &&
	    ct_set_flags(flags, VIPR_CT_F_CLOSING) && forward)
		lc_account(*backend_id, -1);
}

static __always_inline void ct4_touch(struct vipr_ct_value *ct, const struct packet *pkt,
				      __u64 now, bool forward)
{
	ct_touch(&ct->last_seen_ns, &ct->tcp_flags, &ct->flags, &ct->backend_id, pkt->tcp_flags, now, forward);
}

/* A bare SYN on a flow that was closing is a new connection reusing the 5-tuple. */
static __always_inline bool ct_is_reusable(__u8 ct_flags, __u8 pkt_tcp_flags)
{
	bool bare_syn = (pkt_tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;

	return !(bare_syn && (ct_flags & VIPR_CT_F_CLOSING));
}

static __always_inline bool ct4_is_reusable(const struct vipr_ct_value *ct,
					     const struct packet *pkt)
{
	return ct_is_reusable(ct->flags, pkt->tcp_flags);
}

/* A half-open flow may be promoted by a plain ACK of the client (FIN|ACK included). */
static __always_inline bool ct_may_promote(__u8 ct_flags, __u8 pkt_tcp_flags)
{
	return (pkt_tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_ACK &&
	       !(ct_flags & VIPR_CT_F_CLOSING);
}

static __always_inline bool ct4_may_promote(const struct vipr_ct_value *ct, const struct packet *pkt)
{
	return ct_may_promote(ct->flags, pkt->tcp_flags);
}

/*
 * Whether an open flow holds the reply tuple a new flow wants (see ct4_take_reply_tuple): a flow
 * closed both ways or reset gives it up.
 */
static __always_inline bool ct_still_open(__u8 fwd_flags, __u8 rep_flags, __u8 fwd_tcp, __u8 rep_tcp)
{
	return !(fwd_flags & rep_flags & VIPR_CT_F_CLOSING) && !((fwd_tcp | rep_tcp) & TCP_FLAG_RST);
}

#define CT_EEXIST 17

/*
 * Moves a half-open flow to vipr_ct_tcp_v1 once the backend has answered (its reply entry was
 * used: VIPR_CT_F_SEEN_REPLY) and the client acknowledges. The reply entry goes first, so a reply
 * always finds its flow; the forward entry is claimed with BPF_NOEXIST, so of two CPUs promoting
 * the same flow exactly one moves it; then the half-open entries go. Returns the established
 * forward entry, or NULL when the flow stays half-open (not answered yet, or vipr_ct_tcp_v1 full:
 * counted, and the flow is still served from the half-open map). @sees_replies false: the node
 * balancing a DSR flow, which the replies never cross (lib/dsr.h), promotes on the client's ACK
 * alone, as Cilium's DSR does; a spoofed ACK after a spoofed SYN can then promote a flow.
 */
static __always_inline struct vipr_ct_value *ct4_promote(const struct vipr_ct_key *fwd_key,
							 struct vipr_ct_value *ct, __u32 len, bool sees_replies)
{
	struct vipr_ct_value fwd_val, rep_val, *rep, *est;
	struct vipr_ct_key rep_key;
	long err;

	ct4_reply_key_of(&rep_key, fwd_key, ct);
	rep = bpf_map_lookup_elem(&vipr_ct_tcp_syn_v1, &rep_key);
	if (!rep || (sees_replies && !(rep->flags & VIPR_CT_F_SEEN_REPLY)))
		return NULL;
	rep_val = *rep;
	fwd_val = *ct;
	if (bpf_map_update_elem(&vipr_ct_tcp_v1, &rep_key, &rep_val, BPF_ANY)) {
		stats_count(VIPR_STAT_CT_TCP_FULL, len);
		return NULL;
	}
	err = bpf_map_update_elem(&vipr_ct_tcp_v1, fwd_key, &fwd_val, BPF_NOEXIST);
	if (err && err != -CT_EEXIST) {
		bpf_map_delete_elem(&vipr_ct_tcp_v1, &rep_key);
		stats_count(VIPR_STAT_CT_TCP_FULL, len);
		return NULL;
	}
	est = bpf_map_lookup_elem(&vipr_ct_tcp_v1, fwd_key);
	if (err)
		return est; /* another CPU promoted it */
	/* A FIN or RST another CPU saw on the half-open entry since the copy: it counted the close. */
	if (est && (ct->flags & VIPR_CT_F_CLOSING))
		ct4_set_flags(est, VIPR_CT_F_CLOSING);
	bpf_map_delete_elem(&vipr_ct_tcp_syn_v1, fwd_key);
	bpf_map_delete_elem(&vipr_ct_tcp_syn_v1, &rep_key);
	stats_count(VIPR_STAT_CT_PROMOTED, len);
	return est;
}

/*
 * Drops both entries of an established flow that closed and whose 5-tuple a new SYN reuses: the
 * new flow starts half-open, and the old entries, looked up first, must not shadow it.
 */
static __always_inline void ct4_forget_established(const struct vipr_ct_key *fwd_key,
						   const struct vipr_ct_value *ct)
{
	struct vipr_ct_key rep_key;

	ct4_reply_key_of(&rep_key, fwd_key, ct);
	bpf_map_delete_elem(&vipr_ct_tcp_v1, &rep_key);
	bpf_map_delete_elem(&vipr_ct_tcp_v1, fwd_key);
}

/*
 * Frees the reply tuple of a new TCP flow without SNAT (backend -> client address and port) in
 * vipr_ct_tcp_v1. A client that reuses a source port towards another frontend with the same
 * backend (TIME_WAIT reuse under a connection-per-request load) makes the same reply tuple as
 * the earlier flow; that flow's entry, looked up before the half-open one, would catch the new
 * flow's answers and rewrite them to the old frontend, so the handshake would never complete.
 * A closed flow (a FIN each way, or a reset) leaves with both its entries, and so does a reply
 * entry whose forward entry is gone or belongs to another flow now. A flow still open, also one
 * closed in one direction only (the other side may still send), keeps its tuple and the new flow
 * is refused (returns false): its backend could not tell the two connections apart.
 */
static __always_inline bool ct4_take_reply_tuple(const struct packet *pkt, const struct vipr_backend *be)
{
	struct vipr_ct_key rep_key = {
		.saddr = be->addr,
		.daddr = pkt->saddr,
		.sport = be->port,
		.dport = pkt->sport,
		.proto = pkt->proto,
		.dir = VIPR_CT_REPLY,
	};
	struct vipr_ct_key fwd_key, back;
	struct vipr_ct_value *rep, *fwd;
	bool established;

	/* With one map for every flow (the previous layout's test build) the new entry replaces it. */
	if (pkt->proto != IPPROTO_TCP || VIPR_CT_ONE_MAP)
		return true;
	rep = bpf_map_lookup_elem(&vipr_ct_tcp_v1, &rep_key);
	if (!rep)
		return true;
	ct4_forward_key_of(&fwd_key, &rep_key, rep);
	fwd = ct4_lookup(&fwd_key, &established);
	if (fwd) {
		ct4_reply_key_of(&back, &fwd_key, fwd);
		if (!ct4_key_equal(&back, &rep_key))
			fwd = NULL;
	}
	if (fwd && ct_still_open(fwd->flags, rep->flags, fwd->tcp_flags, rep->tcp_flags))
		return false;
	if (fwd)
		bpf_map_delete_elem(established ? (void *)&vipr_ct_tcp_v1 : (void *)&vipr_ct_tcp_syn_v1,
				    &fwd_key);
	bpf_map_delete_elem(&vipr_ct_tcp_v1, &rep_key);
	return true;
}

struct ct_new {
	__u32 svc_id;
	__u32 backend_id;
	__be32 snat_addr; /* 0: no SNAT */
	__u8 flags;       /* VIPR_CT_F_SNAT, VIPR_CT_F_REDIRECT */
};

/*
 * Claims @rep_key for a new flow: free in the flow's map (BPF_NOEXIST makes the claim atomic)
 * and, for TCP, not held by an established flow either. A promotion writes vipr_ct_tcp_v1 before
 * it deletes its half-open entry, so the check after the claim catches one that ran between the
 * first check and the claim.
 */
static __always_inline bool ct4_claim_reply(const struct vipr_ct_key *rep_key,
					    const struct vipr_ct_value *val)
{
	/* With one map for every flow (the previous layout's test build) the claim is all it takes. */
	bool tcp = rep_key->proto == IPPROTO_TCP && !VIPR_CT_ONE_MAP;

	if (tcp && bpf_map_lookup_elem(&vipr_ct_tcp_v1, rep_key))
		return false;
	/* A taken port fails here, not in the update: an LRU update takes a free node before it
	 * looks for the key, and with the map full that evicts live flows even when it then fails. */
	if (bpf_map_lookup_elem(ct4_new_map(rep_key->proto), rep_key))
		return false;
	if (bpf_map_update_elem(ct4_new_map(rep_key->proto), rep_key, val, BPF_NOEXIST))
		return false;
	if (tcp && bpf_map_lookup_elem(&vipr_ct_tcp_v1, rep_key)) {
		bpf_map_delete_elem(&vipr_ct_tcp_syn_v1, rep_key);
		return false;
	}
	return true;
}

/* The ordered search over the SNAT port range (a bpf_loop callback: one port per call). */
struct snat_search {
	struct vipr_ct_key rep_key;
	struct vipr_ct_value val;
	__u32 lo;
	__u32 span;
	__u32 start;
	__be16 port; /* the port claimed, network order; 0 while none */
};

static long snat_try_port(__u32 i, void *data)
{
	struct snat_search *s = data;
	__u32 off = s->start + i;

	if (off >= s->span)
		off -= s->span;
	s->rep_key.dport = bpf_htons(s->lo + off);
	if (!ct4_claim_reply(&s->rep_key, &s->val))
		return 0;
	s->port = s->rep_key.dport;
	return 1;
}

/*
 * Whether a walk of the SNAT ports of @range (a reply key with port 0, in @map: vipr_snat_full_v1
 * or vipr_snat_full6_v1) found none free less than VIPR_SNAT_FULL_NS ago; with @walked_in_vain,
 * records that one just did.
 */
static __always_inline bool snat_range_full(void *map, const void *range, __u64 now, bool walked_in_vain)
{
	struct vipr_snat_full *full;

	if (walked_in_vain) {
		struct vipr_snat_full until = { .until_ns = now + VIPR_SNAT_FULL_NS };

		bpf_map_update_elem(map, range, &until, BPF_ANY);
		return true;
	}
	full = bpf_map_lookup_elem(map, range);
	return full && (__s64)(full->until_ns - now) > 0;
}

/*
 * Picks a free SNAT source port for @s->rep_key: a few random tries (cheap while the range is
 * mostly free), then every port of the range in order from a random start, so a flow is dropped
 * only when the whole range is taken for this backend; after such a walk, flows to the backend
 * are dropped without one for VIPR_SNAT_FULL_NS (a flood of new sources would otherwise make
 * every packet walk the range). Returns the port (network order) or 0.
 */
static __always_inline __be16 ct4_snat_port(struct snat_search *s, const struct vipr_config *cfg, __u64 now)
{
	int i;

	s->lo = cfg->snat_port_min;
	s->span = cfg->snat_port_max >= cfg->snat_port_min ? cfg->snat_port_max - cfg->snat_port_min + 1 : 1;
	s->port = 0;
	for (i = 0; i < SNAT_PORT_RANDOM_TRIES; i++) {
		s->rep_key.dport = bpf_htons(s->lo + bpf_get_prandom_u32() % s->span);
		if (ct4_claim_reply(&s->rep_key, &s->val))
			return s->rep_key.dport;
	}
	/* The range's key: the reply key with port 0. */
	s->rep_key.dport = 0;
	if (snat_range_full(&vipr_snat_full_v1, &s->rep_key, now, false))
		return 0;
	stats_count(VIPR_STAT_SNAT_PORT_WALK, 0);
	s->start = bpf_get_prandom_u32() % s->span;
	bpf_loop(s->span, snat_try_port, s, 0);
	if (!s->port) {
		s->rep_key.dport = 0;
		snat_range_full(&vipr_snat_full_v1, &s->rep_key, now, true);
	}
	return s->port;
}

/*
 * Creates both entries of a new flow in the map new flows of its protocol start in, the reply
 * entry first, so that by the time a packet can have reached the backend its answer is
 * recognised. Returns the source port the flow leaves with (network order), or 0 when no SNAT
 * port was free or an entry could not be written.
 */
static __always_inline __be16 ct4_create(const struct packet *pkt, const struct vipr_backend *be,
					 const struct ct_new *n, const struct vipr_config *cfg,
					 __u64 now)
{
	struct snat_search s = {
		.val = {
			.created_ns = now,
			.last_seen_ns = now,
			.nat_addr = pkt->daddr,
			.nat_port = pkt->dport,
			.flags = n->flags,
			.svc_id = n->svc_id,
			.backend_id = n->backend_id,
		},
	};
	void *map = ct4_new_map(pkt->proto);
	struct vipr_ct_key fwd_key;
	__be16 sport = pkt->sport;

	s.rep_key.saddr = be->addr;
	s.rep_key.sport = be->port;
	s.rep_key.proto = pkt->proto;
	s.rep_key.dir = VIPR_CT_REPLY;
	if (n->snat_addr) {
		s.val.snat_addr = pkt->saddr;
		s.val.snat_port = pkt->sport;
		s.rep_key.daddr = n->snat_addr;
		sport = ct4_snat_port(&s, cfg, now);
		if (!sport)
			return 0;
	} else {
		s.rep_key.daddr = pkt->saddr;
		s.rep_key.dport = pkt->sport;
		if (bpf_map_update_elem(map, &s.rep_key, &s.val, BPF_ANY))
			return 0;
	}

	ct4_key_forward(&fwd_key, pkt);
	s.val.nat_addr = be->addr;
	s.val.nat_port = be->port;
	s.val.snat_addr = n->snat_addr;
	s.val.snat_port = n->snat_addr ? sport : 0;
	s.val.tcp_flags = pkt->tcp_flags;
	if (bpf_map_update_elem(map, &fwd_key, &s.val, BPF_ANY)) {
		bpf_map_delete_elem(map, &s.rep_key);
		return 0;
	}
	lc_account(n->backend_id, 1);
	return sport;
}

#endif /* __VIPR_CONNTRACK_H */
