/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMPv6 errors about translated flows, as icmp_error.h for IPv4 (read it first: who sends what
 * error to whom, and where each is rewritten, is the same). The case that matters is Packet Too
 * Big: IPv6 routers never fragment, so path MTU discovery is the only way a flow through a
 * Service gets past a smaller link, and a PTB whose quote the sender cannot match to a socket
 * turns every full-size segment into a black hole.
 *
 * What differs from IPv4: the ICMPv6 checksum covers a pseudo-header with the outer addresses
 * (RFC 4443 section 2.3), so changing those changes it too; there is no IP header checksum. Every
 * change (outer addresses, the quote's addresses, ports and L4 checksum) goes into the ICMPv6
 * checksum in one bpf_csum_diff, so the packet's one's complement sum as a whole, hence a
 * CHECKSUM_COMPLETE skb's csum, stays what it was: what the addresses add, the checksum takes
 * away. The message type and its fourth word (Packet Too Big's MTU, Parameter Problem's pointer)
 * are left as they are.
 */
#ifndef __VIPR_ICMP6_ERROR_H
#define __VIPR_ICMP6_ERROR_H

#include <linux/bpf.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "parse6.h"
#include "ct6.h"
#include "nat6.h"
#include "fib6.h"
#include "stats.h"

/* The rewrite of an ICMPv6 error: its own (outer) header, and the packet it quotes. */
struct icmp6_error_plan {
	struct nat_plan6 outer; /* ports unused; .redirect: forward by FIB lookup (new source is the node) */
	struct nat_plan6 quote;
};

/* The key of the packet that would answer the quoted one, as conntrack stores it in @dir. */
static __always_inline void ct6_key_answer(struct vipr_ct6_key *key, const struct icmp6_quote *q, __u8 dir)
{
	ipv6_copy(key->saddr, q->daddr);
	ipv6_copy(key->daddr, q->saddr);
	key->sport = q->dport;
	key->dport = q->sport;
	key->proto = q->proto;
	key->dir = dir;
	key->pad[0] = 0;
	key->pad[1] = 0;
}

static __always_inline void icmp6_plan_identity(struct icmp6_error_plan *plan, const struct packet6 *pkt)
{
	const struct icmp6_quote *q = &pkt->quote;

	ipv6_copy(plan->outer.saddr, pkt->saddr);
	ipv6_copy(plan->outer.daddr, pkt->daddr);
	plan->outer.sport = 0;
	plan->outer.dport = 0;
	plan->outer.redirect = false;
	ipv6_copy(plan->quote.saddr, q->saddr);
	ipv6_copy(plan->quote.daddr, q->daddr);
	plan->quote.sport = q->sport;
	plan->quote.dport = q->dport;
	plan->quote.redirect = false;
}

/*
 * Decides the rewrite of an ICMPv6 error seen on TC ingress (@ingress) or egress, as
 * lb4_plan_icmp_error. Conntrack is only read: an error neither creates nor refreshes a flow.
 */
static __always_inline enum lb_action lb6_plan_icmp_error(const struct packet6 *pkt, __u32 len, bool ingress,
							  struct icmp6_error_plan *plan)
{
	const struct icmp6_quote *q = &pkt->quote;
	struct vipr_ct6_key key;
	struct vipr_ct6_value *ct;
	bool established;

	icmp6_plan_identity(plan, pkt);

	/* About a client's packet, as sent to the backend: its answer is the flow's reply entry. */
	ct6_key_answer(&key, q, VIPR_CT_REPLY);
	ct = ct6_lookup(&key, &established);
	if (ct) {
		bool snat = ct->flags & VIPR_CT_F_SNAT;

		/* Without SNAT the error goes to the client itself: rewritten on egress, as replies. */
		if (snat != ingress)
			return LB_PASS;
		ipv6_copy(plan->quote.daddr, ct->nat_addr);
		plan->quote.dport = ct->nat_port;
		if (ipv6_equal(pkt->saddr, q->daddr))
			ipv6_copy(plan->outer.saddr, ct->nat_addr);
		if (snat) {
			ipv6_copy(plan->quote.saddr, ct->snat_addr);
			plan->quote.sport = ct->snat_port;
			ipv6_copy(plan->outer.daddr, ct->snat_addr);
			plan->outer.redirect = ct->flags & VIPR_CT_F_REDIRECT;
		}
		stats_count(VIPR_STAT_ICMP_ERROR_NAT, len);
		return LB_NAT;
	}

	/* About a backend's reply, as sent to the client: its answer is the flow's forward entry. */
	if (!ingress || !ipv6_equal(pkt->daddr, q->saddr))
		return LB_PASS;
	ct6_key_answer(&key, q, VIPR_CT_FORWARD);
	ct = ct6_lookup(&key, &established);
	if (!ct)
		return LB_PASS;
	ipv6_copy(plan->quote.saddr, ct->nat_addr);
	plan->quote.sport = ct->nat_port;
	ipv6_copy(plan->outer.daddr, ct->nat_addr);
	if (!ipv6_is_zero(ct->snat_addr)) {
		ipv6_copy(plan->quote.daddr, ct->snat_addr);
		plan->quote.dport = ct->snat_port;
		/* The client reporting on itself: as the backend knows it, it is this node. */
		if (ipv6_equal(pkt->saddr, q->daddr)) {
			ipv6_copy(plan->outer.saddr, ct->snat_addr);
			plan->outer.redirect = ct->flags & VIPR_CT_F_REDIRECT;
		}
	}
	stats_count(VIPR_STAT_ICMP_ERROR_NAT, len);
	return LB_NAT;
}

/*
 * What an ICMPv6 error rewrite changes, as read from the packet: the outer addresses (the IPv6
 * header, hence the pseudo-header) and the quote's addresses and ports, laid out as struct
 * nat_plan6 holds the new ones, so one bpf_csum_diff against the plan covers each. Every field
 * sits at an even offset of the pseudo-header or message: 16-bit one's complement words line up.
 */
struct icmp6_error_old {
	__be32 outer[8];     /* outer source, destination */
	__be32 quote[8];     /* the quote's source, destination */
	__be16 ports[2];     /* the quote's source, destination port */
};

#define IPV6_ADDRS_OFF __builtin_offsetof(struct ipv6hdr, saddr)
#define ICMP6_CHECK_OFF 2

_Static_assert(__builtin_offsetof(struct icmp6_error_old, ports) ==
		       __builtin_offsetof(struct icmp6_error_old, quote) + NAT6_ADDRS_LEN,
	       "the quote's addresses and ports are contiguous, as in struct nat_plan6");

/*
 * TC: applies an ICMPv6 error plan. Returns 0 or a negative errno (the packet may be
 * half-written: drop it).
 */
static __always_inline int tc_apply_icmp6_error_plan(struct __sk_buff *skb, const struct packet6 *pkt,
						     const struct icmp6_error_plan *plan)
{
	const struct icmp6_quote *q = &pkt->quote;
	struct icmp6_error_old old;
	__u32 l4_check_off = q->l4_off + (q->proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check)
								    : __builtin_offsetof(struct udphdr, check));
	__u32 l4_old = 0, l4_new = 0;
	__u16 icmp_check, c;
	__s64 sum;
	int ret;

	if (bpf_skb_load_bytes(skb, pkt->l3_off + IPV6_ADDRS_OFF, old.outer, sizeof(old.outer)) ||
	    bpf_skb_load_bytes(skb, q->l3_off + IPV6_ADDRS_OFF, old.quote, sizeof(old.quote)) ||
	    bpf_skb_load_bytes(skb, q->l4_off, old.ports, sizeof(old.ports)) ||
	    bpf_skb_load_bytes(skb, q->icmp_off + ICMP6_CHECK_OFF, &icmp_check, sizeof(icmp_check)))
		return -1;

	if (q->l4_check) {
		/* The quoted L4 checksum: its pseudo-header addresses and the ports. */
		if (bpf_skb_load_bytes(skb, l4_check_off, &c, sizeof(c)))
			return -1;
		l4_old = c;
		sum = bpf_csum_diff(old.quote, NAT6_TUPLE_LEN, (__be32 *)&plan->quote, NAT6_TUPLE_LEN, (__u16)~c);
		if (sum < 0)
			return -1;
		c = csum_fold_complement(sum);
		/* IPv6 UDP cannot say "no checksum" with 0 (RFC 8200): it is sent as 0xffff. */
		if (q->proto == IPPROTO_UDP && !c)
			c = 0xffff;
		l4_new = c;
	}

	sum = bpf_csum_diff(old.outer, NAT6_ADDRS_LEN, (__be32 *)&plan->outer, NAT6_ADDRS_LEN, (__u16)~icmp_check);
	if (sum >= 0)
		sum = bpf_csum_diff(old.quote, NAT6_TUPLE_LEN, (__be32 *)&plan->quote, NAT6_TUPLE_LEN, sum);
	if (sum < 0)
		return -1;
	icmp_check = csum_fold_complement(sum);
	/* The quoted L4 checksum sits at an even offset of the message: a zero-extended word diff. */
	if (l4_old != l4_new)
		icmp_check = csum_update32(icmp_check, l4_old, l4_new);

	ret = bpf_skb_store_bytes(skb, pkt->l3_off + IPV6_ADDRS_OFF, &plan->outer, NAT6_ADDRS_LEN, 0);
	if (!ret)
		ret = bpf_skb_store_bytes(skb, q->l3_off + IPV6_ADDRS_OFF, &plan->quote, NAT6_ADDRS_LEN, 0);
	if (!ret)
		ret = bpf_skb_store_bytes(skb, q->l4_off, &plan->quote.sport, sizeof(old.ports), 0);
	if (!ret && l4_old != l4_new) {
		c = l4_new;
		ret = bpf_skb_store_bytes(skb, l4_check_off, &c, sizeof(c), 0);
	}
	if (!ret)
		ret = bpf_skb_store_bytes(skb, q->icmp_off + ICMP6_CHECK_OFF, &icmp_check, sizeof(icmp_check), 0);
	return ret;
}

/*
 * TC: an ICMPv6 error, rewritten when it is about a translated flow. Returns a TC verdict. A
 * subprogram of its own (errors are rare): its plan and buffers stay off the stack frame of the
 * per-packet path, which the verifier bounds at 512 bytes for the whole call chain.
 */
static __noinline int tc_icmp6_error(struct __sk_buff *skb, const struct packet6 *pkt, bool ingress)
{
	struct icmp6_error_plan plan;
	int ret;

	if (lb6_plan_icmp_error(pkt, skb->len, ingress, &plan) != LB_NAT)
		return TC_ACT_OK;
	if (tc_apply_icmp6_error_plan(skb, pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	if (!plan.outer.redirect)
		return TC_ACT_OK;
	ret = tc_fib6_redirect(skb, pkt, &plan.outer);
	if (ret < 0) {
		stats_count(VIPR_STAT_DROP_FIB, skb->len);
		return TC_ACT_SHOT;
	}
	return ret;
}

#endif /* __VIPR_ICMP6_ERROR_H */
