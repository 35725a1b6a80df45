/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 TCP/UDP parsing with a cursor: every header access is preceded by an explicit bounds check
 * against data_end, so the verifier and a malformed packet both see the same rule. Fragments are
 * told apart (a first fragment has its ports, a later one none), and so are ICMP errors quoting a
 * TCP/UDP packet, whose quote is parsed as far as the programs rewrite it.
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

/* linux/icmp.h drags in libc headers that do not exist for the BPF target. */
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

enum parse_result {
	PARSE_OK = 0,        /* IPv4 TCP/UDP with its ports (a first fragment too: pkt->frag) */
	PARSE_NOT_IPV4,      /* another ethertype (IPv6: parse6.h; ARP, ...: not ours) */
	PARSE_FRAGMENT,      /* a later IPv4 fragment: no L4 header, its ports are its first fragment's */
	PARSE_ICMP_ERROR,    /* an ICMP error quoting an IPv4 TCP/UDP packet: pkt->quote filled */
	PARSE_OTHER_L4,      /* IPv4 but neither TCP nor UDP nor an ICMP error about them */
	PARSE_SHORT,         /* well-formed so far, but the headers run past the data given */
	PARSE_MALFORMED,     /* inconsistent headers */
	PARSE_EXT_HDR_LIMIT, /* IPv6: more extension headers than the walk takes (VIPR_IPV6_MAX_EXT_HDRS) */
};

/* Where a packet stands in its datagram. */
enum packet_frag {
	FRAG_NONE = 0,  /* not fragmented */
	FRAG_FIRST,     /* offset 0, more fragments follow: the L4 header is here */
	FRAG_LATER,     /* offset > 0: no L4 header */
};

/*
 * What an ICMP error quotes of the packet it is about: that packet's IPv4 header (without
 * options: a quote with options is left alone) and at least 8 bytes of its TCP/UDP header.
 */
struct icmp_quote {
	__u32 icmp_off;  /* the ICMP header, from the start of the frame */
	__u32 l3_off;    /* the quoted IPv4 header (icmp_off + 8) */
	__u32 l4_off;    /* the quoted L4 header (l3_off + 20) */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 l4_check;   /* 1: the quoted L4 checksum is present and in use (TCP: quoted in full; UDP: not 0) */
	__u8 pad[2];
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
	__u8 frag;      /* enum packet_frag */
	__u8 pad;
	__be16 ip_id;   /* IPv4 identification (fragments) */
	struct icmp_quote quote; /* PARSE_ICMP_ERROR only */
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* The TCP checksum's offset in its header: quoted ICMP errors need this far of it. */
#define TCP_CHECK_END 18

struct cursor {
	void *pos;
	void *end;
};

/*
 * The quote of an ICMP error at @c->pos (the ICMP header); @icmp_len is the ICMP message's length
 * by the outer header. Only destination unreachable (fragmentation needed, port unreachable, ...),
 * time exceeded and parameter problem quote a packet of the flow.
 */
static __always_inline enum parse_result parse_icmp_quote(struct cursor *c, __u32 icmp_len,
							  struct packet *pkt)
{
	__u8 *icmp = c->pos;
	struct iphdr *ip;
	__u8 *l4;
	__u32 quoted;

	if ((void *)(icmp + 8) > c->end)
		return PARSE_SHORT;
	if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED && icmp[0] != ICMP_PARAMETERPROB)
		return PARSE_OTHER_L4;
	ip = (void *)(icmp + 8);
	l4 = (void *)(ip + 1);
	if (icmp_len < 8 + sizeof(*ip) + 8)
		return PARSE_OTHER_L4;
	if ((void *)(l4 + 8) > c->end)
		return PARSE_SHORT;
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_OFFSET)) ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return PARSE_OTHER_L4;
	quoted = icmp_len - 8 - sizeof(*ip);
	pkt->quote.l4_check = ip->protocol == IPPROTO_UDP ? ((struct udphdr *)l4)->check != 0
							  : quoted >= TCP_CHECK_END;
	if (ip->protocol == IPPROTO_TCP && pkt->quote.l4_check && (void *)(l4 + TCP_CHECK_END) > c->end)
		return PARSE_SHORT;
	pkt->quote.icmp_off = pkt->l4_off;
	pkt->quote.l3_off = pkt->l4_off + 8;
	pkt->quote.l4_off = pkt->l4_off + 8 + sizeof(*ip);
	pkt->quote.saddr = ip->saddr;
	pkt->quote.daddr = ip->daddr;
	pkt->quote.sport = ((__be16 *)l4)[0];
	pkt->quote.dport = ((__be16 *)l4)[1];
	pkt->quote.proto = ip->protocol;
	return PARSE_ICMP_ERROR;
}

/*
 * Parses Ethernet + IPv4 (options skipped by IHL) + TCP/UDP ports, or the quote of an ICMP error.
 * @data and @data_end are the frame bounds of the hook (skb or xdp). A bounds failure is
 * PARSE_SHORT, so TC can tell headers outside the skb's linear data from a malformed packet.
 */
static __always_inline enum parse_result parse_ipv4_l4(void *data, void *data_end,
						       struct packet *pkt)
{
	struct cursor c = { .pos = data, .end = data_end };
	struct ethhdr *eth = c.pos;
	struct iphdr *ip;
	__u32 ihl_len, tot_len;

	/*
	 * Each outcome fills other fields, and the compiler merges them where the outcomes meet; a
	 * field left unset there is spilled as an uninitialised register, which the verifier refuses.
	 * The quote is written and read only on the ICMP error path: zeroing it too would cost every
	 * packet (measured: ~10-20 ns more on the common paths).
	 */
	__builtin_memset(pkt, 0, __builtin_offsetof(struct packet, quote));
	if ((void *)(eth + 1) > c.end)
		return PARSE_SHORT;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	c.pos = eth + 1;

	ip = c.pos;
	if ((void *)(ip + 1) > c.end)
		return PARSE_SHORT;
	if (ip->version != 4)
		return PARSE_MALFORMED;
	ihl_len = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (ihl_len < sizeof(*ip) || tot_len < ihl_len)
		return PARSE_MALFORMED;
	/* The whole header, options included, must be in the frame. */
	if (c.pos + ihl_len > c.end)
		return PARSE_SHORT;

	pkt->l3_off = sizeof(*eth);
	pkt->l4_off = sizeof(*eth) + ihl_len;
	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->ip_id = ip->id;

	if (ip->frag_off & bpf_htons(IP_OFFSET)) {
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return PARSE_OTHER_L4;
		pkt->frag = FRAG_LATER;
		return PARSE_FRAGMENT;
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		pkt->frag = FRAG_FIRST;
	c.pos += ihl_len;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = c.pos;

		if ((void *)(tcp + 1) > c.end)
			return PARSE_SHORT;
		if (tcp->doff < 5)
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
			return PARSE_SHORT;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		return PARSE_OK;
	}
	/* An ICMP error that is itself a fragment quotes nothing usable: leave it alone. */
	if (ip->protocol == IPPROTO_ICMP && pkt->frag == FRAG_NONE)
		return parse_icmp_quote(&c, tot_len - ihl_len, pkt);
	return PARSE_OTHER_L4;
}

#endif /* __VIPR_PARSE_H */
