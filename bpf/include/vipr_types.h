/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every layout vipr's BPF maps share with user space, and nothing else.
 *
 * This header is the single source of truth: the TypeScript codecs in src/bpf/codecs.ts are
 * checked against the BTF of the compiled object (test/bpf/btf-layout.test.ts), so a change here
 * that is not mirrored there fails the build's tests. Fields carry their byte order in their type
 * (__be32/__be16 are network order, everything else host order). Padding is explicit so the
 * kernel never compares uninitialised bytes in hash keys.
 *
 * A changed layout gets a new map name suffix (_v2, ...): pinned maps of the old layout are then
 * never misread, and the loader migrates or drops them.
 */
#ifndef __VIPR_TYPES_H
#define __VIPR_TYPES_H

#include <linux/types.h>

/*
 * Map sizes. The loader may lower or raise them before load (bpf_map__set_max_entries). The
 * service, slot and backend maps are BPF_F_NO_PREALLOC hashes: an entry costs kernel memory only
 * while it exists, so the limits sit above the largest cluster vipr is benchmarked at (100,000
 * Services of one port, 3 endpoints each: 100,000 frontends and 300,000 slots). A map pinned by
 * an older agent keeps its size (the loader adopts it) until 'vipr cleanup' replaces it.
 */
#define VIPR_MAX_SERVICES 262144
#define VIPR_MAX_BACKENDS 65536
#define VIPR_MAX_SLOTS 1048576
/* Conntrack sizes compiled in; the agent sizes them to the node (--ct-max-tcp, --ct-max-udp). */
#define VIPR_MAX_CT_TCP 524288
#define VIPR_MAX_CT_TCP_SYN 131072
#define VIPR_MAX_CT_UDP 262144
#define VIPR_MAX_AFFINITY 65536
#define VIPR_MAX_NODE_IPS 64
#define VIPR_MAX_SOURCE_RANGES 16384
#define VIPR_MAX_SOCK_REV 262144
#define VIPR_MAX_FRAGMENTS 8192

/*
 * Frontend scope. An external frontend (NodePort, LoadBalancer IP, external IP) whose Service
 * has externalTrafficPolicy Local gets two entries: EXTERNAL with the node's local endpoints,
 * INTERNAL with the cluster endpoints, which traffic from inside the cluster uses (kube-proxy
 * short-circuits pods talking to a LoadBalancer IP the same way). Every other frontend has only
 * the EXTERNAL entry.
 */
enum vipr_scope {
	VIPR_SCOPE_EXTERNAL = 0,
	VIPR_SCOPE_INTERNAL = 1,
};

/* A NodePort frontend's vip: any address of this node listed in vipr_node_ips. */
#define VIPR_NODEPORT_VIP 0

/* Key of vipr_services_v1: one frontend. */
struct vipr_svc_key {
	__be32 vip;   /* service address */
	__be16 port;  /* service port */
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope;   /* enum vipr_scope */
};
_Static_assert(sizeof(struct vipr_svc_key) == 8, "vipr_svc_key layout");

/* Service flags (vipr_svc_value.flags). */
enum vipr_svc_flags {
	VIPR_SVC_F_AFFINITY = 1 << 0,      /* sessionAffinity ClientIP */
	VIPR_SVC_F_LOCAL = 1 << 1,         /* traffic policy Local: local backends only, no SNAT */
	VIPR_SVC_F_EXTERNAL = 1 << 2,      /* NodePort/LB/external IP: SNAT to the node for remote backends */
	VIPR_SVC_F_SOURCE_RANGES = 1 << 3, /* only sources in vipr_source_ranges for this svc_id */
	VIPR_SVC_F_REJECT = 1 << 4,        /* no endpoints: answer ICMP port unreachable, as kube-proxy's REJECT */
	VIPR_SVC_F_DSR = 1 << 5,           /* with EXTERNAL: remote backends answer the client directly (DSR), no SNAT */
};

/* Backend selection algorithms (vipr_svc_value.scheduler). */
enum vipr_scheduler {
	VIPR_SCHED_RANDOM = 0, /* kube-proxy's behaviour: uniform over the slots */
	VIPR_SCHED_RR = 1,
	VIPR_SCHED_SH = 2,
	VIPR_SCHED_MAGLEV = 3,
	VIPR_SCHED_LC = 4,
};

/* Value of vipr_services_v1. */
struct vipr_svc_value {
	__u32 svc_id;           /* index into slots, affinity, source ranges; stable for the frontend's life */
	__u16 backend_count;    /* valid slots are 0 .. backend_count-1 (Maglev: the table size); 0 = no endpoints */
	__u16 flags;            /* enum vipr_svc_flags */
	__u32 affinity_timeout; /* seconds, with VIPR_SVC_F_AFFINITY */
	__u8 scheduler;         /* enum vipr_scheduler */
	__u8 pad[3];
};
_Static_assert(sizeof(struct vipr_svc_value) == 16, "vipr_svc_value layout");

/* Key of vipr_slots_v1: the slot-th backend of a service. */
struct vipr_slot_key {
	__u32 svc_id; /* vipr_svc_value.svc_id */
	__u32 slot;   /* 0 .. backend_count-1 */
};
_Static_assert(sizeof(struct vipr_slot_key) == 8, "vipr_slot_key layout");

/* Value of vipr_slots_v1 and key of vipr_backends_v1: a backend id. */
struct vipr_backend_id {
	__u32 id; /* allocated by the agent, stable while any service references the backend */
};
_Static_assert(sizeof(struct vipr_backend_id) == 4, "vipr_backend_id layout");

/* Backend flags (vipr_backend.flags). */
enum vipr_backend_flags {
	VIPR_BE_F_TERMINATING = 1 << 0, /* serving but terminating: no new connections */
	VIPR_BE_F_LOCAL = 1 << 1,       /* on this node */
};

/* Value of vipr_backends_v1. */
struct vipr_backend {
	__be32 addr; /* endpoint address */
	__be16 port; /* endpoint port */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 flags;  /* enum vipr_backend_flags */
};
_Static_assert(sizeof(struct vipr_backend) == 8, "vipr_backend layout");

/* Direction of a conntrack entry. */
enum vipr_ct_dir {
	VIPR_CT_FORWARD = 0, /* client -> service: key is the packet as the client sent it */
	VIPR_CT_REPLY = 1,   /* backend -> client: key is the reply as the backend sends it */
};

/*
 * Key of the conntrack maps: a 5-tuple and a direction. Three maps share this layout, so that no
 * flood of new flows can push out an established one:
 *   vipr_ct_tcp_v1      (hash, no LRU) established TCP flows: the client acknowledged the
 *                       backend's answer. Entries leave only by GC (idle or closed), never by
 *                       eviction; when it is full, new flows stay half-open (still served).
 *   vipr_ct_tcp_syn_v1  (LRU) TCP flows not yet established: a SYN flood evicts only these.
 *   vipr_ct_udp_v1      (LRU) UDP flows: sized apart, so UDP floods never touch TCP.
 */
struct vipr_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;   /* enum vipr_ct_dir */
	__u8 pad[2];
};
_Static_assert(sizeof(struct vipr_ct_key) == 16, "vipr_ct_key layout");

/* Conntrack state flags (vipr_ct_value.flags). */
enum vipr_ct_flags {
	VIPR_CT_F_SEEN_REPLY = 1 << 0, /* a reply was reverse-NATed: the flow is established */
	VIPR_CT_F_CLOSING = 1 << 1,    /* FIN or RST seen: a new SYN may pick a new backend */
	VIPR_CT_F_SNAT = 1 << 2,       /* the source was rewritten to the node (remote backend, hairpin) */
	VIPR_CT_F_REDIRECT = 1 << 3,   /* rewritten packets are forwarded by fib lookup + redirect */
	VIPR_CT_F_DSR = 1 << 4,        /* direct server return (bpf/lib/dsr.h). On the balancing node (with
					* REDIRECT): forward packets carry the frontend to the backend's node in
					* an IPv4 option. On the backend's node: the flow came so; its replies
					* leave from there with the frontend as their source */
};

/*
 * Value of the conntrack maps. The two entries of a flow mirror each other:
 *   forward: nat = the backend (new destination), snat = the new source (0: unchanged)
 *   reply:   nat = the frontend the client used (new source), snat = the client (new
 *            destination; 0: unchanged). A NodePort frontend's address is the node IP the client
 *            chose, so it is kept per flow rather than per service.
 */
struct vipr_ct_value {
	__u64 created_ns;   /* bpf_ktime_get_ns() at creation */
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
	__be32 nat_addr;
	__be16 nat_port;
	__u8 flags;         /* enum vipr_ct_flags */
	__u8 tcp_flags;     /* union of TCP flags seen in this direction */
	__be32 snat_addr;
	__be16 snat_port;
	__u8 pad[2];
	__u32 svc_id;       /* the service the flow was balanced by */
	__u32 backend_id;   /* the chosen backend, for connection counts */
};
_Static_assert(sizeof(struct vipr_ct_value) == 40, "vipr_ct_value layout");

/* Key of vipr_node_ips_v1: an address of this node that serves NodePorts. */
struct vipr_node_ip {
	__be32 addr;
};
_Static_assert(sizeof(struct vipr_node_ip) == 4, "vipr_node_ip layout");

/* Key of vipr_source_ranges_v1 (LPM trie): a loadBalancerSourceRanges CIDR of one service. */
struct vipr_source_range {
	__u32 prefixlen; /* 32 (svc_id) + the CIDR's prefix length */
	__u32 svc_id;    /* host order is fine: matched in full, never by prefix */
	__be32 addr;     /* the CIDR's network address */
};
_Static_assert(sizeof(struct vipr_source_range) == 12, "vipr_source_range layout");

/* Value of vipr_config_v1 (an array of one): settings the agent may change while running. */
struct vipr_config {
	__be32 snat_addr;     /* node address external flows to remote backends are SNATed to; 0 = none */
	__be32 cluster_cidr;  /* --cluster-cidr network: sources inside are "internal"; 0/0 = none */
	__be32 cluster_mask;  /* its netmask (network order) */
	__u16 snat_port_min;  /* SNAT source ports, host order, min <= max: every one is tried before */
	__u16 snat_port_max;  /* a flow is dropped (VIPR_STAT_DROP_NO_SNAT_PORT) */
};
_Static_assert(sizeof(struct vipr_config) == 16, "vipr_config layout");

/*
 * XDP's next hops (vipr_xdp_nexthops_v1, LRU): what bpf_fib_lookup answered for a rewritten
 * frame's addresses and the interface it came in on, kept for VIPR_NEXTHOP_TTL_NS, so a tracked
 * flow's packets skip the FIB (~100 ns a packet here) as the kernel's own forwarding keeps a
 * route cached. Policy rules that match on ports or marks are seen when an entry is made only.
 */
struct vipr_nexthop_key {
	__be32 saddr;
	__be32 daddr;
	__u32 ifindex; /* the interface the frame came in on */
};
_Static_assert(sizeof(struct vipr_nexthop_key) == 12, "vipr_nexthop_key layout");

struct vipr_nexthop {
	__u64 expires_ns;   /* bpf_ktime_get_coarse_ns() after which the FIB is asked again */
	__u32 ifindex;      /* egress interface */
	__u16 len_ok;       /* the longest IPv4 total length the FIB allowed (MTU): longer asks again */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 pad[6];
};
_Static_assert(sizeof(struct vipr_nexthop) == 32, "vipr_nexthop layout");

/* IPv6's (vipr_xdp_nexthops6_v1), as vipr_nexthop_key; len_ok is then the longest IPv6 packet, header included. */
struct vipr_nexthop6_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__u32 ifindex; /* the interface the frame came in on */
};
_Static_assert(sizeof(struct vipr_nexthop6_key) == 36, "vipr_nexthop6_key layout");

#define VIPR_NEXTHOP_TTL_NS 1000000000ULL /* 1 s: how stale a route or neighbour change can be */
#define VIPR_NEXTHOP_ENTRIES 16384

/*
 * Value of vipr_xdp_flows_v1 (key: struct vipr_ct_key of the packet as it arrives, dir
 * VIPR_CT_FORWARD): XDP's flow cache. A packet of a tracked flow (the client's side, or the
 * reply of a flow SNATed to this node) that XDP rewrote by the full path leaves here the rewrite
 * and where it went, so the flow's next packets take one lookup instead of the conntrack probes
 * and the FIB (Katran's connection table, with NAT). What keeps it right:
 *  - it lives until nh.expires_ns (at most VIPR_NEXTHOP_TTL_NS): then a packet takes the full
 *    path, which touches the conntrack entry (so GC never sees a cached flow idle) and renews it;
 *  - TCP packets with SYN, FIN or RST never use it (FIN and RST delete it): the flow's state
 *    changes go through conntrack; flows closing, half-open or fragmented are never cached;
 *  - the agent empties it whenever it cuts flows (a backend gone, `vipr conntrack flush`).
 */
struct vipr_xdp_flow {
	struct vipr_nexthop nh; /* egress (ifindex 0: to the stack, a local backend not in vipr_xdp_pods_v1), expiry, MTU */
	__be32 saddr;           /* the rewrite */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 stat;              /* what the full path counted it as: VIPR_STAT_CT_HIT or VIPR_STAT_REV_NAT */
	__u8 pad[3];
};
_Static_assert(sizeof(struct vipr_xdp_flow) == 48, "vipr_xdp_flow layout");

#define VIPR_XDP_FLOW_ENTRIES 32768

/* Value of vipr_xdp_flows6_v1 (key: struct vipr_ct6_key): struct vipr_xdp_flow for IPv6 flows. */
struct vipr_xdp_flow6 {
	struct vipr_nexthop nh; /* as vipr_xdp_flow's; len_ok: the longest IPv6 packet, header included */
	__be32 saddr[4];        /* the rewrite */
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 stat;              /* VIPR_STAT_CT_HIT or VIPR_STAT_REV_NAT */
	__u8 pad[3];
};
_Static_assert(sizeof(struct vipr_xdp_flow6) == 72, "vipr_xdp_flow6 layout");

/*
 * vipr_xdp_pods_v1 (key: struct vipr_xdp_pod_key, the pod's IPv4 address): where XDP sends the
 * frames of this node's backends itself instead of passing them to the stack (`vipr run
 * --xdp-local-backends redirect`). The agent writes an entry only for a pod reached over a veth
 * (the route's device) whose neighbour entry it has, rewrites it when a link, route or neighbour
 * change moves the pod, and removes it when the backend goes (src/bpf/xdp-pods.ts). The frame
 * goes to the host side of the veth by XDP_REDIRECT (ndo_xdp_xmit), which in native mode
 * delivers into the pod only when the pod's side takes XDP frames (NAPI: GRO or an XDP program
 * on it): the operator's promise with the flag.
 */
struct vipr_xdp_pod_key {
	__be32 addr;
};

struct vipr_xdp_pod {
	__u32 ifindex;    /* the host side of the pod's veth */
	__u16 len_ok;     /* that link's MTU: longer packets (IPv4 total length, IPv6 header + payload) go to the stack */
	__u8 pod_mac[6];  /* the pod's interface (the node's neighbour entry) */
	__u8 host_mac[6]; /* the host side's own */
	__u8 pad[2];
};
_Static_assert(sizeof(struct vipr_xdp_pod) == 20, "vipr_xdp_pod layout");

/*
 * vipr_xdp_pods6_v1 (value: struct vipr_xdp_pod, len_ok compared with the IPv6 header and its
 * payload): the same for this node's IPv6 pods. A map of its own, as every IPv6 table here: IPv4's
 * keys stay 4 bytes, its lookups as they were, and vipr_xdp_pods_v1's pinned layout unchanged.
 */
struct vipr_xdp_pod6_key {
	__be32 addr[4]; /* the pod's IPv6 address */
};
_Static_assert(sizeof(struct vipr_xdp_pod6_key) == 16, "vipr_xdp_pod6_key layout");

#define VIPR_XDP_POD_ENTRIES 4096

/*
 * What XDP leaves in front of a frame it passes to the stack with its work done (XDP metadata,
 * bpf_xdp_adjust_meta): a packet of no service, or one it translated for a pod of this node. TC
 * ingress on the same interface then lets it through without parsing it or probing conntrack
 * again (Cilium's XFER_PKT_NO_SVC). Only IPv4 without options and IPv6 without extension
 * headers, neither fragmented, get it (a DSR packet's option is TC's to take off). TC believes it
 * only on the interface it names and with the TTL (hop limit) it names, so a mark the kernel carried along with a packet the node forwarded (TTL one
 * less) into another device is never taken for a fresh one; packets of one flow carry the same
 * mark, so GRO still merges them. Drivers without XDP metadata leave it out, and TC does the
 * work as before.
 */
struct vipr_xdp_meta {
	__u32 magic;   /* VIPR_XDP_META_DONE */
	__u32 ifindex; /* the interface XDP ran on */
	__u8 ttl;      /* the IPv4 TTL as XDP left it */
	__u8 pad[3];
};
_Static_assert(sizeof(struct vipr_xdp_meta) == 12, "vipr_xdp_meta layout");

#define VIPR_XDP_META_DONE 0x76697072 /* "vipr" */

/*
 * Value of vipr_snat_full_v1 / vipr_snat_full6_v1, keyed by a flow's reply key with port 0 (struct
 * vipr_ct_key / vipr_ct6_key: the backend, the SNAT address, the protocol): until when a walk of
 * that backend's whole SNAT port range found no free port. New flows to it are dropped without
 * walking again meanwhile (a flood of new sources would make every packet walk the range
 * otherwise: 4,536 claims, ~100 us of CPU, a packet).
 */
struct vipr_snat_full {
	__u64 until_ns; /* bpf_ktime_get_ns() */
};
_Static_assert(sizeof(struct vipr_snat_full) == 8, "vipr_snat_full layout");

#define VIPR_SNAT_FULL_NS 1000000000ULL /* 1 s: a port freed meanwhile waits at most this long */
#define VIPR_SNAT_FULL_ENTRIES 4096

/* Source address of hairpin flows (a pod reaching itself through its service), as Cilium's. */
#define VIPR_HAIRPIN_ADDR 0xa9fe2a01 /* 169.254.42.1, host order */

/* Value of vipr_sched_v1 (key: __u32 svc_id): scheduler state. */
struct vipr_sched_state {
	__u32 rr_next; /* round robin: the next slot, advanced atomically */
	__u32 pad;
};
_Static_assert(sizeof(struct vipr_sched_state) == 8, "vipr_sched_state layout");

/* Value of vipr_backend_conns_v1 (key: vipr_backend_id): flows open to a backend (lc). */
struct vipr_backend_conns {
	__s32 active; /* flows created minus flows seen closing */
	__u32 pad;
};
_Static_assert(sizeof(struct vipr_backend_conns) == 8, "vipr_backend_conns layout");

/* Key of vipr_affinity_v1: a client of a service under sessionAffinity ClientIP. */
struct vipr_affinity_key {
	__u32 svc_id;
	__be32 client; /* client address */
};
_Static_assert(sizeof(struct vipr_affinity_key) == 8, "vipr_affinity_key layout");

/* Value of vipr_affinity_v1. */
struct vipr_affinity_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last new connection */
	__u32 backend_id;
	__u8 pad[4];
};
_Static_assert(sizeof(struct vipr_affinity_value) == 16, "vipr_affinity_value layout");

/*
 * Slots of vipr_stats_v2, more than enum vipr_stat uses: a counter added later takes a free slot
 * instead of changing max_entries, which would make the pinned map unusable to the new object
 * ("couldn't reuse pinned map") and force a new map name.
 */
#define VIPR_STAT_SLOTS 64

/*
 * Index of vipr_stats_v2 (per-CPU array): events first, then drop reasons. Keep the order and
 * append only: user space names counters by index (STAT_NAMES in src/bpf/layouts.ts).
 */
enum vipr_stat {
	VIPR_STAT_PACKETS = 0,      /* every packet the programs saw */
	VIPR_STAT_PASS_NON_IPV4,    /* ARP, IPv6, other ethertypes: passed untouched */
	VIPR_STAT_PASS_NOT_SERVICE, /* IPv4 not addressed to a service: passed untouched */
	VIPR_STAT_FRAGMENT,         /* IPv4 fragments seen (first and later ones), translated as their datagram's flow */
	VIPR_STAT_SERVICE_HIT,      /* new flow matched a service */
	VIPR_STAT_CT_HIT,           /* packet of a tracked flow */
	VIPR_STAT_CT_NEW,           /* conntrack entries created */
	VIPR_STAT_DNAT,             /* packets DNATed to a backend */
	VIPR_STAT_REV_NAT,          /* replies rewritten back to the service address */
	VIPR_STAT_DROP_NO_BACKEND,  /* drop: the service has no endpoints */
	VIPR_STAT_MALFORMED,        /* truncated or malformed IPv4/L4 header: passed untouched, the stack drops it */
	VIPR_STAT_DROP_NO_SLOT,     /* drop: slot or backend missing (update in flight) */
	VIPR_STAT_DROP_CT_FULL,     /* drop: conntrack entry could not be created */
	VIPR_STAT_DROP_REWRITE,     /* drop: a checksum or store helper failed */
	VIPR_STAT_SNAT,             /* new flows SNATed to the node (remote backend, hairpin) */
	VIPR_STAT_AFFINITY_HIT,     /* new flows sent to the client's affinity backend */
	VIPR_STAT_DROP_SOURCE_RANGE,/* drop: source outside loadBalancerSourceRanges */
	VIPR_STAT_REJECT,           /* no endpoints: to be rejected (ICMP port unreachable, within the rate limit) */
	VIPR_STAT_DROP_NO_SNAT_PORT,/* drop: no free SNAT port for the flow */
	VIPR_STAT_DROP_FIB,         /* drop: no route for a redirected packet */
	VIPR_STAT_XDP_PASS,         /* XDP: handed to the stack (not a service, or TC handles it) */
	VIPR_STAT_XDP_TX,           /* XDP: rewritten and sent back out the same interface */
	VIPR_STAT_XDP_REDIRECT,     /* XDP: rewritten and redirected to another interface */
	VIPR_STAT_DROP_ICMP_RATE_LIMIT, /* drop: reject without its ICMP, this CPU's ICMP budget is spent (vipr_icmp_bucket_v1) */
	VIPR_STAT_SOCK_XLATE,       /* socket LB: connect()/sendmsg() to a frontend sent to a backend (packets = calls, bytes 0) */
	VIPR_STAT_SOCK_REV_NAT,     /* socket LB: recvmsg()/getpeername() given the frontend back instead of the backend */
	VIPR_STAT_SOCK_REJECT,      /* socket LB: connect()/sendmsg() to a Service without endpoints failed (ECONNREFUSED) */
	VIPR_STAT_SOCK_DESTROYED,   /* socket LB: connected UDP sockets destroyed, their backend was removed */
	VIPR_STAT_CT_PROMOTED,      /* TCP flows moved from vipr_ct_tcp_syn_v1 to vipr_ct_tcp_v1 (handshake done) */
	VIPR_STAT_CT_TCP_FULL,      /* vipr_ct_tcp_v1 full: an established flow stayed in the half-open map */
	VIPR_STAT_DROP_FRAG_NOT_FOUND, /* drop: a later IPv4 fragment whose first fragment was not seen (vipr_fragments_v1) */
	VIPR_STAT_ICMP_ERROR_NAT,   /* ICMP errors about a translated flow rewritten to what their receiver sent */
	VIPR_STAT_PULLED,           /* TC: headers outside the skb's linear data, pulled in (bpf_skb_pull_data) */
	VIPR_STAT_DROP_CT_TUPLE_TAKEN, /* drop: a new TCP flow's backend -> client address:port is an open flow's, through another frontend */
	VIPR_STAT_IPV6_EXT_HDR_LIMIT, /* IPv6 whose extension headers run past the bounded walk (VIPR_IPV6_MAX_EXT_HDRS): passed untouched */
	VIPR_STAT_PASS_IPV6_NO_PROGRAM, /* IPv6 passed untouched: the tail call found no IPv6 program in vipr_{tc,xdp}_ipv6_progs_v1 */
	VIPR_STAT_DSR_ENCAP,        /* DSR: the frontend added to a packet for a backend on another node (IPv4 option) */
	VIPR_STAT_DSR_DECAP,        /* DSR: the frontend option taken off a packet for a backend on this node */
	VIPR_STAT_DROP_DSR_MTU,     /* drop: a DSR packet with its option exceeds the egress MTU (the option adds 8 bytes) */
	VIPR_STAT_XDP_FLOW_CACHE_HIT, /* XDP: a tracked flow's packet rewritten from vipr_xdp_flows_v1, no conntrack or FIB */
	VIPR_STAT_SNAT_PORT_WALK,   /* a new SNATed flow's random tries failed: the port range walked in order */
	VIPR_STAT_TC_XDP_DONE,      /* TC ingress: a packet XDP had finished with (struct vipr_xdp_meta), let through unread */
	VIPR_STAT_MAX,
};
_Static_assert(VIPR_STAT_MAX <= VIPR_STAT_SLOTS, "enum vipr_stat outgrew vipr_stats_v2");

/* Value of vipr_stats_v2. */
struct vipr_stat_value {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct vipr_stat_value) == 16, "vipr_stat_value layout");

/*
 * Value of vipr_icmp_bucket_v1 (per-CPU array of one, key 0): the token bucket limiting the ICMP
 * rejects one CPU sends, as net.ipv4.icmp_msgs_per_sec / icmp_msgs_burst limit the kernel's own
 * ICMP. All zero (a new map) reads as empty and refilled long ago, so the first reject fills it.
 */
struct vipr_icmp_bucket {
	__u64 refilled_ns; /* bpf_ktime_get_ns() of the last refill */
	__u32 tokens;      /* rejects this CPU may still send, at most the burst */
	__u32 pad;
};
_Static_assert(sizeof(struct vipr_icmp_bucket) == 16, "vipr_icmp_bucket layout");

/*
 * Key of vipr_sock_rev_v1 (LRU): a socket the socket hooks translated, and the backend it was sent
 * to. recvmsg()/getpeername() find here the frontend the application used, so a DNS client sees
 * its answers come from the Service address. Per socket, not per backend: two applications may
 * reach one backend through different frontends (ClusterIP, NodePort on 127.0.0.1).
 */
struct vipr_sock_rev_key {
	__u64 cookie; /* bpf_get_socket_cookie() of the socket */
	__be32 addr;  /* backend address */
	__be16 port;  /* backend port */
	__u8 pad[2];
};
_Static_assert(sizeof(struct vipr_sock_rev_key) == 16, "vipr_sock_rev_key layout");

/* Value of vipr_sock_rev_v1. */
struct vipr_sock_rev_value {
	__be32 addr;     /* the frontend address the application connected or sent to */
	__be16 port;     /* the frontend port */
	__u8 pad[2];
	__u32 backend_id; /* the backend chosen: a connected UDP socket whose backend id no longer maps
			   * to this address and port is destroyed (its backend is gone) */
};
_Static_assert(sizeof(struct vipr_sock_rev_value) == 12, "vipr_sock_rev_value layout");

/*
 * Key of vipr_sock_affinity_v1 (LRU): sessionAffinity ClientIP at the socket, where no source
 * address exists yet. The client is its network namespace (one per pod, one for the host), as
 * Cilium's socket LB keys it; the value is a vipr_affinity_value.
 */
struct vipr_sock_affinity_key {
	__u64 netns_cookie; /* bpf_get_netns_cookie() of the socket */
	__u32 svc_id;
	__u32 pad;
};
_Static_assert(sizeof(struct vipr_sock_affinity_key) == 16, "vipr_sock_affinity_key layout");

/* Settings of the socket-LB object, its `const volatile` .rodata (set by the loader before load). */
struct vipr_sock_config {
	__u64 host_netns_cookie; /* the agent's network namespace (the host's) */
	__u8 host_ns_only;       /* 1: translate only sockets of host_netns_cookie (service meshes in pods) */
	__u8 nodeport_loopback;  /* 1: NodePorts also answer on 127.0.0.0/8 (kube-proxy's localhost NodePorts) */
	__u8 pad[6];
};
_Static_assert(sizeof(struct vipr_sock_config) == 16, "vipr_sock_config layout");

/*
 * Settings of the conntrack GC object (bpf/ct_gc.bpf.c), its `const volatile` .rodata: how long a
 * flow may stay idle, by state (Cilium's defaults unless the agent says otherwise).
 */
struct vipr_ct_timeouts {
	__u64 syn_ns;         /* half-open TCP (vipr_ct_tcp_syn_v1) */
	__u64 established_ns; /* established TCP (vipr_ct_tcp_v1) */
	__u64 closing_ns;     /* TCP after FIN or RST, in either map */
	__u64 udp_ns;         /* UDP (vipr_ct_udp_v1) */
};
_Static_assert(sizeof(struct vipr_ct_timeouts) == 32, "vipr_ct_timeouts layout");

/*
 * What one GC pass over a conntrack map reports: the GC iterator writes this record every
 * VIPR_CT_GC_REPORT_EVERY entries (so a read() returns often) and once at the end; the last one
 * read is the pass's result.
 */
struct vipr_ct_gc_report {
	__u64 seen;    /* entries visited (a reply entry deleted with its flow before its turn is not) */
	__u64 deleted; /* entries deleted (expired flows, both directions; orphaned reply entries) */
	__u64 kept;    /* entries left: kept flows' two entries, kept orphaned replies */
};
_Static_assert(sizeof(struct vipr_ct_gc_report) == 24, "vipr_ct_gc_report layout");
#define VIPR_CT_GC_REPORT_EVERY 64

/*
 * Key of vipr_fragments_v1 (LRU): one IPv4 datagram, as RFC 791 identifies it for reassembly.
 * Only its first fragment carries the L4 header; later fragments find the ports here (Cilium's
 * ipv4_frag_id). The TC and XDP programs record every first fragment they see, in both
 * directions, and never delete: a datagram's entry ages out by LRU.
 */
struct vipr_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;   /* IPv4 identification */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};
_Static_assert(sizeof(struct vipr_frag_key) == 12, "vipr_frag_key layout");

/* Value of vipr_fragments_v1: the L4 ports of the datagram's first fragment. */
struct vipr_frag_ports {
	__be16 sport;
	__be16 dport;
};
_Static_assert(sizeof(struct vipr_frag_ports) == 4, "vipr_frag_ports layout");

/*
 * IPv6. Separate maps for IPv6 frontends, backends and flows, as Cilium's lb6_* maps: IPv4 keys
 * stay 8 and 16 bytes, so IPv4's per-packet cost does not grow (measured with BPF_PROG_TEST_RUN,
 * see README "IPv6"). What is family-independent is shared: service ids and backend ids come from
 * one allocator each, so vipr_slots_v1, vipr_sched_v1 and vipr_backend_conns_v1 serve both
 * families, and vipr_svc_value is the same. Addresses are 16 bytes in network order, as four
 * __be32 words so keys stay 4-byte aligned and compare word by word.
 */

/* Extension headers the IPv6 parser walks before it gives up (hop-by-hop, routing, destination
 * options, fragment, AH): a longer chain is passed untouched (VIPR_STAT_IPV6_EXT_HDR_LIMIT). */
#define VIPR_IPV6_MAX_EXT_HDRS 6

/*
 * Source address of IPv6 hairpin flows: 100::a9fe:2a01 (169.254.42.1's bits in the last word).
 * IPv6 has no 169.254/16 that a pod routes to its node: a link-local fe80:: source would be
 * answered on the pod's link by neighbour discovery, which nobody answers. 100::/64 is the
 * discard-only prefix (RFC 6666): no host has such an address, so the backend never takes it for
 * itself or a real client, a pod's default route leads it back through the node (where the reply
 * is reverse-translated before routing), and were it to leak, routers drop it.
 */
#define VIPR_HAIRPIN_ADDR6_HI 0x01000000 /* first word, host order */
#define VIPR_HAIRPIN_ADDR6_LO 0xa9fe2a01 /* last word, host order; the two middle words are 0 */

/* Key of vipr_services6_v1. A NodePort frontend's vip is :: (all zero), as VIPR_NODEPORT_VIP. */
struct vipr_svc6_key {
	__be32 vip[4];
	__be16 port;
	__u8 proto;
	__u8 scope;   /* enum vipr_scope */
};
_Static_assert(sizeof(struct vipr_svc6_key) == 20, "vipr_svc6_key layout");

/* Value of vipr_backends6_v1 (key: vipr_backend_id, from the allocator IPv4 backends use). */
struct vipr_backend6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 flags;  /* enum vipr_backend_flags */
};
_Static_assert(sizeof(struct vipr_backend6) == 20, "vipr_backend6 layout");

/* Key of the IPv6 conntrack maps (vipr_ct6_tcp_v1, vipr_ct6_tcp_syn_v1, vipr_ct6_udp_v1), as vipr_ct_key. */
struct vipr_ct6_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;   /* enum vipr_ct_dir */
	__u8 pad[2];
};
_Static_assert(sizeof(struct vipr_ct6_key) == 40, "vipr_ct6_key layout");

/* Value of the IPv6 conntrack maps, as vipr_ct_value (snat_addr all zero: no SNAT). */
struct vipr_ct6_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	__be32 nat_addr[4];
	__be16 nat_port;
	__u8 flags;         /* enum vipr_ct_flags */
	__u8 tcp_flags;
	__be32 snat_addr[4];
	__be16 snat_port;
	__u8 pad[2];
	__u32 svc_id;
	__u32 backend_id;
};
_Static_assert(sizeof(struct vipr_ct6_value) == 64, "vipr_ct6_value layout");

/* Key of vipr_node_ips6_v1. */
struct vipr_node_ip6 {
	__be32 addr[4];
};
_Static_assert(sizeof(struct vipr_node_ip6) == 16, "vipr_node_ip6 layout");

/* Key of vipr_source_ranges6_v1 (LPM trie), as vipr_source_range. */
struct vipr_source_range6 {
	__u32 prefixlen; /* 32 (svc_id) + the CIDR's prefix length */
	__u32 svc_id;
	__be32 addr[4];
};
_Static_assert(sizeof(struct vipr_source_range6) == 24, "vipr_source_range6 layout");

/* Value of vipr_config6_v1 (an array of one). SNAT ports come from vipr_config (one range per node). */
struct vipr_config6 {
	__be32 snat_addr[4];    /* all zero = none */
	__be32 cluster_cidr[4]; /* --cluster-cidr's IPv6 network; prefix 0 = none */
	__be32 cluster_mask[4]; /* its mask, network order */
};
_Static_assert(sizeof(struct vipr_config6) == 48, "vipr_config6 layout");

/* Key of vipr_affinity6_v1 (value: vipr_affinity_value). */
struct vipr_affinity6_key {
	__u32 svc_id;
	__be32 client[4];
};
_Static_assert(sizeof(struct vipr_affinity6_key) == 20, "vipr_affinity6_key layout");

/* Key of vipr_fragments6_v1 (LRU; value: vipr_frag_ports): one IPv6 datagram, by RFC 8200's
 * fragment identification. */
struct vipr_frag6_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;   /* the fragment header's identification */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};
_Static_assert(sizeof(struct vipr_frag6_key) == 40, "vipr_frag6_key layout");

/* Key of vipr_sock_rev6_v1 (LRU), as vipr_sock_rev_key. */
struct vipr_sock_rev6_key {
	__u64 cookie;
	__be32 addr[4];
	__be16 port;
	__u8 pad[6];
};
_Static_assert(sizeof(struct vipr_sock_rev6_key) == 32, "vipr_sock_rev6_key layout");

/* Value of vipr_sock_rev6_v1. */
struct vipr_sock_rev6_value {
	__be32 addr[4];
	__be16 port;
	__u8 pad[2];
	__u32 backend_id;
};
_Static_assert(sizeof(struct vipr_sock_rev6_value) == 24, "vipr_sock_rev6_value layout");

/*
 * Slots of the prog arrays the entry programs tail-call for IPv6 frames (vipr_tc_ipv6_progs_v1,
 * vipr_xdp_ipv6_progs_v1): the loader puts each object's IPv6 programs there (src/bpf/datapath.ts,
 * IPV6_PROGRAM_SLOTS).
 */
enum vipr_ipv6_prog {
	VIPR_IPV6_PROG_TC_INGRESS = 0,
	VIPR_IPV6_PROG_TC_EGRESS = 1,
	VIPR_IPV6_PROG_XDP = 0,
};
#define VIPR_TC_IPV6_PROGS 2
#define VIPR_XDP_IPV6_PROGS 1

#endif /* __VIPR_TYPES_H */
