// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The bench's harness for timing the XDP program's IPv4 paths warm, as at line rate:
 * BPF_PROG_TEST_RUN with a large `repeat` runs a program over one frame again and again, and a
 * rewriting path would rewrite its own output (after one run a NodePort packet is a packet from
 * the node to a pod). So each run here first writes the frame's first bytes back from a map, then
 * runs the very code the attached entry point runs (lib/xdp.h, inlined). For new-flow paths each
 * run also gets a client port and address of its own, so every run is a new flow.
 *
 * Two programs, loaded over the agent's pinned maps: xdp_paths_restore does only the harness's
 * part; xdp_paths_lb does it and the XDP program's. A path's cost is the difference of their
 * means over the same number of runs (src/bench/xdp-paths-worker.ts).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/xdp.h"

/* The shortest Ethernet frame without its FCS: frames the bench times are padded to it, as on the wire. */
#define HARNESS_FRAME_BYTES 60
#define HARNESS_PORTS_PER_ADDR 50000

struct harness_frame {
	__u8 bytes[HARNESS_FRAME_BYTES] __attribute__((aligned(8)));
	/* 0: the same frame every run (a tracked flow); 1: a new client port (and past
	 * HARNESS_PORTS_PER_ADDR ports, the next address) every run, from the frame's own. */
	__u32 new_flow_per_run;
	/* Runs so far, kept here so that a flow is never reused across calls. */
	__u32 runs;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct harness_frame);
} xdp_paths_frame SEC(".maps");

/* Writes the frame back; 0, or -1 when the frame is shorter than the bench's. */
static __always_inline int harness_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct harness_frame *f;
	__u32 zero = 0, n;
	__be16 *sport;

	if (data + HARNESS_FRAME_BYTES > data_end)
		return -1;
	f = bpf_map_lookup_elem(&xdp_paths_frame, &zero);
	if (!f)
		return -1;
	/* In words (x86 loads and stores them unaligned): memcpy would go byte by byte, as it
	 * cannot know the packet's alignment. */
#pragma unroll
	for (int i = 0; i < HARNESS_FRAME_BYTES / 8; i++)
		((__u64 *)data)[i] = ((const __u64 *)f->bytes)[i];
	*(__u32 *)(data + HARNESS_FRAME_BYTES - 4) = *(const __u32 *)(f->bytes + HARNESS_FRAME_BYTES - 4);
	if (!f->new_flow_per_run)
		return 0;
	n = f->runs++;
	/* The L4 source port sits right after a 20-byte IPv4 header, in TCP and UDP alike;
	 * checksums are left as they are (the program updates them, never checks them). */
	sport = (void *)(ip + 1);
	*sport = bpf_htons(bpf_ntohs(*sport) + (__u16)(n % HARNESS_PORTS_PER_ADDR));
	ip->saddr = bpf_htonl(bpf_ntohl(ip->saddr) + n / HARNESS_PORTS_PER_ADDR);
	return 0;
}

SEC("xdp")
int xdp_paths_restore(struct xdp_md *ctx)
{
	return harness_restore(ctx) ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int xdp_paths_lb(struct xdp_md *ctx)
{
	if (harness_restore(ctx))
		return XDP_ABORTED;
	return xdp_lb4(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
