// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level load balancing: cgroup v2 sock_addr programs, attached with pinned BPF links to the
 * cgroup holding the node's processes (--cgroup-root). Every process in it (and its descendants)
 * has its connect() and UDP sendmsg() to a frontend sent to a backend, and its recvmsg() and
 * getpeername() answered with the frontend. Traffic from outside the node never meets these hooks:
 * the TC and XDP programs keep serving it.
 *
 * Verdicts: connect4/6 and sendmsg4/6 return 1 (go on) or 0 with an errno set (a Service without
 * endpoints: ECONNREFUSED); recvmsg4/6 and getpeername4/6 must return 1.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/sock.h"

SEC("cgroup/connect4")
int vipr_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_verdict(sock4_xlate_fwd(ctx));
}

SEC("cgroup/sendmsg4")
int vipr_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_verdict(sock4_xlate_fwd(ctx));
}

SEC("cgroup/recvmsg4")
int vipr_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int vipr_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return 1;
}

SEC("cgroup/connect6")
int vipr_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_verdict(sock6_xlate_fwd(ctx));
}

SEC("cgroup/sendmsg6")
int vipr_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_verdict(sock6_xlate_fwd(ctx));
}

SEC("cgroup/recvmsg6")
int vipr_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	sock6_xlate_rev(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int vipr_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	sock6_xlate_rev(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
