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

#endif /* __VIPR_PARSE6_H */
