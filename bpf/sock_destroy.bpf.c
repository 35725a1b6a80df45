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
 * on kernels without it. The few kernel types needed are declared here with CO-RE relocations.
 */
#include <linux/bpf.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps.h"
#include "lib/stats.h"

#define TCP_ESTABLISHED 1 /* a connected UDP socket's sk_state */
#define AF_INET_ 2

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	volatile unsigned char skc_state;
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

SEC("iter/udp")
int vipr_sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct vipr_sock_rev_key key = {};
	struct vipr_sock_rev_value *rev;
	struct vipr_backend_id id;
	struct vipr_backend *be;

	if (!sk)
		return 0;
	if (sk->__sk_common.skc_family != AF_INET_ || sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);
	key.addr = sk->__sk_common.skc_daddr;
	key.port = sk->__sk_common.skc_dport;
	rev = bpf_map_lookup_elem(&vipr_sock_rev_v1, &key);
	if (!rev)
		return 0; /* not translated by vipr */
	id.id = rev->backend_id;
	be = bpf_map_lookup_elem(&vipr_backends_v1, &id);
	if (be && be->addr == key.addr && be->port == key.port)
		return 0;
	if (bpf_sock_destroy((struct sock_common *)sk) == 0)
		stats_count(VIPR_STAT_SOCK_DESTROYED, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
