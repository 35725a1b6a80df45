/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 fragments of service traffic, as frag.h for IPv4 (read it for why): the first fragment
 * (offset 0, M set) carries the L4 header and its ports are recorded by (source, destination,
 * fragment identification, protocol) in vipr_fragments6_v1; later fragments take them over, or
 * are dropped when their first was not seen (VIPR_STAT_DROP_FRAG_NOT_FOUND).
 */
#ifndef __VIPR_FRAG6_H
#define __VIPR_FRAG6_H

#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "parse6.h"

static __always_inline void frag6_key(struct vipr_frag6_key *key, const struct packet6 *pkt)
{
	ipv6_copy(key->saddr, pkt->saddr);
	ipv6_copy(key->daddr, pkt->daddr);
	key->id = pkt->frag_id;
	key->proto = pkt->proto;
	key->pad[0] = 0;
	key->pad[1] = 0;
	key->pad[2] = 0;
}

/* Subprograms, as the rest of the IPv6 path's steps that need keys of their own (lb6.h). */
static __noinline void frag6_record(const struct packet6 *pkt)
{
	struct vipr_frag6_key key;
	struct vipr_frag_ports ports = { .sport = pkt->sport, .dport = pkt->dport };

	frag6_key(&key, pkt);
	/* A failed update loses only this datagram's later fragments, which are then counted. */
	bpf_map_update_elem(&vipr_fragments6_v1, &key, &ports, BPF_ANY);
}

static __noinline bool frag6_lookup_ports(struct packet6 *pkt)
{
	struct vipr_frag6_key key;
	struct vipr_frag_ports *ports;

	frag6_key(&key, pkt);
	ports = bpf_map_lookup_elem(&vipr_fragments6_v1, &key);
	if (!ports)
		return false;
	pkt->sport = ports->sport;
	pkt->dport = ports->dport;
	return true;
}

#endif /* __VIPR_FRAG6_H */
