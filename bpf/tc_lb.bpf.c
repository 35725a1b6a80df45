// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TC programs. Attach both on every interface of the node that carries service traffic (pod
 * links, the client-facing and the external interface): ingress balances new flows, rewrites
 * tracked ones and the replies of SNATed flows; egress rewrites the other replies back to the
 * frontend the client used, just before they reach it.
 *
 * Verdicts: TC_ACT_OK for everything not addressed to a service, so the programs can sit in
 * front of any other TC user (TCX links chain; clsact uses a fixed priority).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/lb.h"
#include "lib/fib.h"
#include "lib/icmp.h"

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

	if (!lb4_parse((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &pkt))
		return TC_ACT_OK;
	return tc_apply(skb, &pkt, lb4_plan_ingress(&pkt, skb->len, &plan), &plan);
}

SEC("tc")
int vipr_tc_egress(struct __sk_buff *skb)
{
	struct packet pkt;
	struct nat_plan plan;

	if (!lb4_parse((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &pkt))
		return TC_ACT_OK;
	return tc_apply(skb, &pkt, lb4_plan_egress(&pkt, skb->len, &plan), &plan);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
