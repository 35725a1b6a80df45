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
 * IPv6 (lib/lb6.h) takes the same steps over its own maps, in programs of its own that the entry
 * points tail-call for what the IPv4 parse found to be IPv6 (vipr_tc_ipv6_progs_v1 below).
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
#include "lib/dsr.h"
#include "lib/lb6.h"
#include "lib/fib6.h"
#include "lib/icmp6.h"
#include "lib/icmp6_error.h"

/* A DSR flow's packet, translated: the frontend it was sent to goes along in an option (lib/dsr.h). */
static __always_inline int tc_apply_dsr(struct __sk_buff *skb, const struct packet *pkt,
					const struct nat_plan *plan)
{
	int ret;

	if (tc_dsr_encap(skb, pkt, pkt->daddr, pkt->dport)) {
		stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	ret = tc_dsr_redirect(skb, pkt, plan);
	if (ret < 0) {
		stats_count(ret == -2 ? VIPR_STAT_DROP_DSR_MTU : VIPR_STAT_DROP_FIB, skb->len);
		return TC_ACT_SHOT;
	}
	return ret;
}

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
		if (plan->dsr && plan->redirect)
			return tc_apply_dsr(skb, pkt, plan);
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

static __noinline int tc_apply6(struct __sk_buff *skb, const struct packet6 *pkt,
				     enum lb_action action, const struct nat_plan6 *plan)
{
	int ret;

	switch (action) {
	case LB_NAT:
		if (tc_apply_plan6(skb, pkt, plan)) {
			stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
			return TC_ACT_SHOT;
		}
		if (!ipv6_equal(plan->daddr, pkt->daddr))
			stats_count(VIPR_STAT_DNAT, skb->len);
		if (!plan->redirect)
			return TC_ACT_OK;
		ret = tc_fib6_redirect(skb, pkt, plan);
		if (ret < 0) {
			stats_count(VIPR_STAT_DROP_FIB, skb->len);
			return TC_ACT_SHOT;
		}
		return ret;
	case LB_DROP:
		return TC_ACT_SHOT;
	case LB_REJECT:
		return tc_icmp6_reject(skb, pkt);
	default:
		return TC_ACT_OK;
	}
}

/*
 * IPv6 runs in programs of its own, reached by a tail call (the entry points below): IPv4 stays
 * inline in the entry points as it was before IPv6, with no bpf-to-bpf call on its per-packet
 * path, and IPv6 gets a fresh 512-byte stack (the verifier adds up the frames of a call chain;
 * IPv4's locals and IPv6's do not fit in one).
 */
/* The ICMPv6 error path in a frame of its own, beside the flow path's rather than on top. */
static __noinline int tc_lb6_icmp_error(struct __sk_buff *skb, const struct packet6 *pkt, bool ingress)
{
	return tc_icmp6_error(skb, pkt, ingress);
}

/*
 * Inlined in both entry points: as a frame of its own under them it added 32 bytes (the
 * verifier's least per frame) to every IPv6 call chain, and Debian 12's 6.1 counted 544 of 512.
 */
static __always_inline int tc_lb6(struct __sk_buff *skb, bool ingress)
{
	struct packet6 pkt;
	struct nat_plan6 plan;
	enum lb_action action;

	switch (tc_lb6_parse(skb, &pkt)) {
	case LB_PACKET_FLOW:
		action = ingress ? lb6_plan_ingress(&pkt, skb->len, &plan) : lb6_plan_egress(&pkt, skb->len, &plan);
		return tc_apply6(skb, &pkt, action, &plan);
	case LB_PACKET_ICMP_ERROR:
		return tc_lb6_icmp_error(skb, &pkt, ingress);
	case LB_PACKET_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

SEC("tc")
int vipr_tc_ingress6(struct __sk_buff *skb)
{
	return tc_lb6(skb, true);
}

SEC("tc")
int vipr_tc_egress6(struct __sk_buff *skb)
{
	return tc_lb6(skb, false);
}

/*
 * The IPv6 programs by slot (enum vipr_ipv6_prog). Pinned, as a prog array is emptied when its
 * last user reference (fd or pin) goes and the agent exits while its links stay; the loader puts
 * the programs of the object it is about to attach there just before it swaps the links
 * (LoadedDatapath.installIpv6Programs in src/bpf/datapath.ts), not at load (no static
 * `.values` initialisation, which libbpf applies at load time even to a reused pin): until the
 * swap the old entry programs keep tail-calling the old IPv6 programs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, VIPR_TC_IPV6_PROGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vipr_tc_ipv6_progs_v1 SEC(".maps");

/*
 * What the IPv4 parse found not to be IPv4: IPv6 goes on in its program (the tail call does not
 * return); other ethertypes, and IPv6 whose program is missing, pass untouched and counted.
 */
static __always_inline int tc_not_ipv4(struct __sk_buff *skb, __u32 slot)
{
	void *data = (void *)(long)skb->data;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > (void *)(long)skb->data_end || eth->h_proto != bpf_htons(ETH_P_IPV6)) {
		stats_count(VIPR_STAT_PASS_NON_IPV4, skb->len);
		return TC_ACT_OK;
	}
	bpf_tail_call(skb, &vipr_tc_ipv6_progs_v1, slot);
	stats_count(VIPR_STAT_PASS_IPV6_NO_PROGRAM, skb->len);
	return TC_ACT_OK;
}

/* Whether XDP, on this interface, passed this packet with its work done (struct vipr_xdp_meta). */
static __always_inline bool tc_xdp_done(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct vipr_xdp_meta *meta = (void *)(long)skb->data_meta;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(meta + 1) > data || (void *)(eth + 1) > data_end)
		return false;
	if (meta->magic != VIPR_XDP_META_DONE || meta->ifindex != skb->ingress_ifindex)
		return false;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return (void *)(ip + 1) <= data_end && meta->ttl == ip->ttl;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return (void *)(ip6 + 1) <= data_end && meta->ttl == ip6->hop_limit;
	return false;
}

SEC("tc")
int vipr_tc_ingress(struct __sk_buff *skb)
{
	struct packet pkt;
	struct nat_plan plan;

	int dsr;

	if (tc_xdp_done(skb)) {
		stats_count(VIPR_STAT_TC_XDP_DONE, skb->len);
		return TC_ACT_OK;
	}
	switch (tc_lb4_parse(skb, &pkt)) {
	case LB_PACKET_FLOW:
		/* A DSR flow's packet from its balancing node: tracked, stripped, on to the pod. */
		dsr = tc_dsr_decap(skb, &pkt);
		if (dsr)
			return dsr > 0 ? TC_ACT_OK : TC_ACT_SHOT;
		return tc_apply(skb, &pkt, lb4_plan_ingress(&pkt, skb->len, &plan, false), &plan);
	case LB_PACKET_ICMP_ERROR:
		return tc_icmp_error(skb, &pkt, true);
	case LB_PACKET_DROP:
		return TC_ACT_SHOT;
	case LB_PACKET_NOT_IPV4:
		return tc_not_ipv4(skb, VIPR_IPV6_PROG_TC_INGRESS);
	default:
		return TC_ACT_OK;
	}
}

SEC("tc")
int vipr_tc_egress(struct __sk_buff *skb)
{
	struct packet pkt;
	struct nat_plan plan;

	enum lb_action action;

	switch (tc_lb4_parse(skb, &pkt)) {
	case LB_PACKET_FLOW:
		action = lb4_plan_egress(&pkt, skb->len, &plan);
		/* A DSR reply leaving the backend's node: room for the option on the client's segments. */
		if (plan.dsr && tc_dsr_clamp_mss(skb, &pkt)) {
			stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
			return TC_ACT_SHOT;
		}
		return tc_apply(skb, &pkt, action, &plan);
	case LB_PACKET_ICMP_ERROR:
		return tc_icmp_error(skb, &pkt, false);
	case LB_PACKET_DROP:
		return TC_ACT_SHOT;
	case LB_PACKET_NOT_IPV4:
		return tc_not_ipv4(skb, VIPR_IPV6_PROG_TC_EGRESS);
	default:
		return TC_ACT_OK;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
