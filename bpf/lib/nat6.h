/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Applying a NAT plan to an IPv6 packet. IPv6 has no header checksum; the TCP/UDP checksum covers
 * a pseudo-header with both 16-byte addresses (RFC 8200 8.1), so an address change updates it by
 * the difference of the addresses (bpf_csum_diff), a port change by the difference of the ports.
 * UDP over IPv6 must never carry checksum 0: an update that comes out 0 is sent as 0xffff (TC:
 * BPF_F_MARK_MANGLED_0, which also leaves a received 0, already invalid, as it is; XDP: by hand).
 *
 * TC goes through the kernel's helpers, which also keep CHECKSUM_PARTIAL skbs of local senders
 * right (only the pseudo-header part is then in the checksum field: ports are left to the
 * device). XDP rewrites in place; its frames come from a NIC with complete checksums.
 */
#ifndef __VIPR_NAT6_H
#define __VIPR_NAT6_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "parse6.h"
#include "nat.h"

/* The rewrite of one IPv6 packet: the new addresses and ports (equal to the old = unchanged). */
struct nat_plan6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	bool redirect; /* the new source is a node address: forward by FIB lookup, not the stack */
	__u8 xdp_cache; /* as nat_plan's: 0, or what XDP's flow cache counts the flow's next packets as */
};

/*
 * Both structs hold source, destination, source port and destination port back to back, as the
 * checksum sees them: one bpf_csum_diff covers all of it.
 */
_Static_assert(__builtin_offsetof(struct packet6, daddr) == __builtin_offsetof(struct packet6, saddr) + 16 &&
	       __builtin_offsetof(struct packet6, sport) == __builtin_offsetof(struct packet6, saddr) + 32 &&
	       __builtin_offsetof(struct packet6, dport) == __builtin_offsetof(struct packet6, saddr) + 34,
	       "packet6 addresses and ports are contiguous");
_Static_assert(__builtin_offsetof(struct nat_plan6, daddr) == 16 && __builtin_offsetof(struct nat_plan6, sport) == 32 &&
	       __builtin_offsetof(struct nat_plan6, dport) == 34, "nat_plan6 addresses and ports are contiguous");
#define NAT6_ADDRS_LEN 32
#define NAT6_TUPLE_LEN 36

static __always_inline __u32 l4_csum_off6(const struct packet6 *pkt)
{
	return pkt->l4_off + (pkt->proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check)
						    : __builtin_offsetof(struct udphdr, check));
}

/*
 * TC. Returns 0, or a negative errno from a helper (the packet may then be half-written: drop
 * it). A later fragment has no L4 header: only its addresses change (the first fragment's
 * checksum, which covers the datagram, took the difference).
 */
static __always_inline int tc_apply_plan6(struct __sk_buff *skb, const struct packet6 *pkt,
					  const struct nat_plan6 *plan)
{
	__u64 mm0 = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	bool saddr_same = ipv6_equal(pkt->saddr, plan->saddr);
	bool daddr_same = ipv6_equal(pkt->daddr, plan->daddr);
	int ret;

	if (pkt->frag != FRAG_LATER) {
		if (pkt->sport != plan->sport || pkt->dport != plan->dport) {
			__u32 from, to;

			__builtin_memcpy(&from, &pkt->sport, sizeof(from));
			__builtin_memcpy(&to, &plan->sport, sizeof(to));
			ret = bpf_l4_csum_replace(skb, l4_csum_off6(pkt), from, to, mm0 | sizeof(to));
			if (ret)
				return ret;
			/* source/dest sit at the same offsets in TCP and UDP headers */
			ret = bpf_skb_store_bytes(skb, pkt->l4_off, &to, sizeof(to), 0);
			if (ret)
				return ret;
		}
		if (!saddr_same || !daddr_same) {
			__s64 diff = bpf_csum_diff((__be32 *)pkt->saddr, NAT6_ADDRS_LEN,
						   (__be32 *)plan->saddr, NAT6_ADDRS_LEN, 0);

			if (diff < 0)
				return diff;
			ret = bpf_l4_csum_replace(skb, l4_csum_off6(pkt), 0, diff, mm0 | BPF_F_PSEUDO_HDR);
			if (ret)
				return ret;
		}
	}
	if (!saddr_same) {
		ret = bpf_skb_store_bytes(skb, pkt->l3_off + __builtin_offsetof(struct ipv6hdr, saddr),
					  plan->saddr, 16, 0);
		if (ret)
			return ret;
	}
	if (!daddr_same)
		return bpf_skb_store_bytes(skb, pkt->l3_off + __builtin_offsetof(struct ipv6hdr, daddr),
					   plan->daddr, 16, 0);
	return 0;
}

/* The largest L4 offset XDP rewrites at (a mask the verifier can see; a frame's first page). */
#define XDP6_L4_OFF_MAX 0x1fff

/*
 * XDP: rewrites the frame in place. The headers are re-checked against data_end because the
 * verifier does not carry the parse's bounds across the call. Returns 0 or -1 (malformed).
 */
static __always_inline int xdp_apply_plan6(struct xdp_md *ctx, const struct packet6 *pkt,
					   const struct nat_plan6 *plan)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__be16 *check, *ports;
	__u16 c;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (pkt->frag != FRAG_LATER) {
		if (pkt->l4_off > XDP6_L4_OFF_MAX)
			return -1;
		ports = data + (pkt->l4_off & XDP6_L4_OFF_MAX);
		if ((void *)ports + sizeof(struct tcphdr) > data_end && pkt->proto == IPPROTO_TCP)
			return -1;
		if ((void *)ports + sizeof(struct udphdr) > data_end)
			return -1;
		check = pkt->proto == IPPROTO_TCP ? &((struct tcphdr *)ports)->check
						  : &((struct udphdr *)ports)->check;
		if ((void *)(check + 1) > data_end)
			return -1;
		c = *check;
		/* A received UDP checksum 0 is invalid over IPv6: left as it is, the receiver drops it. */
		if (pkt->proto == IPPROTO_TCP || c) {
			c = csum_fold_complement(bpf_csum_diff((__be32 *)pkt->saddr, NAT6_TUPLE_LEN,
							       (__be32 *)plan->saddr, NAT6_TUPLE_LEN, (__u16)~c));
			if (pkt->proto == IPPROTO_UDP && c == 0)
				c = 0xffff;
			*check = c;
		}
		ports[0] = plan->sport;
		ports[1] = plan->dport;
	}
	__builtin_memcpy(&ip6->saddr, plan->saddr, 16);
	__builtin_memcpy(&ip6->daddr, plan->daddr, 16);
	return 0;
}

#endif /* __VIPR_NAT6_H */
