/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about translated flows. A router (this node among them) that cannot deliver a
 * packet of a flow answers its sender with an ICMP error quoting the packet as it saw it, that is
 * as translated: a client's packet with the backend as destination, a backend's reply with the
 * frontend as source. The sender's stack matches the quote to a socket, so unless the quote is
 * translated back, "fragmentation needed" is ignored (path MTU discovery through a Service
 * breaks: a black hole for every segment over the smaller MTU) and "port unreachable" never
 * fails the client's socket. As Cilium's lb4_rev_nat / snat_v4_rev_nat ICMP handling, the quote's
 * addresses and ports become what the sender sent, with its IP header checksum, its L4 checksum
 * (when quoted) and the ICMP checksum over it all; the outer destination becomes the sender, and
 * an outer source that is the translated peer itself becomes the address the sender knows.
 *
 * Where: an error about a client's packet travels back towards the client like the flow's
 * replies, so it is rewritten where they are: on TC egress towards the client, or on TC ingress
 * when the flow was SNATed to this node (the error is addressed to the node). An error about a
 * backend's reply is addressed to the frontend (a service address or this node), so it arrives on
 * TC ingress, like the flow's forward packets. XDP leaves ICMP to TC.
 */
#ifndef __VIPR_ICMP_ERROR_H
#define __VIPR_ICMP_ERROR_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "fib.h"

/* The rewrite of an ICMP error: its own (outer) header, and the packet it quotes. */
struct icmp_error_plan {
	struct nat_plan outer; /* ports unused; .redirect: forward by FIB lookup (new source is the node) */
	struct nat_plan quote;
};

/* The key of the packet that would answer the quoted one, as conntrack stores it in @dir. */
static __always_inline void ct4_key_answer(struct vipr_ct_key *key, const struct icmp_quote *q, __u8 dir)
{
	key->saddr = q->daddr;
	key->daddr = q->saddr;
	key->sport = q->dport;
	key->dport = q->sport;
	key->proto = q->proto;
	key->dir = dir;
	key->pad[0] = 0;
	key->pad[1] = 0;
}

static __always_inline void icmp_plan_identity(struct icmp_error_plan *plan, const struct packet *pkt)
{
	const struct icmp_quote *q = &pkt->quote;

	plan->outer.saddr = pkt->saddr;
	plan->outer.daddr = pkt->daddr;
	plan->outer.sport = 0;
	plan->outer.dport = 0;
	plan->outer.redirect = false;
	plan->quote.saddr = q->saddr;
	plan->quote.daddr = q->daddr;
	plan->quote.sport = q->sport;
	plan->quote.dport = q->dport;
	plan->quote.redirect = false;
}

/*
 * Decides the rewrite of an ICMP error seen on TC ingress (@ingress) or egress. Conntrack is only
 * read: an error neither creates nor refreshes a flow.
 */
static __always_inline enum lb_action lb4_plan_icmp_error(const struct packet *pkt, __u32 len, bool ingress,
							  struct icmp_error_plan *plan)
{
	const struct icmp_quote *q = &pkt->quote;
	struct vipr_ct_key key;
	struct vipr_ct_value *ct;
	bool established;

	icmp_plan_identity(plan, pkt);

	/* About a client's packet, as sent to the backend: its answer is the flow's reply entry. */
	ct4_key_answer(&key, q, VIPR_CT_REPLY);
	ct = ct4_lookup(&key, &established);
	if (ct) {
		bool snat = ct->flags & VIPR_CT_F_SNAT;

		/* Without SNAT the error goes to the client itself: rewritten on egress, as replies. */
		if (snat != ingress)
			return LB_PASS;
		plan->quote.daddr = ct->nat_addr;
		plan->quote.dport = ct->nat_port;
		if (pkt->saddr == q->daddr)
			plan->outer.saddr = ct->nat_addr;
		if (snat) {
			plan->quote.saddr = ct->snat_addr;
			plan->quote.sport = ct->snat_port;
			plan->outer.daddr = ct->snat_addr;
			plan->outer.redirect = ct->flags & VIPR_CT_F_REDIRECT;
		}
		stats_count(VIPR_STAT_ICMP_ERROR_NAT, len);
		return LB_NAT;
	}

	/* About a backend's reply, as sent to the client: its answer is the flow's forward entry. */
	if (!ingress || pkt->daddr != q->saddr)
		return LB_PASS;
	ct4_key_answer(&key, q, VIPR_CT_FORWARD);
	ct = ct4_lookup(&key, &established);
	if (!ct)
		return LB_PASS;
	plan->quote.saddr = ct->nat_addr;
	plan->quote.sport = ct->nat_port;
	plan->outer.daddr = ct->nat_addr;
	if (ct->snat_addr) {
		plan->quote.daddr = ct->snat_addr;
		plan->quote.dport = ct->snat_port;
		/* The client reporting on itself: as the backend knows it, it is this node. */
		if (pkt->saddr == q->daddr) {
			plan->outer.saddr = ct->snat_addr;
			plan->outer.redirect = ct->flags & VIPR_CT_F_REDIRECT;
		}
	}
	stats_count(VIPR_STAT_ICMP_ERROR_NAT, len);
	return LB_NAT;
}

/* Byte offsets in the quote: its IPv4 header (20 bytes, no options), then its first L4 bytes. */
#define QUOTE_IP_CHECK 10
#define QUOTE_SADDR 12
#define QUOTE_DADDR 16
#define QUOTE_SPORT 20
#define QUOTE_DPORT 22
#define QUOTE_UDP_CHECK 26
#define QUOTE_LEN 28
#define QUOTE_TCP_CHECK 36

#define ICMP_CHECK_OFF 2

/*
 * TC: applies an ICMP error plan. Every rewrite inside the ICMP message is folded into the ICMP
 * checksum (RFC 1624, bpf_csum_diff over the quote before and after), so the message stays valid
 * and its one's complement sum, hence a CHECKSUM_COMPLETE skb's csum, unchanged; the outer
 * addresses change with the IP header checksum only (ICMP has no pseudo-header). Returns 0 or a
 * negative errno (the packet may be half-written: drop it).
 */
static __always_inline int tc_apply_icmp_error_plan(struct __sk_buff *skb, const struct packet *pkt,
						    const struct icmp_error_plan *plan)
{
	const struct icmp_quote *q = &pkt->quote;
	__u32 old[QUOTE_LEN / 4], new[QUOTE_LEN / 4];
	__u8 *b = (__u8 *)new;
	__u32 tcp_old = 0, tcp_new = 0;
	__u16 icmp_check, c;
	__u32 sum;
	int ret;

	if (bpf_skb_load_bytes(skb, q->l3_off, old, sizeof(old)))
		return -1;
	if (bpf_skb_load_bytes(skb, q->icmp_off + ICMP_CHECK_OFF, &icmp_check, sizeof(icmp_check)))
		return -1;
	__builtin_memcpy(new, old, sizeof(new));
	*(__be32 *)(b + QUOTE_SADDR) = plan->quote.saddr;
	*(__be32 *)(b + QUOTE_DADDR) = plan->quote.daddr;
	*(__be16 *)(b + QUOTE_SPORT) = plan->quote.sport;
	*(__be16 *)(b + QUOTE_DPORT) = plan->quote.dport;
	c = *(__u16 *)(b + QUOTE_IP_CHECK);
	c = csum_update32(c, q->saddr, plan->quote.saddr);
	c = csum_update32(c, q->daddr, plan->quote.daddr);
	*(__u16 *)(b + QUOTE_IP_CHECK) = c;

	if (q->l4_check) {
		/* The quoted L4 checksum: pseudo-header addresses and the ports. */
		if (q->proto == IPPROTO_UDP)
			c = *(__u16 *)(b + QUOTE_UDP_CHECK);
		else if (bpf_skb_load_bytes(skb, q->l3_off + QUOTE_TCP_CHECK, &c, sizeof(c)))
			return -1;
		else
			tcp_old = c;
		c = csum_update32(c, q->saddr, plan->quote.saddr);
		c = csum_update32(c, q->daddr, plan->quote.daddr);
		c = csum_update32(c, q->sport, plan->quote.sport);
		c = csum_update32(c, q->dport, plan->quote.dport);
		if (q->proto == IPPROTO_UDP)
			*(__u16 *)(b + QUOTE_UDP_CHECK) = c ? c : 0xffff;
		else
			tcp_new = c;
	}

	sum = bpf_csum_diff(old, sizeof(old), new, sizeof(new), (__u16)~icmp_check);
	icmp_check = csum_fold_complement(sum);
	/* The TCP checksum sits at an even offset of the message: a zero-extended word diff. */
	if (tcp_old != tcp_new)
		icmp_check = csum_update32(icmp_check, tcp_old, tcp_new);

	ret = bpf_skb_store_bytes(skb, q->l3_off, new, sizeof(new), 0);
	if (!ret && tcp_old != tcp_new) {
		c = tcp_new;
		ret = bpf_skb_store_bytes(skb, q->l3_off + QUOTE_TCP_CHECK, &c, sizeof(c), 0);
	}
	if (!ret)
		ret = bpf_skb_store_bytes(skb, q->icmp_off + ICMP_CHECK_OFF, &icmp_check, sizeof(icmp_check), 0);
	if (!ret)
		ret = tc_rewrite_addr(skb, pkt, __builtin_offsetof(struct iphdr, daddr), pkt->daddr, plan->outer.daddr, false);
	if (!ret)
		ret = tc_rewrite_addr(skb, pkt, __builtin_offsetof(struct iphdr, saddr), pkt->saddr, plan->outer.saddr, false);
	return ret;
}

/* TC: an ICMP error, rewritten when it is about a translated flow. Returns a TC verdict. */
static __always_inline int tc_icmp_error(struct __sk_buff *skb, const struct packet *pkt, bool ingress)
{
	struct icmp_error_plan plan;
	int ret;

	if (lb4_plan_icmp_error(pkt, skb->len, ingress, &plan) != LB_NAT)
		return TC_ACT_OK;
	if (tc_apply_icmp_error_plan(skb, pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	if (!plan.outer.redirect)
		return TC_ACT_OK;
	ret = tc_fib_redirect(skb, pkt, &plan.outer);
	if (ret < 0) {
		stats_count(VIPR_STAT_DROP_FIB, skb->len);
		return TC_ACT_SHOT;
	}
	return ret;
}

#endif /* __VIPR_ICMP_ERROR_H */
