// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TC programs. Attach both on every interface of the node that carries service traffic (pod
 * links, the client-facing and the external interface): ingress balances new flows, rewrites
 * tracked ones and the replies of SNATed flows; egress rewrites the other replies back to the
 * frontend the client used, just before they reach it.
 *
 * Both also pull headers the skb holds outside its linear data (lib/pull.h), translate every
 * fragment of a service datagram as its flow (lib/frag.h) and rewrite ICMP errors about translated
 * flows back to what their receiver sent (lib/icmp_error.h).
 *
 * Verdicts: TC_ACT_OK for everything not addressed to a service, so the programs can sit in
 * front of any other TC user (TCX links chain; clsact uses a fixed priority). TC_ACT_SHOT also for
 * a later fragment whose first fragment was never seen.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/lb.h"
#include "lib/fib.h"
#include "lib/icmp.h"
#include "lib/icmp_error.h"
#include "lib/pull.h"

static __always_inline int tc_apply(struct __sk_buff *skb, const struct packet *pkt,
				    enum lb_action action, const struct nat_plan *plan)
{
	int ret;

	switch (action) {
	case LB_NAT:
		if (tc_apply_plan(skb, pkt, plan)) {
			stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
			return TC_ACT_SHOT;
		}
		if (plan->daddr != pkt->daddr)
			stats_count(VIPR_STAT_DNAT, skb->len);
		if (!plan->redirect)
			return TC_ACT_OK;
		ret = tc_fib_redirect(skb, pkt, plan);
		if (ret < 0) {
			stats_count(VIPR_STAT_DROP_FIB, skb->len);
			return TC_ACT_SHOT;
		}
		return ret;
	case LB_DROP:
		return TC_ACT_SHOT;
	case LB_REJECT:
		return tc_icmp_reject(skb, pkt);
	default:
		return TC_ACT_OK;
	}
}

SEC("tc")
int vipr_tc_ingress(struct __sk_buff *skb)
{
	struct packet pkt;
	struct nat_plan plan;

	switch (tc_lb4_parse(skb, &pkt)) {
	case LB_PACKET_FLOW:
		return tc_apply(skb, &pkt, lb4_plan_ingress(&pkt, skb->len, &plan), &plan);
	case LB_PACKET_ICMP_ERROR:
		return tc_icmp_error(skb, &pkt, true);
	case LB_PACKET_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

SEC("tc")
int vipr_tc_egress(struct __sk_buff *skb)
{
	struct packet pkt;
	struct nat_plan plan;

	switch (tc_lb4_parse(skb, &pkt)) {
	case LB_PACKET_FLOW:
		return tc_apply(skb, &pkt, lb4_plan_egress(&pkt, skb->len, &plan), &plan);
	case LB_PACKET_ICMP_ERROR:
		return tc_icmp_error(skb, &pkt, false);
	case LB_PACKET_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
