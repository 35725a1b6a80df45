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
 * only the key and the address width differ, so one visit serves both, told which by a constant.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"
#include "lib/conntrack.h"
#include "lib/ct6.h"

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

/* A key of either family's conntrack maps. */
union ct_gc_key {
	struct vipr_ct_key v4;
	struct vipr_ct6_key v6;
};

/* A field of an entry of either family (@v6 is a constant: the other branch compiles away). */
#define CT_GC_FIELD(v6, ct, field) \
	((v6) ? ((struct vipr_ct6_value *)(ct))->field : ((struct vipr_ct_value *)(ct))->field)

/* The flow's other entry's key: its reply's for a forward @key, its forward's for a reply. */
static __always_inline void ct_gc_other_key(bool v6, union ct_gc_key *other, const union ct_gc_key *key,
					    void *ct, bool reply)
{
	if (v6 && reply)
		ct6_forward_key_of(&other->v6, &key->v6, ct);
	else if (v6)
		ct6_reply_key_of(&other->v6, &key->v6, ct);
	else if (reply)
		ct4_forward_key_of(&other->v4, &key->v4, ct);
	else
		ct4_reply_key_of(&other->v4, &key->v4, ct);
}

/* One entry of a pass over map @t of the family @v6 says. */
static __always_inline int ct_gc_visit(struct bpf_iter__bpf_map_elem *ctx, enum ct_gc_table t, bool v6)
{
	struct bpf_iter_meta *meta = ctx->meta;
	void *ikey = ctx->key; /* read once: the verifier allows ctx loads at fixed offsets only */
	union ct_gc_key key, other;
	void *map = v6 ? ct6_gc_map(t) : ct_gc_map(t);
	void *ct, *peer;
	__u64 now, last;
	__u8 flags;

	if (!ct_gc_count(meta, ikey))
		return 0;
	if (v6)
		key.v6 = *(struct vipr_ct6_key *)ikey;
	else
		key.v4 = *(struct vipr_ct_key *)ikey;
	/* Looked up again for a map value the atomics may write (the iterator's copy is a buffer). */
	ct = bpf_map_lookup_elem(map, &key);
	if (!ct)
		return 0;
	now = bpf_ktime_get_ns();
	last = CT_GC_FIELD(v6, ct, last_seen_ns);
	flags = CT_GC_FIELD(v6, ct, flags);
	if ((v6 ? key.v6.dir : key.v4.dir) == VIPR_CT_REPLY) {
		ct_gc_other_key(v6, &other, &key, ct, true);
		if (bpf_map_lookup_elem(map, &other))
			return 0; /* judged with its forward entry */
		if (now > last && now - last > ct_gc_timeout(t, flags) && bpf_map_delete_elem(map, &key) == 0)
			report.deleted++;
		else
			report.kept++;
		return 0;
	}
	ct_gc_other_key(v6, &other, &key, ct, false);
	peer = bpf_map_lookup_elem(map, &other);
	if (peer) {
		if (CT_GC_FIELD(v6, peer, last_seen_ns) > last)
			last = CT_GC_FIELD(v6, peer, last_seen_ns);
		flags |= CT_GC_FIELD(v6, peer, flags);
	}
	if (now <= last || now - last <= ct_gc_timeout(t, flags)) {
		report.kept += peer ? 2 : 1;
		return 0;
	}
	/* An open flow leaves the lc count here; the atomic flag decides who counts its close. */
	if (ct_set_flags(v6 ? &((struct vipr_ct6_value *)ct)->flags : &((struct vipr_ct_value *)ct)->flags,
			 VIPR_CT_F_CLOSING))
		lc_account(CT_GC_FIELD(v6, ct, backend_id), -1);
	if (bpf_map_delete_elem(map, &key) == 0)
		report.deleted++;
	if (peer && bpf_map_delete_elem(map, &other) == 0)
		report.deleted++;
	return 0;
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_tcp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP, false);
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_tcp_syn(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP_SYN, false);
}

SEC("iter/bpf_map_elem")
int vipr_ct_gc_udp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_UDP, false);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_tcp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP, true);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_tcp_syn(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_TCP_SYN, true);
}

SEC("iter/bpf_map_elem")
int vipr_ct6_gc_udp(struct bpf_iter__bpf_map_elem *ctx)
{
	return ct_gc_visit(ctx, CT_GC_UDP, true);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
