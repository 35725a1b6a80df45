/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address/port rewrites on an skb with incremental checksum updates (RFC 1624 through the
 * kernel's helpers). bpf_l4_csum_replace handles CHECKSUM_PARTIAL skbs from local senders as
 * well as complete checksums; UDP's "no checksum" (0) is kept as it is (BPF_F_MARK_MANGLED_0).
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

/* Which end of the packet to rewrite. */
enum nat_side {
	NAT_DST = 0, /* DNAT: destination address and port */
	NAT_SRC = 1, /* reverse NAT: source address and port */
};

/* Returns 0, or a negative errno from a helper (the packet may then be half-written: drop it). */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, const struct packet *pkt,
					enum nat_side side, __be32 new_addr, __be16 new_port)
{
	__be32 old_addr = side == NAT_DST ? pkt->daddr : pkt->saddr;
	__be16 old_port = side == NAT_DST ? pkt->dport : pkt->sport;
	__u32 addr_off = pkt->l3_off + (side == NAT_DST ? __builtin_offsetof(struct iphdr, daddr)
							 : __builtin_offsetof(struct iphdr, saddr));
	/* source/dest sit at the same offsets in TCP and UDP headers */
	__u32 port_off = pkt->l4_off + (side == NAT_DST ? __builtin_offsetof(struct udphdr, dest)
							 : __builtin_offsetof(struct udphdr, source));
	__u32 csum_off = pkt->l4_off + (pkt->proto == IPPROTO_TCP
						? __builtin_offsetof(struct tcphdr, check)
						: __builtin_offsetof(struct udphdr, check));
	__u64 l4_flags = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int ret;

	if (old_port != new_port) {
		ret = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port));
		if (ret)
			return ret;
		ret = bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0);
		if (ret)
			return ret;
	}
	if (old_addr != new_addr) {
		ret = bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					  l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr));
		if (ret)
			return ret;
		ret = bpf_l3_csum_replace(skb, pkt->l3_off + __builtin_offsetof(struct iphdr, check),
					  old_addr, new_addr, sizeof(new_addr));
		if (ret)
			return ret;
		ret = bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
		if (ret)
			return ret;
	}
	return 0;
}

#endif /* __VIPR_NAT_H */
