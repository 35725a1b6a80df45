/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Applying a NAT plan to a packet, with incremental checksum updates (RFC 1624).
 *
 * TC: through the kernel's helpers. bpf_l4_csum_replace handles CHECKSUM_PARTIAL skbs from local
 * senders as well as complete checksums; UDP's "no checksum" (0) stays 0 (BPF_F_MARK_MANGLED_0).
 * XDP: frames come from a NIC with complete checksums (keep XDP off interfaces with local senders:
 * it cannot finish a partial checksum), so the fields are rewritten in place and the checksums
 * updated by plain arithmetic (a bpf_csum_diff call per field cost ~8 ns each, seven a packet).
 */
#ifndef __VIPR_NAT_H
#define __VIPR_NAT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

/* The rewrite of one packet: the new addresses and ports (equal to the old ones = unchanged). */
struct nat_plan {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	bool redirect; /* the new source is a node address: forward by FIB lookup, not the stack */
	bool dsr;      /* direct server return (lib/dsr.h): ingress, carry the frontend to the backend's
			* node; egress, a reply leaving for the client from the backend's node */
	__u8 xdp_cache; /* ingress: 0, or what XDP's flow cache may count the flow's next packets as
			 * (VIPR_STAT_CT_HIT / VIPR_STAT_REV_NAT): a tracked flow in a steady state */
};

static __always_inline __u32 l4_csum_off(const struct packet *pkt)
{
	return pkt->l4_off + (pkt->proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check)
						    : __builtin_offsetof(struct udphdr, check));
}

/* A later fragment has no L4 header: only its addresses are rewritten. */
static __always_inline bool has_l4(const struct packet *pkt)
{
	return pkt->frag != FRAG_LATER;
}

/*
 * An IPv4 address and the checksums covering it: the IP header's, and with @l4 the L4 one (its
 * pseudo-header). An ICMP checksum has no pseudo-header: its packets pass @l4 false.
 */
static __always_inline int tc_rewrite_addr(struct __sk_buff *skb, const struct packet *pkt,
					   __u32 field_off, __be32 from, __be32 to, bool l4)
{
	__u64 l4_flags = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int ret;

	if (from == to)
		return 0;
	if (l4) {
		ret = bpf_l4_csum_replace(skb, l4_csum_off(pkt), from, to, l4_flags | BPF_F_PSEUDO_HDR | sizeof(to));
		if (ret)
			return ret;
	}
	ret = bpf_l3_csum_replace(skb, pkt->l3_off + __builtin_offsetof(struct iphdr, check), from, to, sizeof(to));
	if (ret)
		return ret;
	return bpf_skb_store_bytes(skb, pkt->l3_off + field_off, &to, sizeof(to), 0);
}

static __always_inline int tc_rewrite_port(struct __sk_buff *skb, const struct packet *pkt,
					   __u32 field_off, __be16 from, __be16 to)
{
	__u64 l4_flags = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int ret;

	if (from == to)
		return 0;
	ret = bpf_l4_csum_replace(skb, l4_csum_off(pkt), from, to, l4_flags | sizeof(to));
	if (ret)
		return ret;
	return bpf_skb_store_bytes(skb, pkt->l4_off + field_off, &to, sizeof(to), 0);
}

/*
 * Returns 0, or a negative errno from a helper (the packet may then be half-written: drop it).
 * A first fragment's L4 checksum covers the whole datagram; updating it for the new addresses and
 * ports is as right as for an unfragmented packet.
 */
static __always_inline int tc_apply_plan(struct __sk_buff *skb, const struct packet *pkt,
					 const struct nat_plan *plan)
{
	bool l4 = has_l4(pkt);
	int ret = 0;

	/* source/dest sit at the same offsets in TCP and UDP headers */
	if (l4)
		ret = tc_rewrite_port(skb, pkt, __builtin_offsetof(struct udphdr, dest), pkt->dport, plan->dport);
	if (!ret && l4)
		ret = tc_rewrite_port(skb, pkt, __builtin_offsetof(struct udphdr, source), pkt->sport, plan->sport);
	if (!ret)
		ret = tc_rewrite_addr(skb, pkt, __builtin_offsetof(struct iphdr, daddr), pkt->daddr, plan->daddr, l4);
	if (!ret)
		ret = tc_rewrite_addr(skb, pkt, __builtin_offsetof(struct iphdr, saddr), pkt->saddr, plan->saddr, l4);
	return ret;
}

/* Folds a 32-bit one's complement sum and complements it (a finished checksum). */
static __always_inline __u16 csum_fold_complement(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * RFC 1624's ~m + m' for a 32-bit field (ports are passed zero-extended), added to a running
 * one's complement sum. The sum of 16-bit words does not depend on the byte order they are read
 * in, so network-order fields are summed as they sit in memory. At most 4 x 0xffff per field:
 * a 32-bit sum holds thousands of them before its fold.
 */
static __always_inline __u32 csum_add_change32(__u32 sum, __u32 from, __u32 to)
{
	from = ~from;
	return sum + (from & 0xffff) + (from >> 16) + (to & 0xffff) + (to >> 16);
}

/* RFC 1624: HC' = ~(~HC + ~m + m'), for one 32-bit field. */
static __always_inline __u16 csum_update32(__u16 check, __u32 from, __u32 to)
{
	return csum_fold_complement(csum_add_change32((__u16)~check, from, to));
}

static __always_inline int xdp_rewrite_addrs(struct iphdr *ip, const struct packet *pkt,
					     const struct nat_plan *plan)
{
	__u32 sum = csum_add_change32((__u16)~ip->check, pkt->saddr, plan->saddr);

	ip->check = csum_fold_complement(csum_add_change32(sum, pkt->daddr, plan->daddr));
	ip->saddr = plan->saddr;
	ip->daddr = plan->daddr;
	return 0;
}

/*
 * XDP: rewrites the frame in place. The headers are re-checked against data_end because the
 * verifier does not carry the parse's bounds across the call. Returns 0 or -1 (malformed).
 */
static __always_inline int xdp_apply_plan(struct xdp_md *ctx, const struct packet *pkt,
					  const struct nat_plan *plan)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__be16 *check, *ports;
	__u16 c;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (!has_l4(pkt))
		return xdp_rewrite_addrs(ip, pkt, plan);
	/* l4_off is at most 14 + 60: mask it so the verifier sees the bound. */
	ports = data + (pkt->l4_off & 0x7f);
	if ((void *)ports + sizeof(struct tcphdr) > data_end && pkt->proto == IPPROTO_TCP)
		return -1;
	if ((void *)ports + sizeof(struct udphdr) > data_end)
		return -1;
	check = pkt->proto == IPPROTO_TCP ? &((struct tcphdr *)ports)->check : &((struct udphdr *)ports)->check;
	if ((void *)(check + 1) > data_end)
		return -1;

	c = *check;
	/* UDP without checksum stays without. */
	if (pkt->proto == IPPROTO_TCP || c) {
		__u32 sum = csum_add_change32((__u16)~c, pkt->saddr, plan->saddr);

		sum = csum_add_change32(sum, pkt->daddr, plan->daddr);
		sum = csum_add_change32(sum, pkt->sport, plan->sport);
		c = csum_fold_complement(csum_add_change32(sum, pkt->dport, plan->dport));
		if (pkt->proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*check = c;
	}
	ports[0] = plan->sport;
	ports[1] = plan->dport;
	return xdp_rewrite_addrs(ip, pkt, plan);
}

#endif /* __VIPR_NAT_H */
