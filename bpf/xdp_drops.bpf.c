// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What XDP_REDIRECT could not deliver, per target interface, from two tracepoints: xdp_devmap_xmit
 * fires after each bulk transmit of redirected frames with how many the target's ndo_xdp_xmit
 * refused (a veth refuses every frame when its peer does not poll: no GRO and no XDP program on
 * the pod's side; it counts them nowhere else, its tx_dropped and ethtool's xdp_xmit_errors stay
 * 0), and xdp_redirect_err fires for a frame the redirect itself failed on before any target saw
 * it (the receiving driver counts it as one of its own rx drops). The agent reads vipr_xdp_drops
 * for the veths of the pods XDP sends to (`--xdp-local-backends redirect`, src/bpf/xdp-pods.ts)
 * and takes such pods back to the stack.
 *
 * A tp_btf program: the tracepoint's arguments as the kernel has them, read through its BTF.
 * Loaded and attached by the agent itself (not pinned): it counts while the agent runs.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct bpf_prog;

struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

/* Target ifindex → frames refused since the agent started. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4096);
} vipr_xdp_drops SEC(".maps");

static __always_inline void count_drops(__u32 ifindex, __u64 frames)
{
	__u64 *n = bpf_map_lookup_elem(&vipr_xdp_drops, &ifindex);

	if (n) {
		__sync_fetch_and_add(n, frames);
		return;
	}
	/* A racing first count on another CPU: the loser adds to the winner's entry. */
	if (bpf_map_update_elem(&vipr_xdp_drops, &ifindex, &frames, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&vipr_xdp_drops, &ifindex);
		if (n)
			__sync_fetch_and_add(n, frames);
	}
}

SEC("tp_btf/xdp_devmap_xmit")
int BPF_PROG(vipr_xdp_devmap_xmit, const struct net_device *from_dev, const struct net_device *to_dev, int sent,
	     int drops, int err)
{
	if (drops > 0)
		count_drops(to_dev->ifindex, drops);
	return 0;
}

/* A plain bpf_redirect(ifindex) (no map) names its target in @index. */
SEC("tp_btf/xdp_redirect_err")
int BPF_PROG(vipr_xdp_redirect_err, const struct net_device *dev, const struct bpf_prog *xdp, const void *tgt, int err,
	     enum bpf_map_type map_type, __u32 map_id, __u32 index)
{
	if (map_type == BPF_MAP_TYPE_UNSPEC)
		count_drops(index, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
