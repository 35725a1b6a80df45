/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * REJECT for IPv6 Services without endpoints, as icmp.h for IPv4: kube-proxy's ip6tables rule
 * answers with ICMPv6 port unreachable (type 1, code 4), so clients fail at once. The packet is
 * turned into that error in place and sent back out of the interface it came in on.
 *
 * RFC 4443 section 3.1: the error carries as much of the invoking packet as fits in the IPv6
 * minimum MTU (1280 bytes for the whole error), and its checksum covers the IPv6 pseudo-header,
 * so unlike IPv4's fixed 28-byte quote the quote here is as long as the packet (up to 1232
 * bytes). The original stays where it is: 48 bytes of room are opened after the Ethernet header
 * (bpf_skb_adjust_room) for the new IPv6 and ICMPv6 headers, and the tail is cut at the limit.
 *
 * Rate-limited with IPv4's per-CPU bucket (vipr_icmp_bucket_v1): the kernel's own ICMPv6 shares
 * one budget per host with ICMP too (icmp_global_allow), so a flood in one family cannot buy
 * twice the replies.
 */
#ifndef __VIPR_ICMP6_H
#define __VIPR_ICMP6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/icmpv6.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse6.h"
#include "icmp.h"

#define IPV6_MIN_MTU 1280

/* The headers put in front of the quote: the IPv6 and ICMPv6 ones are new (48 bytes). */
struct icmp6_reject {
	struct ethhdr eth;
	struct ipv6hdr ip;
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused; /* zero for destination unreachable */
} __attribute__((packed));

/* The most of the invoking packet an error may carry: 1280 - 40 - 8. */
#define ICMP6_REJECT_ROOM (sizeof(struct icmp6_reject) - sizeof(struct ethhdr))
#define ICMP6_QUOTE_MAX (IPV6_MIN_MTU - ICMP6_REJECT_ROOM)

/*
 * The quote is summed in chunks this large (a multiple of 4, as bpf_csum_diff wants) through the
 * reject's own header buffer, before the header is built: the reject runs deep in the call chain,
 * whose stack frames the verifier adds up (512 bytes at most), so it keeps its frame small.
 */
#define ICMP6_CSUM_CHUNK 48
_Static_assert(ICMP6_CSUM_CHUNK <= sizeof(struct icmp6_reject), "the checksum chunk fits in the reject's buffer");

/* One's complement sum (unfolded) of @len bytes of @skb from @off, through @buf (ICMP6_CSUM_CHUNK bytes). */
static __always_inline int icmp6_sum_skb(struct __sk_buff *skb, __u32 off, __u32 len, __u32 *sum, __u8 *buf)
{
	__u32 done, n;
	__u64 m;
	__s64 s = *sum;

	for (done = 0; done < ICMP6_QUOTE_MAX; done += ICMP6_CSUM_CHUNK) {
		if (done >= len)
			break;
		n = len - done;
		if (n > ICMP6_CSUM_CHUNK)
			n = ICMP6_CSUM_CHUNK;
		/* A short last chunk is summed zero-padded: chunks start at even offsets, so the
		 * padding adds nothing (RFC 1071's odd trailing byte is the high half of a word). */
		__builtin_memset(buf, 0, ICMP6_CSUM_CHUNK);
		/*
		 * n is 1..ICMP6_CSUM_CHUNK here, but a verifier older than ~6.7 does not take "n != 0"
		 * as a lower bound and refuses a possibly zero-sized read (Debian 12's 6.1 did). So the
		 * length goes through a form every verifier bounds on both sides: m = n - 1, hidden
		 * from the compiler (which would fold the checks away), masked, compared, plus one.
		 */
		m = n - 1;
		asm volatile("" : "+r"(m));
		m &= 63;
		if (m >= ICMP6_CSUM_CHUNK || bpf_skb_load_bytes(skb, off + done, buf, m + 1))
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)buf, ICMP6_CSUM_CHUNK, s);
		if (s < 0)
			return -1;
	}
	*sum = s;
	return 0;
}

/* RFC 4443 section 2.4 (e): no error to a source that is not one node (unspecified, multicast). */
static __always_inline bool icmp6_may_answer(const __be32 saddr[4])
{
	if ((bpf_ntohl(saddr[0]) >> 24) == 0xff)
		return false;
	return saddr[0] | saddr[1] | saddr[2] | saddr[3];
}

/*
 * Rewrites @skb into "port unreachable" from the service address to the client and redirects it
 * back out of its ingress device. Returns a TC verdict; TC_ACT_SHOT when the packet must not or
 * cannot be answered (a later fragment, a source that is no one node, helper failure) or the rate
 * limit says no. A subprogram of its own (rejects are rare): its headers and checksum buffer stay
 * off the stack frame of the per-packet path, which the verifier bounds at 512 bytes for the
 * whole call chain.
 */
static __noinline int tc_icmp6_reject(struct __sk_buff *skb, const struct packet6 *pkt)
{
	struct icmp6_reject r;
	__be32 ph_tail[2]; /* the pseudo-header past the addresses: upper-layer length, next header */
	__u8 mac[ETH_ALEN];
	__be16 payload_len;
	__u32 quote_len, sum = 0;
	__s64 s;

	/* As the kernel, only a datagram's first fragment is answered: it has the ports. */
	if (pkt->l3_off != sizeof(struct ethhdr) || pkt->frag == FRAG_LATER || !icmp6_may_answer(pkt->saddr))
		return TC_ACT_SHOT;
	if (!icmp_reject_allowed()) {
		stats_count(VIPR_STAT_DROP_ICMP_RATE_LIMIT, skb->len);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_load_bytes(skb, pkt->l3_off + __builtin_offsetof(struct ipv6hdr, payload_len), &payload_len,
			       sizeof(payload_len)))
		return TC_ACT_SHOT;

	/* The packet as its IPv6 header says (no Ethernet padding), cut at the minimum MTU. */
	quote_len = sizeof(struct ipv6hdr) + bpf_ntohs(payload_len);
	if (quote_len > skb->len - pkt->l3_off)
		quote_len = skb->len - pkt->l3_off;
	if (quote_len > ICMP6_QUOTE_MAX)
		quote_len = ICMP6_QUOTE_MAX;
	if (icmp6_sum_skb(skb, pkt->l3_off, quote_len, &sum, (__u8 *)&r))
		return TC_ACT_SHOT;

	__builtin_memset(&r, 0, sizeof(r));
	if (bpf_skb_load_bytes(skb, 0, &r.eth, sizeof(r.eth)))
		return TC_ACT_SHOT;

	__builtin_memcpy(mac, r.eth.h_dest, ETH_ALEN);
	__builtin_memcpy(r.eth.h_dest, r.eth.h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, mac, ETH_ALEN);
	r.ip.version = 6;
	r.ip.payload_len = bpf_htons(8 + quote_len);
	r.ip.nexthdr = IPPROTO_ICMPV6;
	r.ip.hop_limit = 64;
	__builtin_memcpy(&r.ip.saddr, pkt->daddr, sizeof(r.ip.saddr));
	__builtin_memcpy(&r.ip.daddr, pkt->saddr, sizeof(r.ip.daddr));
	r.type = ICMPV6_DEST_UNREACH;
	r.code = ICMPV6_PORT_UNREACH;

	/* The pseudo-header (RFC 8200 section 8.1): the addresses as in the header, then two words. */
	ph_tail[0] = bpf_htonl(8 + quote_len);
	ph_tail[1] = bpf_htonl(IPPROTO_ICMPV6);
	s = bpf_csum_diff(NULL, 0, (void *)&r + __builtin_offsetof(struct icmp6_reject, ip.saddr), 32, sum);
	if (s >= 0)
		s = bpf_csum_diff(NULL, 0, ph_tail, sizeof(ph_tail), s);
	if (s < 0)
		return TC_ACT_SHOT;
	/* The ICMPv6 header: type, code, checksum 0, unused. */
	r.checksum = csum16(&r.type, 8, s);

	if (bpf_skb_change_tail(skb, pkt->l3_off + quote_len, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, ICMP6_REJECT_ROOM, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &r, sizeof(r), BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* __VIPR_ICMP6_H */
