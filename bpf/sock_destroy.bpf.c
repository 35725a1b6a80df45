// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Destroys connected UDP sockets whose backend is gone. A socket translated at connect() keeps
 * talking to its backend for as long as it lives: for TCP that is right (terminating endpoints
 * drain), but a connected UDP socket (a DNS resolver's) would send into the void forever. The
 * agent runs this iterator after every sync; each destroyed socket fails its next call with
 * ECONNABORTED and the application reconnects, to a live backend.
 *
 * A socket iterator walks the sockets of the network namespace of whoever reads it (the agent's).
 * Kernel >= 6.5 (bpf_sock_destroy); kept apart from the socket-LB object so that socket LB loads
 * on kernels without it. The few kernel types needed are declared here with CO-RE relocations
 * (struct in6_addr under a flavour name, not to clash with the UAPI one).
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps.h"
#include "lib/stats.h"

#define TCP_ESTABLISHED 1 /* a connected UDP socket's sk_state */
#define AF_INET_ 2
#define AF_INET6_ 10

struct in6_addr___vipr {
	union {
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr___vipr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;
struct bpf_iter_meta;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* Whether an IPv4 peer of a socket is a backend the hooks sent it to that is gone. */
static __always_inline bool sock4_backend_gone(__u64 cookie, __be32 addr, __be16 port)
{
	struct vipr_sock_rev_key key = { .cookie = cookie, .addr = addr, .port = port };
	struct vipr_sock_rev_value *rev = bpf_map_lookup_elem(&vipr_sock_rev_v1, &key);
	struct vipr_backend_id id;
	struct vipr_backend *be;

	if (!rev)
		return false; /* not translated by vipr */
	id.id = rev->backend_id;
	be = bpf_map_lookup_elem(&vipr_backends_v1, &id);
	return !be || be->addr != addr || be->port != port;
}

/* The same for an IPv6 peer (vipr_sock_rev6_v1, vipr_backends6_v1). */
static __always_inline bool sock6_backend_gone(__u64 cookie, const __be32 *addr, __be16 port)
{
	struct vipr_sock_rev6_key key = { .cookie = cookie, .port = port };
	struct vipr_sock_rev6_value *rev;
	struct vipr_backend_id id;
	struct vipr_backend6 *be;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	rev = bpf_map_lookup_elem(&vipr_sock_rev6_v1, &key);
	if (!rev)
		return false;
	id.id = rev->backend_id;
	be = bpf_map_lookup_elem(&vipr_backends6_v1, &id);
	return !be || be->port != port || be->addr[0] != addr[0] || be->addr[1] != addr[1] ||
	       be->addr[2] != addr[2] || be->addr[3] != addr[3];
}

/*
 * AF_INET sockets are IPv4 flows; so are AF_INET6 sockets connected to an IPv4-mapped address
 * (::ffff:a.b.c.d), which the hooks translated as IPv4 (vipr_sock_rev_v1).
 */
SEC("iter/udp")
int vipr_sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	__be16 port;
	__u64 cookie;
	bool gone;

	if (!sk)
		return 0;
	if (sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	port = sk->__sk_common.skc_dport;
	if (sk->__sk_common.skc_family == AF_INET_) {
		gone = sock4_backend_gone(cookie, sk->__sk_common.skc_daddr, port);
	} else if (sk->__sk_common.skc_family == AF_INET6_) {
		__be32 addr[4];

		addr[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
		addr[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
		addr[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
		addr[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
		if (addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0x0000ffff))
			gone = sock4_backend_gone(cookie, addr[3], port);
		else
			gone = sock6_backend_gone(cookie, addr, port);
	} else {
		return 0;
	}
	if (gone && bpf_sock_destroy((struct sock_common *)sk) == 0)
		stats_count(VIPR_STAT_SOCK_DESTROYED, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
