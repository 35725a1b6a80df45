/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The quote of an ICMPv6 error (included by parse6.h, after struct packet6 and the cursor).
 * This version recognises no ICMPv6 error: every ICMPv6 message passes untouched.
 */
#ifndef __VIPR_PARSE6_ICMP_H
#define __VIPR_PARSE6_ICMP_H

/*
 * The quote of the ICMPv6 message at @c->pos (its header); @icmp_len is its length by the outer
 * header. Fills pkt->quote and returns PARSE_ICMP_ERROR for an error quoting a TCP/UDP packet;
 * PARSE_OTHER_L4 otherwise.
 */
static __always_inline enum parse_result parse_icmp6_quote(struct cursor *c, __u32 icmp_len,
							   struct packet6 *pkt)
{
	return PARSE_OTHER_L4;
}

#endif /* __VIPR_PARSE6_ICMP_H */
