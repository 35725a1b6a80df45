/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 TCP/UDP parsing with a cursor: every header access is preceded by an explicit bounds check
 * against data_end, so the verifier and a malformed packet both see the same rule.
 */
#ifndef __VIPR_PARSE_H
#define __VIPR_PARSE_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "vipr_types.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

enum parse_result {
	PARSE_OK = 0,        /* IPv4 TCP/UDP, tuple filled */
	PARSE_NOT_IPV4,      /* ARP, IPv6, ...: not ours */
	PARSE_FRAGMENT,      /* IPv4 fragment: no usable L4 header */
	PARSE_OTHER_L4,      /* IPv4 but neither TCP nor UDP */
	PARSE_MALFORMED,     /* truncated or inconsistent headers */
};

/* What the programs need of a packet; offsets are from the start of the frame. */
struct packet {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP flag byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); 0 for UDP */
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct cursor {
	void *pos;
	void *end;
};

/*
 * Parses Ethernet + IPv4 (options skipped by IHL) + TCP/UDP ports. @data and @data_end are the
 * frame bounds of the hook (skb or xdp).
 */
static __always_inline enum parse_result parse_ipv4_l4(void *data, void *data_end,
						       struct packet *pkt)
{
	struct cursor c = { .pos = data, .end = data_end };
	struct ethhdr *eth = c.pos;
	struct iphdr *ip;
	__u32 ihl_len;

	if ((void *)(eth + 1) > c.end)
		return PARSE_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	c.pos = eth + 1;

	ip = c.pos;
	if ((void *)(ip + 1) > c.end)
		return PARSE_MALFORMED;
	if (ip->version != 4)
		return PARSE_MALFORMED;
	ihl_len = ip->ihl * 4;
	if (ihl_len < sizeof(*ip))
		return PARSE_MALFORMED;
	/* The whole header, options included, must be in the frame and within tot_len. */
	if (c.pos + ihl_len > c.end || bpf_ntohs(ip->tot_len) < ihl_len)
		return PARSE_MALFORMED;

	pkt->l3_off = sizeof(*eth);
	pkt->l4_off = sizeof(*eth) + ihl_len;
	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->tcp_flags = 0;

	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	c.pos += ihl_len;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = c.pos;

		if ((void *)(tcp + 1) > c.end || tcp->doff < 5)
			return PARSE_MALFORMED;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		/* Byte 13 of the TCP header holds FIN..CWR. */
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		return PARSE_OK;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = c.pos;

		if ((void *)(udp + 1) > c.end)
			return PARSE_MALFORMED;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		return PARSE_OK;
	}
	return PARSE_OTHER_L4;
}

#endif /* __VIPR_PARSE_H */
