/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Direct server return for external IPv4 traffic (NodePort, LoadBalancer, external IPs) to a
 * backend on another node. The balancing node translates the destination to the backend as
 * always, keeps the client's source, and adds an IPv4 option carrying the frontend the client
 * used (address and port, 8 bytes); it forwards the packet by FIB lookup to the backend's node.
 * That node's TC ingress takes the option off, records the frontend in conntrack (a flow of its
 * own, keyed as the client sent it), and lets the plain packet go on to the pod. The pod's reply
 * is rewritten at the egress towards the client (lb4_plan_egress, as any reply without SNAT): its
 * source becomes the frontend, and it leaves the backend's node straight for the client.
 *
 * Why an IP option (Cilium's default dispatch for IPv4, `opt`) rather than IPIP or Geneve:
 *  - 8 bytes per packet against IPIP's 20 and Geneve's 50 with its option;
 *  - the packet stays an ordinary client -> pod packet, routed by the underlay as pod traffic is
 *    (no tunnel device, no outer addresses to pick, firewalls see the real 5-tuple), and its L4
 *    checksum is untouched: options are outside the pseudo-header;
 *  - the backend's node needs no Service state: the option says what the reply's source must be.
 * What it costs: routers and cloud fabrics that drop or slow-path packets with IP options (some
 * clouds do; there IPIP or Geneve would be the choice), and 8 bytes of MTU (below).
 * Every packet of the flow carries the option, not only the first, so the backend's node learns
 * the flow from any packet (a restarted agent, UDP without a handshake).
 *
 * MTU: a full-sized packet from the client would be 8 bytes too long for the underlay. TCP: the
 * backend's node lowers the MSS the backend announces in its SYN-ACK to fit the egress MTU less
 * the option, so the client never sends a segment that cannot carry it. Anything still too long
 * (UDP near the MTU) is dropped at the balancing node and counted (drop_dsr_mtu); `--lb-mode
 * hybrid` keeps UDP on SNAT.
 *
 * The option: type 0x9e (copied into fragments, class 0, number 30: RFC 4727's experimental
 * option), length 8, the frontend port, the frontend address, both in network order. It is put
 * first, right after the fixed 20-byte header, and taken from there.
 */
#ifndef __VIPR_DSR_H
#define __VIPR_DSR_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "conntrack.h"
#include "fib.h"
#include "nat.h"
#include "parse.h"
#include "stats.h"

#define DSR_OPT_TYPE 0x9e
#define DSR_OPT_LEN 8
/* The 20-byte IPv4 header without options (IHL 5), where bpf_skb_adjust_room(BPF_ADJ_ROOM_NET) adds and removes room. */
#define DSR_IP_BASE_LEN 20
#define TCP_OPT_MSS 2
#define TCP_OPT_NOP 1
#define TCP_OPT_EOL 0
/* TCP options the MSS search reads (40 bytes at most, one option per step). */
#define DSR_TCP_OPT_STEPS 10

struct dsr_opt {
	__u8 type;   /* DSR_OPT_TYPE */
	__u8 len;    /* DSR_OPT_LEN */
	__be16 port; /* the frontend port */
	__be32 addr; /* the frontend address */
};
_Static_assert(sizeof(struct dsr_opt) == DSR_OPT_LEN, "dsr_opt layout");

/* The first 32-bit word of an IPv4 header (version/IHL, TOS, total length) as it is in the packet. */
struct ip_word0 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
};

/*
 * The header's first word changed (IHL and total length) and 8 option bytes added or removed:
 * the IPv4 header checksum follows by difference (RFC 1624), as with every other rewrite here.
 */
static __always_inline int tc_dsr_fix_header(struct __sk_buff *skb, __u32 l3_off, const struct ip_word0 *old,
					     const struct ip_word0 *new, struct dsr_opt *opt, bool added)
{
	__u32 check_off = l3_off + __builtin_offsetof(struct iphdr, check);
	__s64 diff;

	if (bpf_l3_csum_replace(skb, check_off, *(__u32 *)old, *(__u32 *)new, 4))
		return -1;
	diff = added ? bpf_csum_diff(NULL, 0, (__be32 *)opt, sizeof(*opt), 0)
		     : bpf_csum_diff((__be32 *)opt, sizeof(*opt), NULL, 0, 0);
	if (diff < 0 || bpf_l3_csum_replace(skb, check_off, 0, diff, 0))
		return -1;
	return bpf_skb_store_bytes(skb, l3_off, new, sizeof(*new), 0);
}

/*
 * Balancing node, after the DNAT: puts the frontend (@frontend_addr:@frontend_port, what the
 * client sent to) in an option in front of any the packet has. Returns 0, or -1 when it cannot
 * (no room for 8 more bytes of options, a helper failed): the caller drops the packet.
 */
static __always_inline int tc_dsr_encap(struct __sk_buff *skb, const struct packet *pkt,
					__be32 frontend_addr, __be16 frontend_port)
{
	struct dsr_opt opt = {
		.type = DSR_OPT_TYPE,
		.len = DSR_OPT_LEN,
		.port = frontend_port,
		.addr = frontend_addr,
	};
	struct ip_word0 old, new;

	if (bpf_skb_load_bytes(skb, pkt->l3_off, &old, sizeof(old)))
		return -1;
	/* IHL counts 32-bit words, at most 15 (60 bytes). */
	if ((old.ver_ihl & 0x0f) + DSR_OPT_LEN / 4 > 15)
		return -1;
	new = old;
	new.ver_ihl += DSR_OPT_LEN / 4;
	new.tot_len = bpf_htons(bpf_ntohs(old.tot_len) + DSR_OPT_LEN);
	if (bpf_skb_adjust_room(skb, DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, pkt->l3_off + DSR_IP_BASE_LEN, &opt, sizeof(opt), 0))
		return -1;
	if (tc_dsr_fix_header(skb, pkt->l3_off, &old, &new, &opt, true))
		return -1;
	stats_count(VIPR_STAT_DSR_ENCAP, skb->len);
	return 0;
}

/* The frontend option of a packet that has one first (IHL 7 or more), or false. */
static __always_inline bool dsr4_opt(struct __sk_buff *skb, const struct packet *pkt, struct dsr_opt *opt)
{
	if (pkt->l4_off - pkt->l3_off < DSR_IP_BASE_LEN + DSR_OPT_LEN)
		return false;
	if (bpf_skb_load_bytes(skb, pkt->l3_off + DSR_IP_BASE_LEN, opt, sizeof(*opt)))
		return false;
	return opt->type == DSR_OPT_TYPE && opt->len == DSR_OPT_LEN && opt->addr && opt->port;
}

/*
 * Backend's node: the flow as the client sent it (client -> frontend) in conntrack, so the
 * backend's replies are rewritten to the frontend on their way out (lb4_plan_egress). Its entries
 * mirror a balanced flow's (forward: nat = the backend; reply: nat = the frontend) and age the
 * same way; they count towards no backend's connections (lc): this node did not choose it.
 * Returns 0, or a drop reason to count.
 */
static __always_inline int dsr4_track(const struct packet *pkt, const struct dsr_opt *opt, __u32 len)
{
	struct vipr_ct_key fwd_key = {
		.saddr = pkt->saddr,
		.daddr = opt->addr,
		.sport = pkt->sport,
		.dport = opt->port,
		.proto = pkt->proto,
		.dir = VIPR_CT_FORWARD,
	};
	struct vipr_backend be = { .addr = pkt->daddr, .port = pkt->dport, .proto = pkt->proto };
	struct vipr_ct_value val = {}, *ct;
	struct vipr_ct_key rep_key;
	__u64 now = bpf_ktime_get_ns();
	bool established;
	void *map;

	ct = ct4_lookup(&fwd_key, &established);
	if (ct && ct->nat_addr == pkt->daddr && ct->nat_port == pkt->dport && ct4_is_reusable(ct, pkt)) {
		if (!established && pkt->proto == IPPROTO_TCP && ct4_may_promote(ct, pkt)) {
			struct vipr_ct_value *est = ct4_promote(&fwd_key, ct, len, true);

			if (est)
				ct = est;
		}
		ct4_touch(ct, pkt, now, false);
		return 0;
	}
	if (ct && established)
		ct4_forget_established(&fwd_key, ct);
	if (!ct4_take_reply_tuple(pkt, &be))
		return VIPR_STAT_DROP_CT_TUPLE_TAKEN;

	map = ct4_new_map(pkt->proto);
	val.created_ns = now;
	val.last_seen_ns = now;
	val.nat_addr = opt->addr;
	val.nat_port = opt->port;
	val.flags = VIPR_CT_F_DSR;
	rep_key.saddr = be.addr;
	rep_key.daddr = pkt->saddr;
	rep_key.sport = be.port;
	rep_key.dport = pkt->sport;
	rep_key.proto = pkt->proto;
	rep_key.dir = VIPR_CT_REPLY;
	rep_key.pad[0] = 0;
	rep_key.pad[1] = 0;
	if (bpf_map_update_elem(map, &rep_key, &val, BPF_ANY))
		return VIPR_STAT_DROP_CT_FULL;
	val.nat_addr = be.addr;
	val.nat_port = be.port;
	val.tcp_flags = pkt->tcp_flags;
	if (bpf_map_update_elem(map, &fwd_key, &val, BPF_ANY)) {
		bpf_map_delete_elem(map, &rep_key);
		return VIPR_STAT_DROP_CT_FULL;
	}
	stats_count(VIPR_STAT_CT_NEW, len);
	return 0;
}

/*
 * Backend's node, TC ingress: a packet carrying the frontend option is tracked and stripped of it.
 * Returns 1 when the packet had the option (now gone: the caller passes the packet on, its parse
 * is stale), 0 when it had none, a negative value when it must be dropped (counted here).
 */
static __always_inline int tc_dsr_decap(struct __sk_buff *skb, const struct packet *pkt)
{
	struct ip_word0 old, new;
	struct dsr_opt opt;
	int drop;

	if (!dsr4_opt(skb, pkt, &opt))
		return 0;
	drop = dsr4_track(pkt, &opt, skb->len);
	if (drop) {
		stats_count(drop, skb->len);
		return -1;
	}
	if (bpf_skb_load_bytes(skb, pkt->l3_off, &old, sizeof(old)))
		goto rewrite_failed;
	new = old;
	new.ver_ihl -= DSR_OPT_LEN / 4;
	new.tot_len = bpf_htons(bpf_ntohs(old.tot_len) - DSR_OPT_LEN);
	if (bpf_skb_adjust_room(skb, -DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		goto rewrite_failed;
	if (tc_dsr_fix_header(skb, pkt->l3_off, &old, &new, &opt, false))
		goto rewrite_failed;
	stats_count(VIPR_STAT_DSR_DECAP, skb->len);
	return 1;
rewrite_failed:
	stats_count(VIPR_STAT_DROP_REWRITE, skb->len);
	return -1;
}

/*
 * Balancing node: routes the translated, optioned packet to the backend's node and redirects it
 * there. Returns a TC verdict, or -1 (no route: drop_fib) / -2 (too long for the egress device
 * with the option: drop_dsr_mtu).
 */
static __always_inline int tc_dsr_redirect(struct __sk_buff *skb, const struct packet *pkt,
					   const struct nat_plan *plan)
{
	struct bpf_fib_lookup fib;
	int rc;

	fib_params(&fib, pkt, plan, skb->ingress_ifindex);
	/* Without tot_len the lookup checks the skb itself against the egress MTU (GSO: per segment). */
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return -2;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (tc_dec_ttl(skb, pkt))
		return -1;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

/*
 * Backend's node, TC egress: a SYN-ACK of a DSR flow gets an MSS that leaves room for the option
 * on the client's packets (this device's MTU less the IPv4 and TCP headers and the option), so
 * full-sized segments still fit the underlay at the balancing node. Returns 0 or -1 (a helper
 * failed; the caller drops).
 */
static __always_inline int tc_dsr_clamp_mss(struct __sk_buff *skb, const struct packet *pkt)
{
	__u8 opts[40] = {};
	__u32 mtu = 0, doff, rest, off, i;
	__u16 mss, limit;
	__u8 byte12;

	if (pkt->proto != IPPROTO_TCP || (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != (TCP_FLAG_SYN | TCP_FLAG_ACK))
		return 0;
	if (bpf_check_mtu(skb, 0, &mtu, 0, 0) < 0 || mtu <= 20 + 20 + DSR_OPT_LEN)
		return 0;
	limit = mtu - 20 - 20 - DSR_OPT_LEN;
	if (bpf_skb_load_bytes(skb, pkt->l4_off + 12, &byte12, 1))
		return -1;
	doff = (byte12 >> 4) * 4;
	if (doff <= 20)
		return 0;
	/* The option area: a multiple of 4 bytes, at most 40; an MSS option takes 4. */
	doff = (doff - 20) & 0x3c;
	if (doff < 4)
		return 0;
	/*
	 * The compiler knows doff is a multiple of 4 and tests "doff < 4" as "doff == 0", from which
	 * a verifier older than ~6.7 learns no lower bound and refuses a possibly zero-sized read
	 * (Debian 12's 6.1 did). So the read's length is an upper-bounded rest, hidden from the
	 * compiler (which would fold the checks into one range test), plus 4.
	 */
	rest = doff - 4;
	asm volatile("" : "+r"(rest));
	if (rest > sizeof(opts) - 4 || bpf_skb_load_bytes(skb, pkt->l4_off + 20, opts, rest + 4))
		return 0;
	off = 0;
	for (i = 0; i < DSR_TCP_OPT_STEPS; i++) {
		__u8 kind, olen;

		if (off + 4 > doff || off > sizeof(opts) - 4)
			return 0;
		kind = opts[off];
		if (kind == TCP_OPT_EOL)
			return 0;
		if (kind == TCP_OPT_NOP) {
			off++;
			continue;
		}
		olen = opts[off + 1];
		if (kind == TCP_OPT_MSS && olen == 4) {
			__be16 old_mss, new_mss;

			mss = ((__u16)opts[off + 2] << 8) | opts[off + 3];
			if (mss <= limit)
				return 0;
			old_mss = bpf_htons(mss);
			new_mss = bpf_htons(limit);
			if (bpf_l4_csum_replace(skb, pkt->l4_off + __builtin_offsetof(struct tcphdr, check),
						old_mss, new_mss, sizeof(new_mss)))
				return -1;
			return bpf_skb_store_bytes(skb, pkt->l4_off + 20 + off + 2, &new_mss, sizeof(new_mss), 0) ? -1 : 0;
		}
		if (olen < 2)
			return 0;
		off += olen;
	}
	return 0;
}

#endif /* __VIPR_DSR_H */
