/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing (cgroup v2 sock_addr hooks), IPv4 and IPv6. A connect() or sendmsg() to a
 * frontend is sent to a backend before the kernel routes anything, so every packet of the flow
 * goes straight to the backend: no per-packet NAT, and TC sees plain traffic between two
 * addresses it has no frontend for. recvmsg() and getpeername() translate back through
 * vipr_sock_rev_v1 (vipr_sock_rev6_v1), so the application only ever sees the frontend.
 *
 * The same service, slot and backend maps as the TC/XDP programs, and the same scheduler code;
 * only the client identity differs (no source address exists at connect time): the socket's
 * network namespace stands for the client (sh, sessionAffinity) and the socket for the flow
 * (maglev). What does not depend on the address family (scope, reject, affinity, scheduler) is
 * written once (sock_choose) and used by both; the families differ only in their maps and in
 * how an address is read and written. An IPv4-mapped IPv6 destination is an IPv4 flow.
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
#include "lb6.h"

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
 * The backend of a new socket, from `backends` (vipr_backends_v1 or vipr_backends6_v1: slots and
 * backend ids are shared by both families): the namespace's affinity backend while it is fresh,
 * else the scheduler's choice (which then becomes the namespace's affinity backend).
 */
static __always_inline void *sock_select_backend(struct bpf_sock_addr *ctx, const struct vipr_svc_value *svc,
						 void *backends, __u32 *backend_id)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	__u64 now = bpf_ktime_get_ns();
	struct vipr_sock_affinity_key akey = { .netns_cookie = netns, .svc_id = svc->svc_id };
	struct vipr_affinity_value aval = { .last_seen_ns = now };
	struct vipr_slot_key skey = { .svc_id = svc->svc_id };
	struct vipr_backend_id *id;
	struct sched_in in = {};
	void *be;

	if (svc->flags & VIPR_SVC_F_AFFINITY) {
		struct vipr_affinity_value *a = bpf_map_lookup_elem(&vipr_sock_affinity_v1, &akey);

		if (a && now - a->last_seen_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			struct vipr_backend_id aid = { .id = a->backend_id };

			be = bpf_map_lookup_elem(backends, &aid);
			if (be) {
				a->last_seen_ns = now;
				*backend_id = aid.id;
				stats_count(VIPR_STAT_AFFINITY_HIT, 0);
				return be;
			}
		}
	}
	if (svc->scheduler == VIPR_SCHED_SH)
		in.client_hash = mix32((__u32)netns ^ (__u32)(netns >> 32));
	else if (svc->scheduler == VIPR_SCHED_MAGLEV)
		in.flow_hash = mix32((__u32)bpf_get_socket_cookie(ctx) ^ mix32(svc->svc_id));
	skey.slot = sched_pick_slot(svc, &in);
	id = bpf_map_lookup_elem(&vipr_slots_v1, &skey);
	if (!id)
		return NULL;
	*backend_id = id->id;
	be = bpf_map_lookup_elem(backends, id);
	if (be && (svc->flags & VIPR_SVC_F_AFFINITY)) {
		aval.backend_id = *backend_id;
		bpf_map_update_elem(&vipr_sock_affinity_v1, &akey, &aval, BPF_ANY);
	}
	return be;
}

/*
 * What every family does between finding the frontend of a call and rewriting it: leave alone
 * what is no frontend or not one to translate here, refuse a frontend without endpoints, else
 * choose its backend from `backends`. Returns the backend, or NULL with *verdict (enum sock_xlate
 * or -errno).
 */
static __always_inline void *sock_choose(struct bpf_sock_addr *ctx, const struct vipr_svc_value *svc,
					 void *backends, __u32 *backend_id, int *verdict)
{
	void *be;

	*verdict = SOCK_PASS;
	if (!svc)
		return NULL;
	/* loadBalancerSourceRanges judge a source address, which a socket does not have before it
	 * connects: leave such frontends to the route they take (the load balancer, then TC). */
	if (svc->flags & VIPR_SVC_F_SOURCE_RANGES)
		return NULL;
	if (svc->backend_count == 0) {
		/* kube-proxy's REJECT, at once: the application gets ECONNREFUSED from connect(). */
		stats_count(VIPR_STAT_SOCK_REJECT, 0);
		*verdict = -ECONNREFUSED;
		return NULL;
	}
	be = sock_select_backend(ctx, svc, backends, backend_id);
	if (!be) {
		/* A slot or backend missing: an update is in flight. Fail the call rather than let a
		 * virtual address be routed nowhere. */
		stats_count(VIPR_STAT_DROP_NO_SLOT, 0);
		*verdict = -EHOSTUNREACH;
	}
	return be;
}

/* Whether the hooks look at this call at all: TCP or UDP, from a socket in scope. */
static __always_inline bool sock_wanted(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;

	return (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && sock_in_scope(ctx);
}

/*
 * An IPv4 destination (connect4/sendmsg4, or connect6 to an IPv4-mapped address) sent to a
 * backend: *daddr and *dport are the destination in, the backend out. The frontend is recorded
 * in vipr_sock_rev_v1 for the reverse translation. Returns enum sock_xlate or -errno.
 */
static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx, __be32 *daddr, __be16 *dport)
{
	struct vipr_sock_rev_key rkey = {};
	struct vipr_sock_rev_value rval = {};
	struct vipr_backend *be;
	__u32 backend_id = 0;
	int verdict;

	if (!sock_wanted(ctx))
		return SOCK_PASS;
	be = sock_choose(ctx, sock4_lookup_service(*daddr, *dport, ctx->protocol), &vipr_backends_v1,
			 &backend_id, &verdict);
	if (!be)
		return verdict;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be->addr;
	rkey.port = be->port;
	rval.addr = *daddr;
	rval.port = *dport;
	rval.backend_id = backend_id;
	/* Without its reverse entry a UDP client would see answers from an address it never asked
	 * (and drop them): fail closed. */
	if (bpf_map_update_elem(&vipr_sock_rev_v1, &rkey, &rval, BPF_ANY)) {
		stats_count(VIPR_STAT_DROP_CT_FULL, 0);
		return -ENOBUFS;
	}
	*daddr = be->addr;
	*dport = be->port;
	stats_count(VIPR_STAT_SOCK_XLATE, 0);
	return SOCK_XLATED;
}

/* connect4 / sendmsg4. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	__be32 daddr = ctx->user_ip4;
	__be16 dport = (__be16)ctx->user_port;
	int verdict = sock4_xlate(ctx, &daddr, &dport);

	if (verdict == SOCK_XLATED) {
		ctx->user_ip4 = daddr;
		ctx->user_port = dport;
	}
	return verdict;
}

/* The frontend an IPv4 peer of this socket stands for, or NULL when the hooks did not send it there. */
static __always_inline struct vipr_sock_rev_value *sock4_rev_lookup(struct bpf_sock_addr *ctx, __be32 addr,
								    __be16 port)
{
	struct vipr_sock_rev_key rkey = { .cookie = bpf_get_socket_cookie(ctx), .addr = addr, .port = port };

	return bpf_map_lookup_elem(&vipr_sock_rev_v1, &rkey);
}

/* recvmsg4 / getpeername4: a backend address this socket was sent to becomes its frontend again. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct vipr_sock_rev_value *rval = sock4_rev_lookup(ctx, ctx->user_ip4, (__be16)ctx->user_port);

	if (!rval)
		return;
	ctx->user_ip4 = rval->addr;
	ctx->user_port = rval->port;
	stats_count(VIPR_STAT_SOCK_REV_NAT, 0);
}

/*
 * IPv6. An AF_INET6 socket may name an IPv4 peer as ::ffff:a.b.c.d (IPv4-mapped, RFC 4291
 * 2.5.5.2): the flow is IPv4 on the wire, so it is looked up, chosen and recorded as IPv4 (the
 * IPv4 maps, vipr_sock_rev_v1) and only written back in mapped form. Its unconnected sendmsg()
 * never reaches sendmsg6: the kernel hands it to the IPv4 path (sendmsg4) as a sockaddr_in; its
 * recvmsg() and getpeername() come here, mapped.
 */
static __always_inline bool sock6_is_v4_mapped(const __be32 *addr)
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void sock6_read_addr(struct bpf_sock_addr *ctx, __be32 *addr)
{
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
}

static __always_inline void sock6_write_addr(struct bpf_sock_addr *ctx, const __be32 *addr)
{
	ctx->user_ip6[0] = addr[0];
	ctx->user_ip6[1] = addr[1];
	ctx->user_ip6[2] = addr[2];
	ctx->user_ip6[3] = addr[3];
}

/*
 * The frontend of an IPv6 connect()/sendmsg(), as sock4_lookup_service: the destination itself,
 * else a NodePort (vip ::) when the destination is an address of this node (vipr_node_ips6_v1).
 * ::1 is no NodePort address: kube-proxy's localhost NodePorts are IPv4 only.
 */
static __always_inline struct vipr_svc_value *sock6_lookup_service(const __be32 *daddr, __be16 dport, __u8 proto)
{
	struct vipr_svc6_key key = {
		.vip = { daddr[0], daddr[1], daddr[2], daddr[3] },
		.port = dport,
		.proto = proto,
	};
	struct vipr_node_ip6 node = { .addr = { daddr[0], daddr[1], daddr[2], daddr[3] } };
	struct vipr_svc_value *svc = lb6_lookup_scoped(&key, true);

	if (svc)
		return svc;
	if (!bpf_map_lookup_elem(&vipr_node_ips6_v1, &node))
		return NULL;
	__builtin_memset(key.vip, 0, sizeof(key.vip));
	return lb6_lookup_scoped(&key, true);
}

/* An IPv6 destination sent to a backend, recorded in vipr_sock_rev6_v1; as sock4_xlate. */
static __always_inline int sock6_xlate(struct bpf_sock_addr *ctx, __be32 *daddr, __be16 *dport)
{
	struct vipr_sock_rev6_key rkey = {};
	struct vipr_sock_rev6_value rval = {};
	struct vipr_backend6 *be;
	__u32 backend_id = 0;
	int verdict;

	if (!sock_wanted(ctx))
		return SOCK_PASS;
	be = sock_choose(ctx, sock6_lookup_service(daddr, *dport, ctx->protocol), &vipr_backends6_v1,
			 &backend_id, &verdict);
	if (!be)
		return verdict;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rkey.addr, be->addr, sizeof(rkey.addr));
	rkey.port = be->port;
	__builtin_memcpy(rval.addr, daddr, sizeof(rval.addr));
	rval.port = *dport;
	rval.backend_id = backend_id;
	if (bpf_map_update_elem(&vipr_sock_rev6_v1, &rkey, &rval, BPF_ANY)) {
		stats_count(VIPR_STAT_DROP_CT_FULL, 0);
		return -ENOBUFS;
	}
	__builtin_memcpy(daddr, be->addr, sizeof(rkey.addr));
	*dport = be->port;
	stats_count(VIPR_STAT_SOCK_XLATE, 0);
	return SOCK_XLATED;
}

/* connect6 / sendmsg6: IPv6 destinations, and IPv4-mapped ones as IPv4 flows. */
static __always_inline int sock6_xlate_fwd(struct bpf_sock_addr *ctx)
{
	__be16 dport = (__be16)ctx->user_port;
	__be32 daddr[4];
	int verdict;

	sock6_read_addr(ctx, daddr);
	if (sock6_is_v4_mapped(daddr))
		verdict = sock4_xlate(ctx, &daddr[3], &dport);
	else
		verdict = sock6_xlate(ctx, daddr, &dport);
	if (verdict == SOCK_XLATED) {
		sock6_write_addr(ctx, daddr);
		ctx->user_port = dport;
	}
	return verdict;
}

/* recvmsg6 / getpeername6: as sock4_xlate_rev; an IPv4-mapped peer through vipr_sock_rev_v1. */
static __always_inline void sock6_xlate_rev(struct bpf_sock_addr *ctx)
{
	__be16 port = (__be16)ctx->user_port;
	__be32 addr[4];

	sock6_read_addr(ctx, addr);
	if (sock6_is_v4_mapped(addr)) {
		struct vipr_sock_rev_value *rval = sock4_rev_lookup(ctx, addr[3], port);

		if (!rval)
			return;
		ctx->user_ip6[3] = rval->addr;
		ctx->user_port = rval->port;
	} else {
		struct vipr_sock_rev6_key rkey = { .cookie = bpf_get_socket_cookie(ctx), .port = port };
		struct vipr_sock_rev6_value *rval;

		__builtin_memcpy(rkey.addr, addr, sizeof(rkey.addr));
		rval = bpf_map_lookup_elem(&vipr_sock_rev6_v1, &rkey);
		if (!rval)
			return;
		sock6_write_addr(ctx, rval->addr);
		ctx->user_port = rval->port;
	}
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
