/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The quote of an ICMPv6 error (RFC 4443 section 3): destination unreachable, packet too big,
 * time exceeded and parameter problem carry "as much of the invoking packet as possible" after
 * their 8-byte header, that is its IPv6 header, the extension headers it had, and its first L4
 * bytes. The rewrite of an error about a translated flow needs the quoted addresses and ports, so
 * the quote is parsed as far as that; informational messages (echo, neighbour discovery, ...)
 * quote nothing and are not ours.
 *
 * Included by parse6.h after struct packet6, the cursor and the NEXTHDR_* numbers
 * (pkt->l4_off is then the outer ICMPv6 header).
 */
#ifndef __VIPR_PARSE6_ICMP_H
#define __VIPR_PARSE6_ICMP_H

#include <linux/icmpv6.h>

/*
 * Extension headers a quote may carry before its TCP/UDP header. Errors about Service flows
 * quote what clients and backends send, which is rarely more than one (a fragment header); the
 * bound keeps the verifier's work small. A longer chain is left alone, as any quote not parsed.
 */
#define VIPR_ICMP6_QUOTE_EXT_HDRS 2

/* The ICMPv6 errors that quote a packet (types 1-4; informational messages are 128 and up). */
static __always_inline bool icmp6_type_quotes(__u8 type)
{
	return type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
}

/*
 * The quote of the ICMPv6 message at @c->pos (its header); @icmp_len is the message's length by
 * the outer headers. PARSE_ICMP_ERROR with pkt->quote filled for an error quoting a TCP/UDP
 * packet (unfragmented, or its first fragment) with at least its ports; PARSE_SHORT when the
 * quote's headers run past the frame (TC then pulls them in); PARSE_OTHER_L4 for everything else.
 */
static __always_inline enum parse_result parse_icmp6_quote(struct cursor *c, __u32 icmp_len,
							   struct packet6 *pkt)
{
	__u8 *icmp = c->pos;
	struct ipv6hdr *ip;
	__u8 *pos;
	__u32 ext_len = 0, len;
	__u8 nexthdr;
	int i;

	if ((void *)(icmp + 8) > c->end)
		return PARSE_SHORT;
	if (!icmp6_type_quotes(icmp[0]))
		return PARSE_OTHER_L4;
	if (icmp_len < 8 + sizeof(*ip) + 8)
		return PARSE_OTHER_L4;
	ip = (void *)(icmp + 8);
	if ((void *)(ip + 1) > c->end)
		return PARSE_SHORT;
	if (ip->version != 6)
		return PARSE_OTHER_L4;
	nexthdr = ip->nexthdr;
	pos = (void *)(ip + 1);

	for (i = 0; i < VIPR_ICMP6_QUOTE_EXT_HDRS; i++) {
		if (nexthdr == IPPROTO_TCP || nexthdr == IPPROTO_UDP)
			break;
		if ((void *)(pos + 8) > c->end)
			return PARSE_SHORT;
		/*
		 * No routing header: with one the quoted L4 checksum covers the final destination, not
		 * the address in the quoted header, and an update by the header's addresses would be wrong.
		 */
		if (nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_DEST)
			len = ((__u32)pos[1] + 1) * 8;
		else if (nexthdr == NEXTHDR_AUTH)
			len = ((__u32)pos[1] + 2) * 4;
		else if (nexthdr == NEXTHDR_FRAGMENT && !(bpf_ntohs(*(__be16 *)(pos + 2)) & IP6_FRAG_OFFSET))
			len = 8;
		else
			/* A routing header, another protocol, or a later fragment (no L4 header). */
			return PARSE_OTHER_L4;
		nexthdr = pos[0];
		pos += len;
		ext_len += len;
	}
	if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
		return PARSE_OTHER_L4;
	/* The quote must hold the ports, by its own length as well as in the frame. */
	if (icmp_len < 8 + sizeof(*ip) + ext_len + 8)
		return PARSE_OTHER_L4;
	if ((void *)(pos + 8) > c->end)
		return PARSE_SHORT;

	if (nexthdr == IPPROTO_UDP) {
		/* IPv6 UDP always has a checksum (RFC 8200); a zero one is left as it came. */
		pkt->quote.l4_check = ((struct udphdr *)pos)->check != 0;
	} else {
		pkt->quote.l4_check = icmp_len - 8 - sizeof(*ip) - ext_len >= TCP_CHECK_END;
		if (pkt->quote.l4_check && (void *)(pos + TCP_CHECK_END) > c->end)
			return PARSE_SHORT;
	}
	pkt->quote.icmp_off = pkt->l4_off;
	pkt->quote.l3_off = pkt->l4_off + 8;
	pkt->quote.l4_off = pkt->l4_off + 8 + sizeof(*ip) + ext_len;
	__builtin_memcpy(pkt->quote.saddr, &ip->saddr, sizeof(pkt->quote.saddr));
	__builtin_memcpy(pkt->quote.daddr, &ip->daddr, sizeof(pkt->quote.daddr));
	pkt->quote.sport = ((__be16 *)pos)[0];
	pkt->quote.dport = ((__be16 *)pos)[1];
	pkt->quote.proto = nexthdr;
	pkt->quote.type = icmp[0];
	pkt->quote.pad = 0;
	return PARSE_ICMP_ERROR;
}

#endif /* __VIPR_PARSE6_ICMP_H */
