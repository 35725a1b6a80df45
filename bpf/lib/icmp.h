/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kube-proxy REJECTs traffic to a service without endpoints (icmp-port-unreachable) so clients
 * fail at once instead of timing out. vipr does the same in TC: the packet is turned into the
 * ICMP error in place and sent back out of the interface it came in on.
 *
 * Every reject answers a packet whose source anyone can forge, so rejects are rate-limited like
 * the kernel's own ICMP (which would limit REJECT's replies the same way): a token bucket per CPU
 * with the kernel's defaults, a packet over the limit is dropped without reply and counted.
 */
#ifndef __VIPR_ICMP_H
#define __VIPR_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "maps.h"
#include "stats.h"

/*
 * Rejects per second and burst per CPU: net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst's
 * defaults. The loader may set them before load.
 */
const volatile __u32 vipr_icmp_msgs_per_sec = 1000;
const volatile __u32 vipr_icmp_msgs_burst = 50;

#define ICMP_NSEC_PER_SEC 1000000000ULL
/* Refill at most every 20 ms, as the kernel's icmp_global_allow (HZ / 50). */
#define ICMP_REFILL_MIN_NS (20 * 1000 * 1000ULL)

/* ICMP_DEST_UNREACH's code (parse.h has the types). */
#define ICMP_PORT_UNREACH 3

struct icmp4_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused; /* zero for destination unreachable (no next-hop MTU) */
};

/* The quoted original: its IP header (no options) and the first 8 bytes of its L4 header. */
#define ICMP_QUOTE_LEN (sizeof(struct iphdr) + 8)

struct icmp_reject {
	struct ethhdr eth;
	struct iphdr ip;
	struct icmp4_hdr icmp;
	__u8 quote[ICMP_QUOTE_LEN];
} __attribute__((packed));

static __always_inline __u16 csum16(const void *buf, __u32 len, __u32 seed)
{
	__u32 sum = bpf_csum_diff(NULL, 0, (__be32 *)buf, len, seed);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * Takes a token from this CPU's bucket; false when it is empty. Plain reads and writes suffice:
 * the bucket is per-CPU and TC programs run in softirq or with bottom halves disabled, so two of
 * them never interleave on one CPU.
 */
static __always_inline bool icmp_reject_allowed(void)
{
	__u32 zero = 0;
	struct vipr_icmp_bucket *b = bpf_map_lookup_elem(&vipr_icmp_bucket_v1, &zero);
	__u64 now, elapsed, tokens;

	/* Cannot fail for an array's key 0; without a bucket, send nothing (fail closed). */
	if (!b)
		return false;
	now = bpf_ktime_get_ns();
	elapsed = now - b->refilled_ns;
	if (elapsed >= ICMP_REFILL_MIN_NS) {
		/* A second's worth fills any burst the settings allow, and keeps the product in 64 bits. */
		if (elapsed > ICMP_NSEC_PER_SEC)
			elapsed = ICMP_NSEC_PER_SEC;
		tokens = elapsed * vipr_icmp_msgs_per_sec / ICMP_NSEC_PER_SEC;
		/* Under one token so far: keep the stamp, so slow rates still accumulate. */
		if (tokens) {
			tokens += b->tokens;
			b->tokens = tokens < vipr_icmp_msgs_burst ? tokens : vipr_icmp_msgs_burst;
			b->refilled_ns = now;
		}
	}
	if (!b->tokens)
		return false;
	b->tokens--;
	return true;
}

/*
 * Rewrites @skb into "destination port unreachable" from the service address to the client and
 * redirects it back out of its ingress device. Returns a TC verdict; TC_ACT_SHOT when the
 * packet cannot be turned around (IP options, helper failure) or the rate limit says no.
 */
static __always_inline int tc_icmp_reject(struct __sk_buff *skb, const struct packet *pkt)
{
	struct icmp_reject r = {};
	void *data, *data_end;
	struct ethhdr *eth;

	/* The kernel answers only a datagram's first fragment, the one with the ports to quote. */
	if (pkt->l4_off != sizeof(struct ethhdr) + sizeof(struct iphdr) || pkt->frag == FRAG_LATER)
		return TC_ACT_SHOT;
	if (!icmp_reject_allowed()) {
		stats_count(VIPR_STAT_DROP_ICMP_RATE_LIMIT, skb->len);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_load_bytes(skb, pkt->l3_off, r.quote, ICMP_QUOTE_LEN))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(r.eth.h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, eth->h_dest, ETH_ALEN);
	r.eth.h_proto = bpf_htons(ETH_P_IP);

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(sizeof(r) - sizeof(struct ethhdr));
	r.ip.frag_off = bpf_htons(0x4000); /* DF */
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = pkt->daddr;
	r.ip.daddr = pkt->saddr;
	r.ip.check = csum16(&r.ip, sizeof(r.ip), 0);

	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	/* The ICMP checksum covers the ICMP header and the quote (36 bytes, a multiple of 4). */
	r.icmp.checksum = csum16(&r.icmp, sizeof(r.icmp) + ICMP_QUOTE_LEN, 0);

	if (bpf_skb_change_tail(skb, sizeof(r), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, &r, sizeof(r), BPF_F_INVALIDATE_HASH))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* __VIPR_ICMP_H */
