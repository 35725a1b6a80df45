/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The XDP entry point's IPv4 path (bpf/xdp_lb.bpf.c says what it is for); IPv6 goes on by tail
 * call through vipr_xdp_ipv6_progs_v1.
 */
#ifndef __VIPR_XDP_H
#define __VIPR_XDP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "fib.h"

/*
 * The IPv6 program (slot VIPR_IPV6_PROG_XDP), pinned and filled by the loader just before it
 * attaches this object, as vipr_tc_ipv6_progs_v1 in tc_lb.bpf.c (read why there). A map of its
 * own: a prog array takes programs of one type, and TC's are another.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, VIPR_XDP_IPV6_PROGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_ipv6_progs_v1 SEC(".maps");

/*
 * Next hops of forwarded frames (struct vipr_nexthop says what and why). XDP's alone: TC hands
 * its packets to bpf_redirect_neigh. Per-CPU LRU lists: a miss on one CPU evicts that CPU's
 * oldest, not another's hot entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_nexthop_key);
	__type(value, struct vipr_nexthop);
	__uint(max_entries, VIPR_NEXTHOP_ENTRIES);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_nexthops_v1 SEC(".maps");

/* IPv6's, as vipr_xdp_nexthops_v1 (a new forwarded IPv6 flow asked the FIB every time before). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct vipr_nexthop6_key);
	__type(value, struct vipr_nexthop);
	__uint(max_entries, VIPR_NEXTHOP_ENTRIES);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_nexthops6_v1 SEC(".maps");

/* Whether a next hop (of vipr_xdp_nexthops_v1 or a flow of vipr_xdp_flows_v1) may still be used at @now. */
static __always_inline bool nexthop_fresh(const struct vipr_nexthop *nh, __u64 now)
{
	return (__s64)(nh->expires_ns - now) > 0;
}

/* @map's (vipr_xdp_nexthops_v1 or _nexthops6_v1) entry for @key while it is fresh, else NULL. */
static __always_inline struct vipr_nexthop *nexthop_cached(void *map, const void *key, __u64 now)
{
	struct vipr_nexthop *cached = bpf_map_lookup_elem(map, key);

	return cached && nexthop_fresh(cached, now) ? cached : NULL;
}

/*
 * @nh as the FIB just answered it (egress, MACs) for a packet @tot_len long, kept in @map for
 * VIPR_NEXTHOP_TTL_NS: a longer packet allowed before (@cached), to the same place, still is.
 */
static __always_inline void nexthop_keep(void *map, const void *key, const struct vipr_nexthop *cached,
					 __u16 tot_len, __u64 now, struct vipr_nexthop *nh)
{
	nh->len_ok = tot_len;
	if (cached && cached->ifindex == nh->ifindex && cached->len_ok > tot_len)
		nh->len_ok = cached->len_ok;
	nh->expires_ns = now + VIPR_NEXTHOP_TTL_NS;
	bpf_map_update_elem(map, key, nh, BPF_ANY);
}

/*
 * Where a rewritten frame goes: from vipr_xdp_nexthops_v1 while its entry is fresh and allowed
 * a frame this long, else from the FIB (and the entry renewed). Returns 0 with @nh filled, or -1
 * when the stack has to do the job (TTL expiring, or as xdp_fib_lookup).
 */
static __always_inline int xdp_nexthop(struct xdp_md *ctx, const struct packet *pkt,
				       const struct nat_plan *plan, struct vipr_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct vipr_nexthop_key key = {
		.saddr = plan->saddr,
		.daddr = plan->daddr,
		.ifindex = ctx->ingress_ifindex,
	};
	struct vipr_nexthop *cached;
	__u64 now = ct_clock();
	__u16 tot_len;

	if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
		return -1;
	tot_len = bpf_ntohs(ip->tot_len);
	cached = nexthop_cached(&vipr_xdp_nexthops_v1, &key, now);
	if (cached && tot_len <= cached->len_ok) {
		*nh = *cached;
		return 0;
	}
	if (xdp_fib_lookup(ctx, pkt, plan, tot_len, nh))
		return -1;
	nexthop_keep(&vipr_xdp_nexthops_v1, &key, cached, tot_len, now, nh);
	return 0;
}

/*
 * A frame for one of this node's pods (@plan's destination) that vipr_xdp_pods_v1 lists: @nh
 * filled to send it to the pod's veth (a next hop for VIPR_NEXTHOP_TTL_NS, as the FIB's), and 0.
 * -1 leaves @nh alone and the frame to the stack: not listed, TTL expiring, longer than the link.
 */
static __always_inline int xdp_pod_nexthop(struct xdp_md *ctx, const struct nat_plan *plan, struct vipr_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct vipr_xdp_pod_key key = { .addr = plan->daddr };
	struct vipr_xdp_pod *pod;

	pod = bpf_map_lookup_elem(&vipr_xdp_pods_v1, &key);
	if (!pod || (void *)(ip + 1) > data_end || ip->ttl <= 1 || bpf_ntohs(ip->tot_len) > pod->len_ok)
		return -1;
	nh->ifindex = pod->ifindex;
	nh->len_ok = pod->len_ok;
	__builtin_memcpy(nh->smac, pod->host_mac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, pod->pod_mac, ETH_ALEN);
	nh->expires_ns = ct_clock() + VIPR_NEXTHOP_TTL_NS;
	return 0;
}

/*
 * XDP_PASS with struct vipr_xdp_meta in front of the frame, telling TC ingress XDP's work on it
 * is done. @ttl_off: where the frame's TTL (IPv4) or hop limit (IPv6) is. Counted by the caller.
 */
static __always_inline int xdp_pass_marked(struct xdp_md *ctx, __u32 ttl_off)
{
	struct vipr_xdp_meta *meta;
	void *data;
	__u8 *ttl;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	ttl = data + ttl_off;
	if ((void *)(meta + 1) > data || (void *)(ttl + 1) > (void *)(long)ctx->data_end)
		return XDP_PASS;
	meta->magic = VIPR_XDP_META_DONE;
	meta->ifindex = ctx->ingress_ifindex;
	meta->ttl = *ttl;
	meta->pad[0] = 0;
	meta->pad[1] = 0;
	meta->pad[2] = 0;
	return XDP_PASS;
}

/* XDP_PASS for an IPv4 frame whose work XDP has done (no service's, or translated for a pod of
 * this node): marked for TC ingress, unless it has options or is a fragment (struct vipr_xdp_meta). */
static __always_inline int xdp_pass_done(struct xdp_md *ctx, const struct packet *pkt)
{
	if (pkt->frag != FRAG_NONE || pkt->l4_off != sizeof(struct ethhdr) + sizeof(struct iphdr))
		return XDP_PASS;
	return xdp_pass_marked(ctx, sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, ttl));
}

/*
 * The flow cache's side (struct vipr_xdp_flow says what keeps it right). Returns an XDP verdict,
 * or -1 when the packet takes the full path.
 */
static __always_inline int xdp_lb4_cached(struct xdp_md *ctx, const struct packet *pkt, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct vipr_xdp_flow *f;
	struct vipr_ct_key key;
	struct nat_plan plan;

	if (pkt->frag != FRAG_NONE)
		return -1;
	ct4_key_forward(&key, pkt);
	if (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)) {
		/* The flow's state changes: conntrack must see this packet and the ones after it. */
		if (pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			bpf_map_delete_elem(&vipr_xdp_flows_v1, &key);
		return -1;
	}
	f = bpf_map_lookup_elem(&vipr_xdp_flows_v1, &key);
	if (!f || !nexthop_fresh(&f->nh, ct_clock()))
		return -1;
	if ((void *)(ip + 1) > data_end || (f->nh.ifindex && (ip->ttl <= 1 || bpf_ntohs(ip->tot_len) > f->nh.len_ok)))
		return -1;
	plan.saddr = f->saddr;
	plan.daddr = f->daddr;
	plan.sport = f->sport;
	plan.dport = f->dport;
	if (xdp_apply_plan(ctx, pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	/* The counters the full path would have moved, and this one's own. */
	stats_count(f->stat, len);
	stats_count(VIPR_STAT_XDP_FLOW_CACHE_HIT, len);
	if (plan.daddr != pkt->daddr)
		stats_count(VIPR_STAT_DNAT, len);
	if (!f->nh.ifindex) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done(ctx, pkt);
	}
	stats_count(f->nh.ifindex == ctx->ingress_ifindex ? VIPR_STAT_XDP_TX : VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward(ctx, &f->nh);
}

/* After the full path rewrote a steady flow's packet: its next ones may take the cache. */
static __always_inline void xdp_lb4_cache(const struct packet *pkt, const struct nat_plan *plan,
					  const struct vipr_nexthop *nh)
{
	struct vipr_xdp_flow f = {
		.saddr = plan->saddr,
		.daddr = plan->daddr,
		.sport = plan->sport,
		.dport = plan->dport,
		.stat = plan->xdp_cache,
	};
	struct vipr_ct_key key;

	if (nh->ifindex) {
		f.nh = *nh;
	} else {
		f.nh.expires_ns = ct_clock() + VIPR_NEXTHOP_TTL_NS;
		f.nh.len_ok = 0xffff;
	}
	ct4_key_forward(&key, pkt);
	bpf_map_update_elem(&vipr_xdp_flows_v1, &key, &f, BPF_ANY);
}

/*
 * The IPv4 path, inline in the entry point (and in the bench's harness, bench/xdp_paths.bpf.c,
 * which times it on a fresh copy of a frame each run).
 */
static __always_inline int xdp_lb4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	struct vipr_nexthop nh = {};
	struct nat_plan plan;
	struct packet pkt;
	int verdict;

	switch (lb4_parse(data, data_end, len, &pkt)) {
	case LB_PACKET_FLOW:
		break;
	case LB_PACKET_DROP:
		return XDP_DROP;
	case LB_PACKET_NOT_IPV4:
		/* IPv6 goes on in its program; other ethertypes, and IPv6 without it, pass counted. */
		if (data + sizeof(struct ethhdr) > data_end ||
		    ((struct ethhdr *)data)->h_proto != bpf_htons(ETH_P_IPV6)) {
			stats_count(VIPR_STAT_PASS_NON_IPV4, len);
			return XDP_PASS;
		}
		bpf_tail_call(ctx, &vipr_xdp_ipv6_progs_v1, VIPR_IPV6_PROG_XDP);
		stats_count(VIPR_STAT_PASS_IPV6_NO_PROGRAM, len);
		return XDP_PASS;
	default:
		/* ICMP errors of translated flows too: TC rewrites them. */
		return XDP_PASS;
	}
	verdict = xdp_lb4_cached(ctx, &pkt, len);
	if (verdict >= 0)
		return verdict;
	switch (lb4_plan_ingress(&pkt, len, &plan, true)) {
	case LB_DROP:
		return XDP_DROP;
	case LB_NAT:
		break;
	case LB_PASS:
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done(ctx, &pkt);
	default:
		/* A reject: TC answers it. */
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	/* DSR flows (lib/dsr.h) grow by their option: TC adds it, from the flow this recorded. */
	if (plan.dsr) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (plan.redirect) {
		if (xdp_nexthop(ctx, &pkt, &plan, &nh)) {
			stats_count(VIPR_STAT_XDP_PASS, len);
			return XDP_PASS;
		}
	} else if (plan.daddr != pkt.daddr) {
		/* This node's backend: to its pod where listed, else (nh.ifindex 0) to the stack. */
		xdp_pod_nexthop(ctx, &plan, &nh);
	}
	if (xdp_apply_plan(ctx, &pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	if (plan.xdp_cache)
		xdp_lb4_cache(&pkt, &plan, &nh);
	if (plan.daddr != pkt.daddr)
		stats_count(VIPR_STAT_DNAT, len);
	if (!nh.ifindex) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done(ctx, &pkt);
	}
	if (nh.ifindex == ctx->ingress_ifindex)
		stats_count(VIPR_STAT_XDP_TX, len);
	else
		stats_count(VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward(ctx, &nh);
}

#endif /* __VIPR_XDP_H */
