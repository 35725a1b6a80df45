// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XDP program for the node's external interface: NodePort, LoadBalancer and external-IP traffic
 * from outside the cluster is balanced before the stack sees it. Flows to a remote backend are
 * rewritten (DNAT + SNAT to this node) and sent straight back out by FIB lookup; flows to a local
 * backend are rewritten and handed to the stack, which routes them to the pod, or, for the pods
 * the agent lists in vipr_xdp_pods_v1 and vipr_xdp_pods6_v1 (--xdp-local-backends redirect), sent
 * to the pod's veth.
 * Everything else, and anything XDP cannot finish (no neighbour entry yet, ICMP rejects), goes on
 * to the TC programs, which share the maps and so the same flows; what XDP did finish and passes
 * carries struct vipr_xdp_meta, and TC ingress lets it through unread.
 *
 * Only for interfaces that receive from a NIC: frames from local senders may carry partial
 * checksums, which XDP cannot complete.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/xdp.h"
#include "lib/lb6.h"
#include "lib/fib6.h"

/* As xdp_pass_done, for IPv6 frames without extension headers. */
static __always_inline int xdp_pass_done6(struct xdp_md *ctx, const struct packet6 *pkt)
{
	if (pkt->frag != FRAG_NONE || pkt->l4_off != sizeof(struct ethhdr) + sizeof(struct ipv6hdr))
		return XDP_PASS;
	return xdp_pass_marked(ctx, sizeof(struct ethhdr) + __builtin_offsetof(struct ipv6hdr, hop_limit));
}

/*
 * IPv6's flow cache (struct vipr_xdp_flow6; struct vipr_xdp_flow says what keeps it right), in a
 * frame of its own. Returns an XDP verdict, or -1 when the packet takes the full path.
 */
static __noinline int xdp_lb6_cached(struct xdp_md *ctx, const struct packet6 *pkt, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct vipr_xdp_flow6 *f;
	struct vipr_ct6_key key;
	struct nat_plan6 plan;

	if (pkt->frag != FRAG_NONE)
		return -1;
	ct6_key_forward(&key, pkt);
	if (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST)) {
		/* The flow's state changes: conntrack must see this packet and the ones after it. */
		if (pkt->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			bpf_map_delete_elem(&vipr_xdp_flows6_v1, &key);
		return -1;
	}
	f = bpf_map_lookup_elem(&vipr_xdp_flows6_v1, &key);
	if (!f || !nexthop_fresh(&f->nh, ct_clock()))
		return -1;
	if ((void *)(ip6 + 1) > data_end ||
	    (f->nh.ifindex && (ip6->hop_limit <= 1 || sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > f->nh.len_ok)))
		return -1;
	ipv6_copy(plan.saddr, f->saddr);
	ipv6_copy(plan.daddr, f->daddr);
	plan.sport = f->sport;
	plan.dport = f->dport;
	plan.redirect = false;
	plan.xdp_cache = 0;
	if (xdp_apply_plan6(ctx, pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	/* The counters the full path would have moved, and this one's own. */
	stats_count(f->stat, len);
	stats_count(VIPR_STAT_XDP_FLOW_CACHE_HIT, len);
	if (!ipv6_equal(plan.daddr, pkt->daddr))
		stats_count(VIPR_STAT_DNAT, len);
	if (!f->nh.ifindex) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done6(ctx, pkt);
	}
	stats_count(f->nh.ifindex == ctx->ingress_ifindex ? VIPR_STAT_XDP_TX : VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward6_to(ctx, f->nh.ifindex, f->nh.smac, f->nh.dmac);
}

/*
 * After the full path rewrote a steady flow's packet: its next ones may take the cache. @nh is
 * where it went (ifindex 0: to the stack), with the longest packet allowed there.
 */
static __noinline void xdp_lb6_cache(const struct packet6 *pkt, const struct nat_plan6 *plan,
				     const struct vipr_nexthop *nh)
{
	struct vipr_xdp_flow6 f = {
		.sport = plan->sport,
		.dport = plan->dport,
		.stat = plan->xdp_cache,
	};
	struct vipr_ct6_key key;

	ipv6_copy(f.saddr, plan->saddr);
	ipv6_copy(f.daddr, plan->daddr);
	if (nh->ifindex) {
		f.nh = *nh;
	} else {
		f.nh.expires_ns = ct_clock() + VIPR_NEXTHOP_TTL_NS;
		f.nh.len_ok = 0xffff;
	}
	ct6_key_forward(&key, pkt);
	bpf_map_update_elem(&vipr_xdp_flows6_v1, &key, &f, BPF_ANY);
}

/*
 * A frame for one of this node's pods (@plan's destination) that vipr_xdp_pods6_v1 lists: @nh
 * filled to send it to the pod's veth, and 0. -1 leaves @nh alone and the frame to the stack:
 * not listed, hop limit expiring, longer than the link (the stack answers with the ICMPv6 error).
 * As xdp_pod_nexthop for IPv4.
 */
static __always_inline int xdp_pod6_nexthop(struct xdp_md *ctx, const struct nat_plan6 *plan, struct vipr_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct vipr_xdp_pod6_key key;
	struct vipr_xdp_pod *pod;

	ipv6_copy(key.addr, plan->daddr);
	pod = bpf_map_lookup_elem(&vipr_xdp_pods6_v1, &key);
	if (!pod || (void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1 ||
	    sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > pod->len_ok)
		return -1;
	nh->ifindex = pod->ifindex;
	nh->len_ok = pod->len_ok;
	__builtin_memcpy(nh->smac, pod->host_mac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, pod->pod_mac, ETH_ALEN);
	nh->expires_ns = ct_clock() + VIPR_NEXTHOP_TTL_NS;
	return 0;
}

/*
 * Where a rewritten frame goes, in a frame of its own (the FIB lookup's 64 bytes): @nh filled
 * from vipr_xdp_nexthops6_v1 or the FIB (a flow SNATed to this node, forwarded), or from
 * vipr_xdp_pods6_v1 (a listed pod of this node), or left with ifindex 0 (to the stack). -1: the
 * stack has to do the job of a frame the FIB would not take (no neighbour entry yet, no route,
 * hop limit expiring). The FIB's answer is kept VIPR_NEXTHOP_TTL_NS for the same addresses and
 * interface, as xdp_nexthop does for IPv4.
 */
static __noinline int xdp_nexthop6(struct xdp_md *ctx, const struct packet6 *pkt, const struct nat_plan6 *plan,
				   struct vipr_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct vipr_nexthop6_key key;
	struct vipr_nexthop *cached;
	struct bpf_fib_lookup fib;
	__u64 now;
	__u16 tot_len;

	if (!plan->redirect) {
		if (!ipv6_equal(plan->daddr, pkt->daddr))
			xdp_pod6_nexthop(ctx, plan, nh);
		return 0;
	}
	if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return -1;
	tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	ipv6_copy(key.saddr, plan->saddr);
	ipv6_copy(key.daddr, plan->daddr);
	key.ifindex = ctx->ingress_ifindex;
	now = ct_clock();
	cached = nexthop_cached(&vipr_xdp_nexthops6_v1, &key, now);
	if (cached && tot_len <= cached->len_ok) {
		*nh = *cached;
		return 0;
	}
	if (xdp_fib6_lookup(ctx, pkt, plan, &fib))
		return -1;
	nh->ifindex = fib.ifindex;
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	nexthop_keep(&vipr_xdp_nexthops6_v1, &key, cached, tot_len, now, nh);
	return 0;
}

/* The rewrite and where the frame goes. */
static __noinline int xdp_send6(struct xdp_md *ctx, const struct packet6 *pkt, const struct nat_plan6 *plan, __u32 len)
{
	struct vipr_nexthop nh = {};

	if (xdp_nexthop6(ctx, pkt, plan, &nh)) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (xdp_apply_plan6(ctx, pkt, plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	if (plan->xdp_cache)
		xdp_lb6_cache(pkt, plan, &nh);
	if (!ipv6_equal(plan->daddr, pkt->daddr))
		stats_count(VIPR_STAT_DNAT, len);
	if (!nh.ifindex) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done6(ctx, pkt);
	}
	if (nh.ifindex == ctx->ingress_ifindex)
		stats_count(VIPR_STAT_XDP_TX, len);
	else
		stats_count(VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward6_to(ctx, nh.ifindex, nh.smac, nh.dmac);
}

/*
 * IPv6 in a program of its own, reached by a tail call from the entry point: IPv4 stays inline
 * there as it was before IPv6 (no bpf-to-bpf call on its per-packet path) and IPv6 gets a fresh
 * 512-byte stack (the verifier adds up the frames of a call chain; both families' locals in one
 * frame do not fit).
 */
static __noinline int xdp_lb6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	struct nat_plan6 plan;
	struct packet6 pkt;
	int verdict;

	switch (lb6_parse(data, data_end, len, &pkt)) {
	case LB_PACKET_FLOW:
		break;
	case LB_PACKET_DROP:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
	verdict = xdp_lb6_cached(ctx, &pkt, len);
	if (verdict >= 0)
		return verdict;
	switch (lb6_plan_ingress(&pkt, len, &plan)) {
	case LB_DROP:
		return XDP_DROP;
	case LB_NAT:
		break;
	case LB_PASS:
		stats_count(VIPR_STAT_XDP_PASS, len);
		return xdp_pass_done6(ctx, &pkt);
	default:
		/* A reject: TC answers it. */
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	return xdp_send6(ctx, &pkt, &plan, len);
}

SEC("xdp")
int vipr_xdp_ingress6(struct xdp_md *ctx)
{
	return xdp_lb6(ctx);
}

SEC("xdp")
int vipr_xdp_ingress(struct xdp_md *ctx)
{
	return xdp_lb4(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
