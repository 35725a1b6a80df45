// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The north-south bench's sink, attached (native) where the balancing node's output lands: the
 * backends' eth0 and the underlay port facing the node. A frame rewritten for a backend (IPv4
 * TCP or UDP to a pod address, 10.244.0.0/16, on a backend port, 9000 or 9053: CLUSTER_CIDR,
 * BACKEND_TCP_PORT and BACKEND_UDP_PORT in src/) is dropped as it arrives, before any skb,
 * socket, reply or ICMP error; anything else (ARP, untranslated traffic) passes. The same in
 * every mode and nearly free; veth counts what its XDP program dropped (ethtool -S
 * rx_queue_<n>_xdp_drops): the frames delivered.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define POD_NET 0x0af40000u  /* 10.244.0.0 */
#define POD_MASK 0xffff0000u /* /16 */
#define BACKEND_TCP_PORT 9000
#define BACKEND_UDP_PORT 9053

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	__be16 *ports = (__be16 *)(ip + 1);

	/* Options would move the ports; the node writes none. */
	if ((void *)(ports + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return XDP_PASS;
	if ((bpf_ntohl(ip->daddr) & POD_MASK) != POD_NET)
		return XDP_PASS;
	if (ip->protocol == IPPROTO_TCP && ports[1] == bpf_htons(BACKEND_TCP_PORT))
		return XDP_DROP;
	if (ip->protocol == IPPROTO_UDP && ports[1] == bpf_htons(BACKEND_UDP_PORT))
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
