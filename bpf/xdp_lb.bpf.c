// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XDP program for the node's external interface: NodePort, LoadBalancer and external-IP traffic
 * from outside the cluster is balanced before the stack sees it. Flows to a remote backend are
 * rewritten (DNAT + SNAT to this node) and sent straight back out by FIB lookup; flows to a local
 * backend are rewritten and handed to the stack, which routes them to the pod, or, for the pods
 * the agent lists in vipr_xdp_pods_v1 (--xdp-local-backends redirect), sent to the pod's veth.
 * Everything else, and anything XDP cannot finish (no neighbour entry yet, ICMP rejects), goes on
 * to the TC programs, which share the maps and so the same flows; what XDP did finish and passes
 * carries struct vipr_xdp_meta, and TC ingress lets it through unread.
 *
 * Only for interfaces that receive from a NIC: frames from local senders may carry partial
 * checksums, which XDP cannot complete.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/xdp.h"
#include "lib/lb6.h"
#include "lib/fib6.h"

/* The rewrite and where the frame goes, in a frame of its own (the FIB lookup's 64 bytes). */
static __noinline int xdp_send6(struct xdp_md *ctx, const struct packet6 *pkt, const struct nat_plan6 *plan, __u32 len)
{
	struct bpf_fib_lookup fib;

	if (plan->redirect && xdp_fib6_lookup(ctx, pkt, plan, &fib)) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (xdp_apply_plan6(ctx, pkt, plan)) {
		stats_count(VIPR_STAT_DROP_REWRITE, len);
		return XDP_DROP;
	}
	if (!ipv6_equal(plan->daddr, pkt->daddr))
		stats_count(VIPR_STAT_DNAT, len);
	if (!plan->redirect) {
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	if (fib.ifindex == ctx->ingress_ifindex)
		stats_count(VIPR_STAT_XDP_TX, len);
	else
		stats_count(VIPR_STAT_XDP_REDIRECT, len);
	return xdp_forward6(ctx, &fib);
}

/*
 * IPv6 in a program of its own, reached by a tail call from the entry point: IPv4 stays inline
 * there as it was before IPv6 (no bpf-to-bpf call on its per-packet path) and IPv6 gets a fresh
 * 512-byte stack (the verifier adds up the frames of a call chain; both families' locals in one
 * frame do not fit).
 */
static __noinline int xdp_lb6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	struct nat_plan6 plan;
	struct packet6 pkt;

	switch (lb6_parse(data, data_end, len, &pkt)) {
	case LB_PACKET_FLOW:
		break;
	case LB_PACKET_DROP:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
	switch (lb6_plan_ingress(&pkt, len, &plan)) {
	case LB_DROP:
		return XDP_DROP;
	case LB_NAT:
		break;
	default:
		stats_count(VIPR_STAT_XDP_PASS, len);
		return XDP_PASS;
	}
	return xdp_send6(ctx, &pkt, &plan, len);
}

SEC("xdp")
int vipr_xdp_ingress6(struct xdp_md *ctx)
{
	return xdp_lb6(ctx);
}

SEC("xdp")
int vipr_xdp_ingress(struct xdp_md *ctx)
{
	return xdp_lb4(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
