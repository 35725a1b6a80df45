// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench/xdp-flood.c's packet source, run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES:
 * the kernel hands it a page-pool frame holding the template (flow 0) and transmits what it
 * returns XDP_TX for out of the interface named by the run's ingress_ifindex, as a driver would,
 * no skb ever built. Each run writes the next flow's source address and port and both checksums.
 *
 * Pages are recycled between runs without being rewritten from the template, and the receiver
 * may have rewritten them meanwhile (a balancer's DNAT, SNAT and MAC swap happen in place on
 * this very page): each run writes the whole template back, then the flow's source, and derives
 * the checksums from the template's (RFC 1624, from config), never from what the frame holds.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_flood.h"

const volatile struct xdp_flood_config cfg;

/* The next flow number; runs of one call never overlap (one CPU). */
__u32 next_flow;

static __always_inline __u32 csum_add16(__u32 sum, __u16 old, __u16 new)
{
	return sum + (__u16)~old + new;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u8 *l4 = (__u8 *)(ip + 1);
	__u32 flow = next_flow;

	__u64 *words = data;

	if (data + XDP_FLOOD_FRAME_LEN > data_end)
		return XDP_ABORTED;
	/* 60 bytes: seven words and a half. */
	for (int i = 0; i < 7; i++)
		words[i] = cfg.frame[i];
	*(__u32 *)&words[7] = (__u32)cfg.frame[7];
	next_flow = flow + 1 >= cfg.flows ? 0 : flow + 1;

	__u32 saddr0 = cfg.saddr0;
	__u32 saddr = saddr0 + flow / cfg.src_ports % cfg.src_ips;
	__u16 sport0 = cfg.first_port;
	__u16 sport = sport0 + (__u16)(flow % cfg.src_ports);
	__u32 ip_sum = csum_add16(csum_add16((__u16)~cfg.ip_check0, saddr0 >> 16, saddr >> 16), saddr0 & 0xffff, saddr & 0xffff);
	__u32 l4_sum = csum_add16(csum_add16((__u16)~cfg.l4_check0, saddr0 >> 16, saddr >> 16), saddr0 & 0xffff, saddr & 0xffff);
	__u16 l4_check;

	l4_sum = csum_add16(l4_sum, sport0, sport);
	l4_check = csum_fold(l4_sum);
	ip->saddr = bpf_htonl(saddr);
	ip->check = bpf_htons(csum_fold(ip_sum));
	*(__be16 *)l4 = bpf_htons(sport);
	if (cfg.tcp) {
		*(__be16 *)(l4 + 16) = bpf_htons(l4_check);
	} else {
		/* 0 means "no checksum" in UDP: its ones' complement twin stands for it. */
		*(__be16 *)(l4 + 6) = bpf_htons(l4_check ? l4_check : 0xffff);
	}
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
