/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend selection. Every scheduler picks a slot in 0 .. backend_count-1 of the service; the
 * agent fills the slots so that each scheduler's rule holds: one slot per backend for random,
 * rr, sh and lc; the Maglev lookup table (a prime number of slots, >= 100 per backend) for
 * maglev. Slots are always complete: the agent writes them before raising the count.
 */
#ifndef __VIPR_SCHED_H
#define __VIPR_SCHED_H

#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "parse.h"

/* lc looks at no more slots than this (services with more backends fall back to random). */
#define LC_MAX_SLOTS 64

/* A 32-bit mix (murmur3's finaliser): spreads addresses that differ in a few bits. */
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 hash_flow(const struct packet *pkt)
{
	__u32 h = mix32(pkt->saddr ^ 0x9e3779b9);

	h = mix32(h ^ pkt->daddr);
	h = mix32(h ^ (((__u32)pkt->sport << 16) | pkt->dport));
	return mix32(h ^ pkt->proto);
}

/*
 * What the hashing schedulers hash, filled by the caller from what its hook knows: for a packet
 * (TC, XDP) the client address (sh) and the 5-tuple (maglev); for a socket, where no source
 * address or port exists yet, its network namespace (sh) and the socket itself (maglev).
 */
struct sched_in {
	__u32 client_hash; /* sh: who the client is */
	__u32 flow_hash;   /* maglev: which flow this is */
};

/* Only the hash the service's scheduler uses is computed. */
static __always_inline void sched_in_packet(struct sched_in *in, const struct vipr_svc_value *svc,
					    const struct packet *pkt)
{
	/* IPVS's source hashing: the client address alone picks the backend. */
	in->client_hash = svc->scheduler == VIPR_SCHED_SH ? mix32(pkt->saddr) : 0;
	in->flow_hash = svc->scheduler == VIPR_SCHED_MAGLEV ? hash_flow(pkt) : 0;
}

/* An IPv6 address, word by word. */
static __always_inline __u32 hash_addr6(__u32 h, const __be32 *a)
{
	h = mix32(h ^ a[0]);
	h = mix32(h ^ a[1]);
	h = mix32(h ^ a[2]);
	return mix32(h ^ a[3]);
}

/*
 * As sched_in_packet, for an IPv6 flow (its addresses as four __be32 words each); sched_pick_slot
 * itself serves both families.
 */
static __always_inline void sched_in_flow6(struct sched_in *in, const struct vipr_svc_value *svc,
					   const __be32 *saddr, const __be32 *daddr, __u32 ports, __u8 proto)
{
	__u32 h;

	in->client_hash = svc->scheduler == VIPR_SCHED_SH ? hash_addr6(0, saddr) : 0;
	in->flow_hash = 0;
	if (svc->scheduler == VIPR_SCHED_MAGLEV) {
		h = hash_addr6(hash_addr6(0x9e3779b9, saddr), daddr);
		h = mix32(h ^ ports);
		in->flow_hash = mix32(h ^ proto);
	}
}

static __always_inline __u32 sched_lc(const struct vipr_svc_value *svc)
{
	__u32 best = 0, i, count = svc->backend_count;
	__s32 best_active = 0x7fffffff;
	struct vipr_slot_key slot = { .svc_id = svc->svc_id };

	if (count > LC_MAX_SLOTS)
		return bpf_get_prandom_u32() % count;
	for (i = 0; i < LC_MAX_SLOTS; i++) {
		struct vipr_backend_id *id;
		struct vipr_backend_conns *c;
		__s32 active;

		if (i >= count)
			break;
		slot.slot = i;
		id = bpf_map_lookup_elem(&vipr_slots_v1, &slot);
		if (!id)
			continue;
		c = bpf_map_lookup_elem(&vipr_backend_conns_v1, id);
		active = c ? c->active : 0;
		if (active < best_active) {
			best_active = active;
			best = i;
		}
	}
	return best;
}

/* The slot for a new flow of @svc. */
static __always_inline __u32 sched_pick_slot(const struct vipr_svc_value *svc,
					     const struct sched_in *in)
{
	__u32 count = svc->backend_count;

	switch (svc->scheduler) {
	case VIPR_SCHED_RR: {
		__u32 key = svc->svc_id;
		struct vipr_sched_state *st = bpf_map_lookup_elem(&vipr_sched_v1, &key);

		if (st)
			return __sync_fetch_and_add(&st->rr_next, 1) % count;
		return bpf_get_prandom_u32() % count;
	}
	case VIPR_SCHED_SH:
		return in->client_hash % count;
	case VIPR_SCHED_MAGLEV:
		return in->flow_hash % count;
	case VIPR_SCHED_LC:
		return sched_lc(svc);
	default:
		return bpf_get_prandom_u32() % count;
	}
}

#endif /* __VIPR_SCHED_H */
