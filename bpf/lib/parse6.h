/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 TCP/UDP parsing, as parse.h for IPv4: a cursor with an explicit bounds check before every
 * header access, a bounded walk over extension headers (VIPR_IPV6_MAX_EXT_HDRS), fragments told
 * apart by the fragment header, and ICMPv6 errors quoting a TCP/UDP packet.
 */
#ifndef __VIPR_PARSE6_H
#define __VIPR_PARSE6_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "vipr_types.h"
#include "parse.h"

/* What an ICMPv6 error quotes of the packet it is about (its IPv6 header and L4 ports). */
struct icmp6_quote {
	__u32 icmp_off;  /* the ICMPv6 header, from the start of the frame */
	__u32 l3_off;    /* the quoted IPv6 header (icmp_off + 8) */
	__u32 l4_off;    /* the quoted L4 header */
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 l4_check;   /* 1: the quoted L4 checksum is present in the quote */
	__u8 type;       /* ICMPv6 type (1 unreachable, 2 packet too big, 3 time exceeded, 4 parameter problem) */
	__u8 pad;
};

/* What the programs need of an IPv6 packet; offsets are from the start of the frame. */
struct packet6 {
	__u32 l3_off;
	__u32 l4_off;       /* the TCP/UDP (or ICMPv6) header, past every extension header */
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;         /* the upper-layer protocol the walk ended at */
	__u8 tcp_flags;
	__u8 frag;          /* enum packet_frag */
	__u8 pad;
	__be32 frag_id;     /* the fragment header's identification (frag != FRAG_NONE) */
	struct icmp6_quote quote; /* PARSE_ICMP_ERROR only */
};

/* IPv6 addresses as four __be32 words (struct packet6, the map layouts). */
static __always_inline void ipv6_copy(__be32 *dst, const __be32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline bool ipv6_equal(const __be32 *a, const __be32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

static __always_inline bool ipv6_is_zero(const __be32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

/* linux/ipv6.h leaves these to netinet/in.h, which does not exist for the BPF target. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_ICMP6 58
#define NEXTHDR_DEST 60

/* Fragment header: offset in 8-byte units in the upper 13 bits, M (more fragments) the lowest. */
#define IP6_FRAG_OFFSET 0xfff8
#define IP6_FRAG_MORE 0x0001

#include "parse6_icmp.h"

/* parse6_ext_step stepped over an extension header. */
#define PARSE6_STEPPED (-1)

/*
 * One step of the extension header walk: the header at @c->pos, of type *@nexthdr. Returns
 * PARSE6_STEPPED after stepping over an extension header (*@nexthdr is then the next one's type),
 * PARSE_OK when *@nexthdr is no extension header (the walk is done), or the result the whole
 * parse ends with (a later fragment, a short header).
 */
static __always_inline int parse6_ext_step(struct cursor *c, __u8 *nexthdr,
							 struct packet6 *pkt)
{
	__u8 *h = c->pos;
	__u32 len;

	switch (*nexthdr) {
	case NEXTHDR_ROUTING:
		/*
		 * Segments left: the packet is on its way to a later segment, and its upper-layer
		 * checksum covers that final destination, not the address in this header (RFC 8200
		 * 8.1). No service address is its destination yet: not ours.
		 */
		if ((void *)(h + 4) > c->end)
			return PARSE_SHORT;
		if (h[3] != 0)
			return PARSE_OTHER_L4;
		len = ((__u32)h[1] + 1) * 8;
		break;
	case NEXTHDR_HOP:
	case NEXTHDR_DEST:
		if ((void *)(h + 2) > c->end)
			return PARSE_SHORT;
		len = ((__u32)h[1] + 1) * 8;
		break;
	case NEXTHDR_AUTH:
		/* RFC 4302: the length is in 4-byte units, minus 2. */
		if ((void *)(h + 2) > c->end)
			return PARSE_SHORT;
		len = ((__u32)h[1] + 2) * 4;
		break;
	case NEXTHDR_FRAGMENT: {
		__u16 off;

		if ((void *)(h + 8) > c->end)
			return PARSE_SHORT;
		off = bpf_ntohs(*(__be16 *)(h + 2));
		pkt->frag_id = *(__be32 *)(h + 4);
		if (off & IP6_FRAG_OFFSET) {
			/* A later fragment: its upper-layer header is in the first one. */
			pkt->proto = h[0];
			if (h[0] != IPPROTO_TCP && h[0] != IPPROTO_UDP)
				return PARSE_OTHER_L4;
			pkt->frag = FRAG_LATER;
			return PARSE_FRAGMENT;
		}
		/* Offset 0 without M is an atomic fragment (RFC 6946): a whole datagram. */
		if (off & IP6_FRAG_MORE)
			pkt->frag = FRAG_FIRST;
		len = 8;
		break;
	}
	default:
		return PARSE_OK;
	}
	*nexthdr = h[0];
	c->pos += len;
	return PARSE6_STEPPED;
}

/*
 * Parses Ethernet + IPv6 + extension headers + TCP/UDP ports, or the quote of an ICMPv6 error.
 * As parse_ipv4_l4: @data and @data_end are the frame bounds, a bounds failure is PARSE_SHORT.
 * Another ethertype is PARSE_NOT_IPV4 (the name is IPv4's; here it means "not this family").
 * The walk takes at most VIPR_IPV6_MAX_EXT_HDRS extension headers: a longer chain is
 * PARSE_EXT_HDR_LIMIT and passes untouched, so no sender can make the walk unbounded.
 * A subprogram: its unrolled walk spills registers, and its frame then sits beside the rest of
 * the IPv6 path's instead of under it (the verifier adds up the frames of a call chain). Unused
 * in objects that include this header only for struct packet6 and the address helpers.
 */
static __noinline __attribute__((unused)) enum parse_result parse_ipv6_l4(void *data, void *data_end, struct packet6 *pkt)
{
	struct cursor c = { .pos = data, .end = data_end };
	struct ethhdr *eth = c.pos;
	struct ipv6hdr *ip6;
	int r;
	__u32 payload_len, ext_len;
	__u8 nexthdr;
	int i;

	/* As parse_ipv4_l4: the quote is written and read only on the ICMP error path. */
	__builtin_memset(pkt, 0, __builtin_offsetof(struct packet6, quote));
	if ((void *)(eth + 1) > c.end)
		return PARSE_SHORT;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6))
		return PARSE_NOT_IPV4;
	c.pos = eth + 1;

	ip6 = c.pos;
	if ((void *)(ip6 + 1) > c.end)
		return PARSE_SHORT;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	payload_len = bpf_ntohs(ip6->payload_len);
	pkt->l3_off = sizeof(*eth);
	__builtin_memcpy(pkt->saddr, &ip6->saddr, 16);
	__builtin_memcpy(pkt->daddr, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;
	c.pos = ip6 + 1;

#pragma unroll
	for (i = 0; i < VIPR_IPV6_MAX_EXT_HDRS; i++) {
		r = parse6_ext_step(&c, &nexthdr, pkt);
		if (r == PARSE_OK)
			break;
		if (r != PARSE6_STEPPED)
			return r;
	}
	if (i == VIPR_IPV6_MAX_EXT_HDRS && (nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_ROUTING ||
					    nexthdr == NEXTHDR_DEST || nexthdr == NEXTHDR_AUTH ||
					    nexthdr == NEXTHDR_FRAGMENT))
		return PARSE_EXT_HDR_LIMIT;

	pkt->l4_off = c.pos - data;
	pkt->proto = nexthdr;
	ext_len = pkt->l4_off - sizeof(*eth) - sizeof(*ip6);
	if (payload_len < ext_len)
		return PARSE_MALFORMED;

	if (nexthdr == IPPROTO_TCP) {
		struct tcphdr *tcp = c.pos;

		if ((void *)(tcp + 1) > c.end)
			return PARSE_SHORT;
		if (tcp->doff < 5)
			return PARSE_MALFORMED;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		return PARSE_OK;
	}
	if (nexthdr == IPPROTO_UDP) {
		struct udphdr *udp = c.pos;

		if ((void *)(udp + 1) > c.end)
			return PARSE_SHORT;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		return PARSE_OK;
	}
	/* An ICMPv6 error that is itself a fragment quotes nothing usable: leave it alone. */
	if (nexthdr == NEXTHDR_ICMP6 && pkt->frag == FRAG_NONE)
		return parse_icmp6_quote(&c, payload_len - ext_len, pkt);
	return PARSE_OTHER_L4;
}

#endif /* __VIPR_PARSE6_H */
