/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The XDP entry point's IPv4 path (bpf/xdp_lb.bpf.c says what it is for); IPv6 goes on by tail
 * call through vipr_xdp_ipv6_progs_v1.
 */
#ifndef __VIPR_XDP_H
#define __VIPR_XDP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "fib.h"

/*
 * The IPv6 program (slot VIPR_IPV6_PROG_XDP), pinned and filled by the loader just before it
 * attaches this object, as vipr_tc_ipv6_progs_v1 in tc_lb.bpf.c (read why there). A map of its
 * own: a prog array takes programs of one type, and TC's are another.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, VIPR_XDP_IPV6_PROGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_xdp_ipv6_progs_v1 SEC(".maps");

/*
 * The IPv4 path, inline in the entry point (and in the bench's harness, bench/xdp_paths.bpf.c,
 * which times it on a fresh copy of a frame each run).
 */
static __always_inline int xdp_lb4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	struct bpf_fib_lookup fib;
	struct nat_plan plan;
	struct packet pkt;

	switch (lb4_parse(data, data_end, len, &pkt)) {
	case LB_PACKET_FLOW:
		break;
	case LB_PACKET_DROP:
		return XDP_DROP;
	case LB_PACKET_NOT_IPV4:
		/* IPv6 goes on in its program; other ethertypes, and IPv6 without it, pass counted. */
		if (data + sizeof(struct ethhdr) > data_end ||
		    ((struct ethhdr *)data)->h_proto != bpf_htons(ETH_P_IPV6)) {
			stats_count(VIPR_STAT_PASS_NON_IPV4, len);
			return XDP_PASS;
		}
		bpf_tail_call(ctx, &vipr_xdp_ipv6_progs_v1, VIPR_IPV6_PROG_XDP);
		stats_count(VIPR_STAT_PASS_IPV6_NO_PROGRAM, len);
		return XDP_PASS;
	default:
		/* ICMP errors of translated flows too: TC rewrites them. */
		return XDP_PASS;
	}
	switch (lb4_plan_ingress(&pkt, len, &plan)) {
	case LB_DROP:
		return XDP_DROP;
	case LB_NAT:
		break;
	default:
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	/* DSR flows (lib/dsr.h) grow by their option: TC adds it, from the flow this recorded. */
	if (plan.dsr) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (plan.redirect && xdp_fib_lookup(ctx, &pkt, &plan, &fib)) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (xdp_apply_plan(ctx, &pkt, &plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	if (plan.daddr != pkt.daddr)
		stats_count(VIPR_STAT_DNAT, len);
	if (!plan.redirect) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (fib.ifindex == ctx->ingress_ifindex)
		stats_count(VIPR_STAT_XDP_TX, len);
	else
		stats_count(VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward(ctx, &fib);
}

#endif /* __VIPR_XDP_H */
