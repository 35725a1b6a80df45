// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The north-south bench's sink, attached (native) to every backend's eth0: IPv4 TCP and UDP are
 * dropped as they arrive, before any skb, socket, reply or ICMP error; ARP and the rest pass.
 * The same in every mode, and nearly free; the interface's rx counter (veth counts what its
 * NAPI poll took in, dropped or not) tells how many arrived.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	return ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
