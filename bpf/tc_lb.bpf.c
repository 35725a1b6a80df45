// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * TC programs for ClusterIP (and, later, external) service traffic. Attach both on every
 * interface that carries client traffic: ingress DNATs packets for services to a backend,
 * egress rewrites the backends' replies back to the service address before they reach the
 * client (doing it on the backend-facing ingress instead makes the kernel see a service address
 * arrive from a pod link and drop it as martian).
 *
 * Verdicts: TC_ACT_OK for everything not addressed to a service, so the programs can sit in
 * front of any other TC user (TCX links chain; clsact uses a fixed priority).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/lb.h"

SEC("tc")
int vipr_tc_ingress(struct __sk_buff *skb)
{
	struct packet pkt;

	if (!lb4_parse(skb, &pkt))
		return TC_ACT_OK;
	return lb4_dnat(skb, &pkt);
}

SEC("tc")
int vipr_tc_egress(struct __sk_buff *skb)
{
	struct packet pkt;

	if (!lb4_parse(skb, &pkt))
		return TC_ACT_OK;
	return lb4_rev_nat(skb, &pkt);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
