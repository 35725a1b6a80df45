/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Forwarding rewritten IPv6 packets by FIB lookup, as fib.h for IPv4 (read it for why): a packet
 * whose new source is this node's address is routed here and handed to the egress device, with
 * the hop limit decremented as forwarding does (IPv6 has no header checksum to update).
 */
#ifndef __VIPR_FIB6_H
#define __VIPR_FIB6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nat6.h"

#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline void fib6_params(struct bpf_fib_lookup *fib, const struct packet6 *pkt,
					const struct nat_plan6 *plan, __u32 ifindex)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET6;
	fib->l4_protocol = pkt->proto;
	fib->sport = plan->sport;
	fib->dport = plan->dport;
	ipv6_copy(fib->ipv6_src, plan->saddr);
	ipv6_copy(fib->ipv6_dst, plan->daddr);
	fib->ifindex = ifindex;
}

/* Hop limit - 1, as forwarding does; a packet whose hop limit runs out is not forwarded. */
static __always_inline int tc_dec_hop_limit(struct __sk_buff *skb, const struct packet6 *pkt)
{
	__u32 off = pkt->l3_off + __builtin_offsetof(struct ipv6hdr, hop_limit);
	__u8 hl;

	if (bpf_skb_load_bytes(skb, off, &hl, 1))
		return -1;
	if (hl <= 1)
		return -1;
	hl--;
	return bpf_skb_store_bytes(skb, off, &hl, 1, 0);
}

/* TC: route the rewritten packet and redirect it to the egress device. Returns a TC verdict or -1. */
static __always_inline int tc_fib6_redirect(struct __sk_buff *skb, const struct packet6 *pkt,
					    const struct nat_plan6 *plan)
{
	struct bpf_fib_lookup fib;
	int rc;

	fib6_params(&fib, pkt, plan, skb->ingress_ifindex);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (tc_dec_hop_limit(skb, pkt))
		return -1;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

/*
 * XDP: routes the frame as the plan will rewrite it. Returns 0 with a resolved next hop in @fib,
 * or -1 when the stack has to do the job (no neighbour entry yet, no route, hop limit expiring).
 */
static __always_inline int xdp_fib6_lookup(struct xdp_md *ctx, const struct packet6 *pkt,
					   const struct nat_plan6 *plan, struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

	if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return -1;
	fib6_params(fib, pkt, plan, ctx->ingress_ifindex);
	fib->tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	return 0;
}

/* XDP: after the rewrite, fills in the next hop's MACs, decrements the hop limit and sends the frame. */
static __always_inline int xdp_forward6_to(struct xdp_md *ctx, __u32 ifindex, const __u8 *smac, const __u8 *dmac)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);

	if ((void *)(ip6 + 1) > data_end)
		return XDP_DROP;
	ip6->hop_limit--;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

#endif /* __VIPR_FIB6_H */
