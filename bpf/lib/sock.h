/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing for IPv4 (cgroup v2 sock_addr hooks). A connect() or sendmsg() to a
 * frontend is sent to a backend before the kernel routes anything, so every packet of the flow
 * goes straight to the backend: no per-packet NAT, and TC sees plain traffic between two
 * addresses it has no frontend for. recvmsg() and getpeername() translate back through
 * vipr_sock_rev_v1, so the application only ever sees the frontend.
 *
 * The same service, slot and backend maps as the TC/XDP programs, and the same scheduler code;
 * only the client identity differs (no source address exists at connect time): the socket's
 * network namespace stands for the client (sh, sessionAffinity) and the socket for the flow
 * (maglev).
 *
 * Node-originated traffic is internal traffic: the INTERNAL scope of an externalTrafficPolicy
 * Local frontend comes first, as kube-proxy sends local sources to the cluster endpoints.
 */
#ifndef __VIPR_SOCK_H
#define __VIPR_SOCK_H

#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h"

/* Set by the loader before load (src/bpf/socket-lb.ts). */
const volatile struct vipr_sock_config sock_config = {};

/* What a forward translation decided: >= 0 go on, < 0 fail the call with that errno. */
enum sock_xlate {
	SOCK_PASS = 0,  /* not a frontend (or not ours to translate): untouched */
	SOCK_XLATED = 1, /* the destination is now a backend */
};

static __always_inline bool sock4_is_loopback(__be32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

/* Whether this socket is one the hooks translate (--socket-lb-host-ns-only). */
static __always_inline bool sock_in_scope(struct bpf_sock_addr *ctx)
{
	return !sock_config.host_ns_only || bpf_get_netns_cookie(ctx) == sock_config.host_netns_cookie;
}

/*
 * The frontend of a connect()/sendmsg(): the destination itself (ClusterIP, external IP,
 * LoadBalancer IP), else a NodePort when the destination is an address of this node
 * (vipr_node_ips_v1) or, with kube-proxy's localhost NodePorts, 127.0.0.0/8.
 */
static __always_inline struct vipr_svc_value *sock4_lookup_service(__be32 daddr, __be16 dport, __u8 proto)
{
	struct vipr_svc_key key = { .vip = daddr, .port = dport, .proto = proto };
	struct vipr_node_ip node = { .addr = daddr };
	struct vipr_svc_value *svc = lb4_lookup_scoped(&key, true);

	if (svc)
		return svc;
	if (!(sock_config.nodeport_loopback && sock4_is_loopback(daddr)) &&
	    !bpf_map_lookup_elem(&vipr_node_ips_v1, &node))
		return NULL;
	key.vip = VIPR_NODEPORT_VIP;
	return lb4_lookup_scoped(&key, true);
}

/*
 * The backend of a new socket: the namespace's affinity backend while it is fresh, else the
 * scheduler's choice (which then becomes the namespace's affinity backend).
 */
static __always_inline struct vipr_backend *sock4_select_backend(struct bpf_sock_addr *ctx,
								 const struct vipr_svc_value *svc,
								 __u32 *backend_id)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	__u64 now = bpf_ktime_get_ns();
	struct vipr_sock_affinity_key akey = { .netns_cookie = netns, .svc_id = svc->svc_id };
	struct vipr_affinity_value aval = { .last_seen_ns = now };
	struct vipr_backend *be;
	struct sched_in in = {};

	if (svc->flags & VIPR_SVC_F_AFFINITY) {
		struct vipr_affinity_value *a = bpf_map_lookup_elem(&vipr_sock_affinity_v1, &akey);

		if (a && now - a->last_seen_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			struct vipr_backend_id id = { .id = a->backend_id };

			be = bpf_map_lookup_elem(&vipr_backends_v1, &id);
			if (be) {
				a->last_seen_ns = now;
				*backend_id = id.id;
				stats_count(VIPR_STAT_AFFINITY_HIT, 0);
				return be;
			}
		}
	}
	if (svc->scheduler == VIPR_SCHED_SH)
		in.client_hash = mix32((__u32)netns ^ (__u32)(netns >> 32));
	else if (svc->scheduler == VIPR_SCHED_MAGLEV)
		in.flow_hash = mix32((__u32)bpf_get_socket_cookie(ctx) ^ mix32(svc->svc_id));
	be = lb4_backend_in_slot(svc->svc_id, sched_pick_slot(svc, &in), backend_id);
	if (be && (svc->flags & VIPR_SVC_F_AFFINITY)) {
		aval.backend_id = *backend_id;
		bpf_map_update_elem(&vipr_sock_affinity_v1, &akey, &aval, BPF_ANY);
	}
	return be;
}

/*
 * connect4 / sendmsg4: sends a socket addressed to a frontend to one of its backends and records
 * the frontend for the reverse translation. Returns enum sock_xlate or -errno.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct vipr_sock_rev_key rkey = {};
	struct vipr_sock_rev_value rval = {};
	struct vipr_svc_value *svc;
	struct vipr_backend *be;
	__be32 daddr = ctx->user_ip4;
	__be16 dport = (__be16)ctx->user_port;
	__u32 backend_id = 0;
	__u8 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_PASS;
	if (!sock_in_scope(ctx))
		return SOCK_PASS;
	svc = sock4_lookup_service(daddr, dport, proto);
	if (!svc)
		return SOCK_PASS;
	/* loadBalancerSourceRanges judge a source address, which a socket does not have before it
	 * connects: leave such frontends to the route they take (the load balancer, then TC). */
	if (svc->flags & VIPR_SVC_F_SOURCE_RANGES)
		return SOCK_PASS;
	if (svc->backend_count == 0) {
		/* kube-proxy's REJECT, at once: the application gets ECONNREFUSED from connect(). */
		stats_count(VIPR_STAT_SOCK_REJECT, 0);
		return -ECONNREFUSED;
	}
	be = sock4_select_backend(ctx, svc, &backend_id);
	if (!be) {
		/* A slot or backend missing: an update is in flight. Fail the call rather than let a
		 * virtual address be routed nowhere. */
		stats_count(VIPR_STAT_DROP_NO_SLOT, 0);
		return -EHOSTUNREACH;
	}
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be->addr;
	rkey.port = be->port;
	rval.addr = daddr;
	rval.port = dport;
	rval.backend_id = backend_id;
	/* Without its reverse entry a UDP client would see answers from an address it never asked
	 * (and drop them): fail closed. */
	if (bpf_map_update_elem(&vipr_sock_rev_v1, &rkey, &rval, BPF_ANY)) {
		stats_count(VIPR_STAT_DROP_CT_FULL, 0);
		return -ENOBUFS;
	}
	ctx->user_ip4 = be->addr;
	ctx->user_port = be->port;
	stats_count(VIPR_STAT_SOCK_XLATE, 0);
	return SOCK_XLATED;
}

/* recvmsg4 / getpeername4: a backend address this socket was sent to becomes its frontend again. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct vipr_sock_rev_key rkey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct vipr_sock_rev_value *rval = bpf_map_lookup_elem(&vipr_sock_rev_v1, &rkey);

	if (!rval)
		return;
	ctx->user_ip4 = rval->addr;
	ctx->user_port = rval->port;
	stats_count(VIPR_STAT_SOCK_REV_NAT, 0);
}

/* The hook's return value: 1 lets the call go on; 0 fails it with the errno set here. */
static __always_inline int sock_verdict(int xlate)
{
	if (xlate >= 0)
		return 1;
	bpf_set_retval(xlate);
	return 0;
}

#endif /* __VIPR_SOCK_H */
