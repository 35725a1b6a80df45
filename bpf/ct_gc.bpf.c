// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Conntrack garbage collection in the kernel: one map-element iterator per conntrack map. The
 * agent creates an iterator from the link and read()s it from libuv's thread pool, so a pass over
 * a million entries costs the event loop nothing; the kernel walks the map bucket by bucket (no
 * lock held across buckets) and every read() returns after a page of reports (struct
 * vipr_ct_gc_report every VIPR_CT_GC_REPORT_EVERY entries, and one at the end).
 *
 * A flow is judged on its forward entry: idle (neither direction seen) for longer than its
 * state's timeout, it goes with its reply entry. A reply entry whose forward entry is gone (a
 * crash between the two writes, an LRU eviction) goes once it is idle longer than its timeout.
 * Deleting an open flow drops its backend's lc count, once: through the same atomic closing flag
 * the datapath uses, so a FIN racing the GC cannot count twice.
 *
 * IPv6's conntrack maps (vipr_ct6_*) get iterators of their own with the same rules and timeouts:
 * only the key and the address width differ, so one visit is written once per key type.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"
#include "lib/conntrack.h"

struct seq_file;
struct bpf_map;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map_elem {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	void *key;
	void *value;
} __attribute__((preserve_access_index));

/* Set by the loader (src/bpf/ct-gc.ts) from the agent's timeouts; these are Cilium's defaults. */
const volatile struct vipr_ct_timeouts ct_timeouts = {
	.syn_ns = 60ULL * 1000000000ULL,
	.established_ns = 21600ULL * 1000000000ULL,
	.closing_ns = 10ULL * 1000000000ULL,
	.udp_ns = 60ULL * 1000000000ULL,
};

/* The running pass (one reader at a time: the agent runs passes one after another). */
static struct vipr_ct_gc_report report;
static __u64 report_session;

enum ct_gc_table {
	CT_GC_TCP,
	CT_GC_TCP_SYN,
	CT_GC_UDP,
};

static __always_inline void *ct_gc_map(enum ct_gc_table t)
{
	if (t == CT_GC_TCP)
		return &vipr_ct_tcp_v1;
	if (t == CT_GC_TCP_SYN)
		return &vipr_ct_tcp_syn_v1;
	return &vipr_ct_udp_v1;
}

static __always_inline void *ct6_gc_map(enum ct_gc_table t)
{
	if (t == CT_GC_TCP)
		return &vipr_ct6_tcp_v1;
	if (t == CT_GC_TCP_SYN)
		return &vipr_ct6_tcp_syn_v1;
	return &vipr_ct6_udp_v1;
}

static __always_inline bool ct6_addr_zero(const __be32 a[4])
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

/*
 * Sets VIPR_CT_F_CLOSING in an IPv6 value atomically, as ct4_set_flags does for IPv4 (the word
 * holding nat_port, flags and tcp_flags, fetch-or'ed); returns whether this call set it.
 */
#define CT6_FLAGS_WORD_OFF __builtin_offsetof(struct vipr_ct6_value, nat_port)
_Static_assert(CT6_FLAGS_WORD_OFF % 4 == 0 &&
	       __builtin_offsetof(struct vipr_ct6_value, flags) - CT6_FLAGS_WORD_OFF ==
	       __builtin_offsetof(struct vipr_ct_value, flags) - CT_FLAGS_WORD_OFF,
	       "vipr_ct6_value.flags lies in its word as vipr_ct_value.flags does");
static __always_inline bool ct6_gc_set_closing(struct vipr_ct6_value *ct)
{
	__u32 *word = (__u32 *)((void *)ct + CT6_FLAGS_WORD_OFF);
	__u32 old = __sync_fetch_and_or(word, (__u32)VIPR_CT_F_CLOSING << CT_FLAGS_SHIFT);

	return !((old >> CT_FLAGS_SHIFT) & VIPR_CT_F_CLOSING);
}

/* The reply key of an IPv6 flow from its forward key and value (as ct4_reply_key_of). */
static __always_inline void ct6_gc_reply_key_of(struct vipr_ct6_key *rep, const struct vipr_ct6_key *fwd,
						const struct vipr_ct6_value *ct)
{
	bool snat = !ct6_addr_zero(ct->snat_addr);

	__builtin_memcpy(rep->saddr, ct->nat_addr, 16);
	rep->sport = ct->nat_port;
	__builtin_memcpy(rep->daddr, snat ? ct->snat_addr : fwd->saddr, 16);
	rep->dport = snat ? ct->snat_port : fwd->sport;
	rep->proto = fwd->proto;
	rep->dir = VIPR_CT_REPLY;
	rep->pad[0] = 0;
	rep->pad[1] = 0;
}

/* The forward key of an IPv6 flow from its reply key and value (as ct4_forward_key_of). */
static __always_inline void ct6_gc_forward_key_of(struct vipr_ct6_key *fwd, const struct vipr_ct6_key *rep,
						  const struct vipr_ct6_value *ct)
{
	bool snat = !ct6_addr_zero(ct->snat_addr);

	__builtin_memcpy(fwd->saddr, snat ? ct->snat_addr : rep->daddr, 16);
	fwd->sport = snat ? ct->snat_port : rep->dport;
	__builtin_memcpy(fwd->daddr, ct->nat_addr, 16);
	fwd->dport = ct->nat_port;
	fwd->proto = rep->proto;
	fwd->dir = VIPR_CT_FORWARD;
	fwd->pad[0] = 0;
	fwd->pad[1] = 0;
}

static __always_inline __u64 ct_gc_timeout(enum ct_gc_table t, __u8 flags)
{
	if (t == CT_GC_UDP)
		return ct_timeouts.udp_ns;
	if (flags & VIPR_CT_F_CLOSING)
		return ct_timeouts.closing_ns;
	return t == CT_GC_TCP ? ct_timeouts.established_ns : ct_timeouts.syn_ns;
}

/* Counts one more entry of the pass; returns false at the end of the map (the result written). */
static __always_inline bool ct_gc_count(struct bpf_iter_meta *meta, const void *key)
{
	if (meta->session_id != report_session) {
		report_session = meta->session_id;
		report.seen = 0;
		report.deleted = 0;
		report.kept = 0;
	}
	if (!key) {
		/* The end of the map: the pass's result. */
		bpf_seq_write(meta->seq, &report, sizeof(report));
		return false;
	}
	report.seen++;
	if (report.seen % VIPR_CT_GC_REPORT_EVERY == 0)
		bpf_seq_write(meta->seq, &report, sizeof(report));
	return true;
}

static __always_inline int ct_gc_visit(struct bpf_iter__bpf_map_elem *ctx, enum ct_gc_table t)
{
	struct bpf_iter_meta *meta = ctx->meta;
	struct vipr_ct_key *ikey = ctx->key;
	struct vipr_ct_key key, other;
	struct vipr_ct_value *ct, *peer;
	void *map = ct_gc_map(t);
	__u64 now, last;
	__u8 flags;

	if (!ct_gc_count(meta, ikey))
		return 0;
	key = *ikey;
	/* Looked up again for a map value the atomics may write (the iterator's copy is a buffer). */
	ct = bpf_map_lookup_elem(map, &key);
	if (!ct)
		return 0;
	now = bpf_ktime_get_ns();
	last = ct->last_seen_ns;
	flags = ct->flags;
	if (key.dir == VIPR_CT_REPLY) {
		ct4_forward_key_of(&other, &key, ct);
		if (bpf_map_lookup_elem(map, &other))
			return 0; /* judged with its forward entry */
		if (now > last && now - last > ct_gc_timeout(t, flags) && bpf_map_delete_elem(map, &key) == 0)
			report.deleted++;
		else
			report.kept++;
		return 0;
	}
	ct4_reply_key_of(&other, &key, ct);
	peer = bpf_map_lookup_elem(map, &other);
	if (peer) {
		if (peer->last_seen_ns > last)
			last = peer->last_seen_ns;
		flags |= peer->flags;
	}
	if (now <= last || now - last <= ct_gc_timeout(t, flags)) {
		report.kept += peer ? 2 : 1;
		return 0;
	}
	/* An open flow leaves the lc count here; ct4_set_flags decides who counts its close. */
	if (ct4_set_flags(ct, VIPR_CT_F_CLOSING))
		lc_account(ct->backend_id, -1);
	if (bpf_map_delete_elem(map, &key) == 0)
		report.deleted++;
	if (peer && bpf_map_delete_elem(map, &other) == 0)
		report.deleted++;
	return 0;
}

/* ct_gc_visit for the IPv6 maps. */
static __always_inline int ct6_gc_visit(struct bpf_iter__bpf_map_elem *ctx, enum ct_gc_table t)
{
	struct bpf_iter_meta *meta = ctx->meta;
	struct vipr_ct6_key *ikey = ctx->key;
	struct vipr_ct6_key key, other;
	struct vipr_ct6_value *ct, *peer;
	void *map = ct6_gc_map(t);
	__u64 now, last;
	__u8 flags;

	if (!ct_gc_count(meta, ikey))
		return 0;
	key = *ikey;
	ct = bpf_map_lookup_elem(map, &key);
	if (!ct)
		return 0;
	now = bpf_ktime_get_ns();
	last = ct->last_seen_ns;
	flags = ct->flags;
	if (key.dir == VIPR_CT_REPLY) {
		ct6_gc_forward_key_of(&other, &key, ct);
		if (bpf_map_lookup_elem(map, &other))
			return 0; /* judged with its forward entry */
		if (now > last && now - last > ct_gc_timeout(t, flags) && bpf_map_delete_elem(map, &key) == 0)
			report.deleted++;
		else
			report.kept++;
		return 0;
	}
	ct6_gc_reply_key_of(&other, &key, ct);
	peer = bpf_map_lookup_elem(map, &other);
	if (peer) {
		if (peer->last_seen_ns > last)
			last = peer->last_seen_ns;
		flags |= peer->flags;
	}
	if (now <= last || now - last <= ct_gc_timeout(t, flags)) {
		report.kept += peer ? 2 : 1;
		return 0;
	}
	if (ct6_gc_set_closing(ct))
		lc_account(ct->backend_id, -1);
	if (bpf_map_delete_elem(map, &key) == 0)
		report.deleted++;
	if (peer && bpf_map_delete_elem(map, &other) == 0)
		report.deleted++;
	return 0;
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_tcp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP);
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_tcp_syn(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP_SYN);
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_udp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_UDP);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_tcp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct6_gc_visit(ctx, CT_GC_TCP);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_tcp_syn(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct6_gc_visit(ctx, CT_GC_TCP_SYN);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_udp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct6_gc_visit(ctx, CT_GC_UDP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
