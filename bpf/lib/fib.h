/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Forwarding rewritten packets by FIB lookup. A packet whose new source is one of this node's
 * addresses (a NodePort flow SNATed to the node, or its reply rewritten back to the node's
 * address) must not go through the stack's input path: the kernel drops a packet arriving with a
 * local source as martian. These helpers route it themselves and hand it to the egress device.
 */
#ifndef __VIPR_FIB_H
#define __VIPR_FIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nat.h"

#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline void fib_params(struct bpf_fib_lookup *fib, const struct packet *pkt,
				       const struct nat_plan *plan, __u32 ifindex)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = pkt->proto;
	fib->sport = plan->sport;
	fib->dport = plan->dport;
	fib->ipv4_src = plan->saddr;
	fib->ipv4_dst = plan->daddr;
	fib->ifindex = ifindex;
}

/* TTL - 1 with its checksum, as forwarding does (TC: through the helper). */
static __always_inline int tc_dec_ttl(struct __sk_buff *skb, const struct packet *pkt)
{
	__u8 ttl;
	__u32 off = pkt->l3_off + __builtin_offsetof(struct iphdr, ttl);

	if (bpf_skb_load_bytes(skb, off, &ttl, 1))
		return -1;
	if (ttl <= 1)
		return -1;
	/* TTL is the high byte of the 16-bit word it shares with the protocol. */
	if (bpf_l3_csum_replace(skb, pkt->l3_off + __builtin_offsetof(struct iphdr, check),
				bpf_htons((__u16)ttl << 8), bpf_htons((__u16)(ttl - 1) << 8), 2))
		return -1;
	ttl--;
	return bpf_skb_store_bytes(skb, off, &ttl, 1, 0);
}

/*
 * TC: after the rewrite, route the packet and redirect it to the egress device, which resolves
 * the next hop's MAC itself (bpf_redirect_neigh). Returns a TC verdict.
 */
static __always_inline int tc_fib_redirect(struct __sk_buff *skb, const struct packet *pkt,
					   const struct nat_plan *plan)
{
	struct bpf_fib_lookup fib;
	int rc;

	fib_params(&fib, pkt, plan, skb->ingress_ifindex);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (tc_dec_ttl(skb, pkt))
		return -1;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

/*
 * XDP: routes the frame as the plan will rewrite it, into @nh (its expiry and len_ok left to the
 * caller). Returns 0, or -1 when the stack has to do the job (no neighbour entry yet, no route,
 * a frame over the MTU): the caller then passes the frame on untouched and TC handles the flow
 * from conntrack.
 */
static __always_inline int xdp_fib_lookup(struct xdp_md *ctx, const struct packet *pkt,
					  const struct nat_plan *plan, __u16 tot_len, struct vipr_nexthop *nh)
{
	struct bpf_fib_lookup fib;

	fib_params(&fib, pkt, plan, ctx->ingress_ifindex);
	fib.tot_len = tot_len;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	nh->ifindex = fib.ifindex;
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	return 0;
}

/* XDP: after the rewrite, fills in the next hop's MACs, decrements TTL and sends the frame. */
static __always_inline int xdp_forward(struct xdp_md *ctx, const struct vipr_nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	ip->check = csum_update32(ip->check, bpf_htons((__u16)ip->ttl << 8), bpf_htons((__u16)(ip->ttl - 1) << 8));
	ip->ttl--;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (nh->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh->ifindex, 0);
}

#endif /* __VIPR_FIB_H */
