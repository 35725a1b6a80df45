/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for IPv6, over vipr_ct6_tcp_v1, vipr_ct6_tcp_syn_v1 and vipr_ct6_udp_v1,
 * with the semantics of conntrack.h (read it first): two entries per flow, half-open TCP flows
 * promoted when the client acknowledges the backend's answer, closing on FIN/RST, a new flow
 * without SNAT refused while an open flow holds its reply tuple, SNAT ports from vipr_config's
 * range. The flow-state decisions (touch, reuse, promotion, closing) are conntrack.h's own,
 * called with the fields of a vipr_ct6_value; what is here differs from IPv4 only in the width of
 * the addresses in keys and values.
 */
#ifndef __VIPR_CT6_H
#define __VIPR_CT6_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parse6.h"
#include "conntrack.h"
#include "stats.h"

static __always_inline void ct6_key_forward(struct vipr_ct6_key *key, const struct packet6 *pkt)
{
	ipv6_copy(key->saddr, pkt->saddr);
	ipv6_copy(key->daddr, pkt->daddr);
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
	key->dir = VIPR_CT_FORWARD;
	key->pad[0] = 0;
	key->pad[1] = 0;
}

static __always_inline void ct6_key_reply(struct vipr_ct6_key *key, const struct packet6 *pkt)
{
	ct6_key_forward(key, pkt);
	key->dir = VIPR_CT_REPLY;
}

static __always_inline void *ct6_new_map(__u8 proto)
{
	return proto == IPPROTO_TCP ? (void *)&vipr_ct6_tcp_syn_v1 : (void *)&vipr_ct6_udp_v1;
}

/* As ct4_lookup: established TCP first, then half-open; UDP in its own map. */
static __always_inline struct vipr_ct6_value *ct6_lookup(const struct vipr_ct6_key *key, bool *established)
{
	struct vipr_ct6_value *ct;

	*established = false;
	if (key->proto != IPPROTO_TCP)
		return bpf_map_lookup_elem(&vipr_ct6_udp_v1, key);
	ct = bpf_map_lookup_elem(&vipr_ct6_tcp_v1, key);
	if (ct) {
		*established = true;
		return ct;
	}
	return bpf_map_lookup_elem(&vipr_ct6_tcp_syn_v1, key);
}

/* The reply key of a flow, from its forward key and value (as ct4_reply_key_of). */
static __always_inline void ct6_reply_key_of(struct vipr_ct6_key *rep, const struct vipr_ct6_key *fwd,
					     const struct vipr_ct6_value *ct)
{
	bool snat = !ipv6_is_zero(ct->snat_addr);

	ipv6_copy(rep->saddr, ct->nat_addr);
	rep->sport = ct->nat_port;
	ipv6_copy(rep->daddr, snat ? ct->snat_addr : fwd->saddr);
	rep->dport = snat ? ct->snat_port : fwd->sport;
	rep->proto = fwd->proto;
	rep->dir = VIPR_CT_REPLY;
	rep->pad[0] = 0;
	rep->pad[1] = 0;
}

/* The forward key of a flow, from its reply key and value (as ct4_forward_key_of). */
static __always_inline void ct6_forward_key_of(struct vipr_ct6_key *fwd, const struct vipr_ct6_key *rep,
					       const struct vipr_ct6_value *ct)
{
	bool snat = !ipv6_is_zero(ct->snat_addr);

	ipv6_copy(fwd->saddr, snat ? ct->snat_addr : rep->daddr);
	fwd->sport = snat ? ct->snat_port : rep->dport;
	ipv6_copy(fwd->daddr, ct->nat_addr);
	fwd->dport = ct->nat_port;
	fwd->proto = rep->proto;
	fwd->dir = VIPR_CT_FORWARD;
	fwd->pad[0] = 0;
	fwd->pad[1] = 0;
}

static __always_inline bool ct6_key_equal(const struct vipr_ct6_key *a, const struct vipr_ct6_key *b)
{
	return ipv6_equal(a->saddr, b->saddr) && ipv6_equal(a->daddr, b->daddr) && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto && a->dir == b->dir;
}

/* As ct4_set_flags (conntrack.h explains which fields race and how). */
static __always_inline __u8 ct6_set_flags(struct vipr_ct6_value *ct, __u8 bits)
{
	return ct_set_flags(&ct->flags, bits);
}

static __always_inline void ct6_touch(struct vipr_ct6_value *ct, const struct packet6 *pkt,
				      __u64 now, bool forward)
{
	ct_touch(&ct->last_seen_ns, &ct->tcp_flags, &ct->flags, &ct->backend_id, pkt->tcp_flags, now, forward);
}

/*
 * As ct4_promote: reply entry first, the forward one claimed with BPF_NOEXIST, then the half-open
 * ones go. A subprogram (as ct6_create): the copies of two 64-byte values would not fit on the
 * stack beside the rest of a packet's path; once per flow, the call costs nothing that matters.
 */
/* The __noinline helpers are marked unused: the GC object includes this header for the key helpers alone. */
static __noinline __attribute__((unused)) struct vipr_ct6_value *ct6_promote(const struct vipr_ct6_key *fwd_key,
							  struct vipr_ct6_value *ct, __u32 len)
{
	struct vipr_ct6_value *rep, *est;
	struct vipr_ct6_key rep_key;
	long err;

	ct6_reply_key_of(&rep_key, fwd_key, ct);
	rep = bpf_map_lookup_elem(&vipr_ct6_tcp_syn_v1, &rep_key);
	if (!rep || !(rep->flags & VIPR_CT_F_SEEN_REPLY))
		return NULL;
	/* One value copy at a time, each in a block of its own, so they share stack slots. */
	{
		struct vipr_ct6_value rep_val = *rep;

		if (bpf_map_update_elem(&vipr_ct6_tcp_v1, &rep_key, &rep_val, BPF_ANY)) {
			stats_count(VIPR_STAT_CT_TCP_FULL, len);
			return NULL;
		}
	}
	{
		struct vipr_ct6_value fwd_val = *ct;

		err = bpf_map_update_elem(&vipr_ct6_tcp_v1, fwd_key, &fwd_val, BPF_NOEXIST);
	}
	if (err && err != -CT_EEXIST) {
		bpf_map_delete_elem(&vipr_ct6_tcp_v1, &rep_key);
		stats_count(VIPR_STAT_CT_TCP_FULL, len);
		return NULL;
	}
	est = bpf_map_lookup_elem(&vipr_ct6_tcp_v1, fwd_key);
	if (err)
		return est;
	if (est && (ct->flags & VIPR_CT_F_CLOSING))
		ct6_set_flags(est, VIPR_CT_F_CLOSING);
	bpf_map_delete_elem(&vipr_ct6_tcp_syn_v1, fwd_key);
	bpf_map_delete_elem(&vipr_ct6_tcp_syn_v1, &rep_key);
	stats_count(VIPR_STAT_CT_PROMOTED, len);
	return est;
}

/* As ct4_forget_established. */
static __always_inline void ct6_forget_established(const struct vipr_ct6_key *fwd_key,
						   const struct vipr_ct6_value *ct)
{
	struct vipr_ct6_key rep_key;

	ct6_reply_key_of(&rep_key, fwd_key, ct);
	bpf_map_delete_elem(&vipr_ct6_tcp_v1, &rep_key);
	bpf_map_delete_elem(&vipr_ct6_tcp_v1, fwd_key);
}

/*
 * As ct4_take_reply_tuple: frees the reply tuple of a new TCP flow without SNAT, unless an open
 * flow holds it. A subprogram, for its three keys (see ct6_promote).
 */
static __noinline __attribute__((unused)) bool ct6_take_reply_tuple(const struct packet6 *pkt, const struct vipr_backend6 *be)
{
	struct vipr_ct6_key rep_key = {
		.sport = be->port,
		.dport = pkt->sport,
		.proto = pkt->proto,
		.dir = VIPR_CT_REPLY,
	};
	struct vipr_ct6_key fwd_key, back;
	struct vipr_ct6_value *rep, *fwd;
	bool established;

	if (pkt->proto != IPPROTO_TCP)
		return true;
	ipv6_copy(rep_key.saddr, be->addr);
	ipv6_copy(rep_key.daddr, pkt->saddr);
	rep = bpf_map_lookup_elem(&vipr_ct6_tcp_v1, &rep_key);
	if (!rep)
		return true;
	ct6_forward_key_of(&fwd_key, &rep_key, rep);
	fwd = ct6_lookup(&fwd_key, &established);
	if (fwd) {
		ct6_reply_key_of(&back, &fwd_key, fwd);
		if (!ct6_key_equal(&back, &rep_key))
			fwd = NULL;
	}
	if (fwd && ct_still_open(fwd->flags, rep->flags, fwd->tcp_flags, rep->tcp_flags))
		return false;
	if (fwd)
		bpf_map_delete_elem(established ? (void *)&vipr_ct6_tcp_v1 : (void *)&vipr_ct6_tcp_syn_v1,
				    &fwd_key);
	bpf_map_delete_elem(&vipr_ct6_tcp_v1, &rep_key);
	return true;
}

struct ct6_new {
	__u32 svc_id;
	__u32 backend_id;
	__be32 snat_addr[4]; /* all zero: no SNAT */
	__u8 flags;          /* VIPR_CT_F_SNAT, VIPR_CT_F_REDIRECT */
};

/* As ct4_claim_reply. */
static __always_inline bool ct6_claim_reply(const struct vipr_ct6_key *rep_key,
					    const struct vipr_ct6_value *val)
{
	bool tcp = rep_key->proto == IPPROTO_TCP;

	if (tcp && bpf_map_lookup_elem(&vipr_ct6_tcp_v1, rep_key))
		return false;
	/* As ct4_claim_reply: a taken port fails before the LRU update could evict a live flow. */
	if (bpf_map_lookup_elem(ct6_new_map(rep_key->proto), rep_key))
		return false;
	if (bpf_map_update_elem(ct6_new_map(rep_key->proto), rep_key, val, BPF_NOEXIST))
		return false;
	if (tcp && bpf_map_lookup_elem(&vipr_ct6_tcp_v1, rep_key)) {
		bpf_map_delete_elem(&vipr_ct6_tcp_syn_v1, rep_key);
		return false;
	}
	return true;
}

/* The ordered search over the SNAT port range, as struct snat_search. */
struct snat6_search {
	struct vipr_ct6_key rep_key;
	struct vipr_ct6_value val;
	__u32 lo;
	__u32 span;
	__u32 start;
	__be16 port;
};

static long snat6_try_port(__u32 i, void *data)
{
	struct snat6_search *s = data;
	__u32 off = s->start + i;

	if (off >= s->span)
		off -= s->span;
	s->rep_key.dport = bpf_htons(s->lo + off);
	if (!ct6_claim_reply(&s->rep_key, &s->val))
		return 0;
	s->port = s->rep_key.dport;
	return 1;
}

/*
 * As ct4_snat_port: a few random tries, then the whole range in order from a random start, not
 * again for VIPR_SNAT_FULL_NS after it found nothing.
 */
static __always_inline __be16 ct6_snat_port(struct snat6_search *s, const struct vipr_config *cfg, __u64 now)
{
	int i;

	s->lo = cfg->snat_port_min;
	s->span = cfg->snat_port_max >= cfg->snat_port_min ? cfg->snat_port_max - cfg->snat_port_min + 1 : 1;
	s->port = 0;
	for (i = 0; i < SNAT_PORT_RANDOM_TRIES; i++) {
		s->rep_key.dport = bpf_htons(s->lo + bpf_get_prandom_u32() % s->span);
		if (ct6_claim_reply(&s->rep_key, &s->val))
			return s->rep_key.dport;
	}
	s->rep_key.dport = 0;
	if (snat_range_full(&vipr_snat_full6_v1, &s->rep_key, now, false))
		return 0;
	stats_count(VIPR_STAT_SNAT_PORT_WALK, 0);
	s->start = bpf_get_prandom_u32() % s->span;
	bpf_loop(s->span, snat6_try_port, s, 0);
	if (!s->port) {
		s->rep_key.dport = 0;
		snat_range_full(&vipr_snat_full6_v1, &s->rep_key, now, true);
	}
	return s->port;
}

/* As ct4_create: both entries, the reply one first. Returns the flow's source port, or 0. */
static __noinline __attribute__((unused)) __be16 ct6_create(const struct packet6 *pkt, const struct vipr_backend6 *be,
					 const struct ct6_new *n, const struct vipr_config *cfg, __u64 now)
{
	struct snat6_search s = {
		.val = {
			.created_ns = now,
			.last_seen_ns = now,
			.nat_port = pkt->dport,
			.flags = n->flags,
			.svc_id = n->svc_id,
			.backend_id = n->backend_id,
		},
	};
	void *map = ct6_new_map(pkt->proto);
	__be16 sport = pkt->sport, rep_dport;
	bool snat = !ipv6_is_zero(n->snat_addr);

	ipv6_copy(s.val.nat_addr, pkt->daddr);
	ipv6_copy(s.rep_key.saddr, be->addr);
	s.rep_key.sport = be->port;
	s.rep_key.proto = pkt->proto;
	s.rep_key.dir = VIPR_CT_REPLY;
	if (snat) {
		ipv6_copy(s.val.snat_addr, pkt->saddr);
		s.val.snat_port = pkt->sport;
		ipv6_copy(s.rep_key.daddr, n->snat_addr);
		sport = ct6_snat_port(&s, cfg, now);
		if (!sport)
			return 0;
	} else {
		ipv6_copy(s.rep_key.daddr, pkt->saddr);
		s.rep_key.dport = pkt->sport;
		if (bpf_map_update_elem(map, &s.rep_key, &s.val, BPF_ANY))
			return 0;
	}

	/* The reply key's buffer takes the forward key: one key less on the stack. */
	rep_dport = s.rep_key.dport;
	ct6_key_forward(&s.rep_key, pkt);
	ipv6_copy(s.val.nat_addr, be->addr);
	s.val.nat_port = be->port;
	ipv6_copy(s.val.snat_addr, n->snat_addr);
	s.val.snat_port = snat ? sport : 0;
	s.val.tcp_flags = pkt->tcp_flags;
	if (bpf_map_update_elem(map, &s.rep_key, &s.val, BPF_ANY)) {
		ipv6_copy(s.rep_key.saddr, be->addr);
		ipv6_copy(s.rep_key.daddr, snat ? n->snat_addr : pkt->saddr);
		s.rep_key.sport = be->port;
		s.rep_key.dport = rep_dport;
		s.rep_key.dir = VIPR_CT_REPLY;
		bpf_map_delete_elem(map, &s.rep_key);
		return 0;
	}
	lc_account(n->backend_id, 1);
	return sport;
}

#endif /* __VIPR_CT6_H */
