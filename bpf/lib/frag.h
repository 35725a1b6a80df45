/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments of service traffic. Only a datagram's first fragment carries the L4 header, so
 * only it can be matched to a flow; the later ones are translated as the flow of their first,
 * whose ports are remembered by (source, destination, id, protocol) in vipr_fragments_v1 (Cilium's
 * ipv4_frag_*). Every first fragment is recorded, whether or not its flow turns out to be a
 * service's: which one it is depends on ports the later fragments do not have.
 *
 * A later fragment that arrives before its first has no ports to be matched with and is dropped
 * (VIPR_STAT_DROP_FRAG_NOT_FOUND), as Cilium does: passed on, a fragment of service traffic would
 * go to the service address untranslated, and the datagram could never be reassembled anyway.
 * Senders emit fragments in order and one path keeps them so; reordering networks lose such
 * datagrams, which UDP applications retry and TCP (which avoids fragmenting) rarely sees.
 */
#ifndef __VIPR_FRAG_H
#define __VIPR_FRAG_H

#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "parse.h"

static __always_inline void frag4_key(struct vipr_frag_key *key, const struct packet *pkt)
{
	key->saddr = pkt->saddr;
	key->daddr = pkt->daddr;
	key->id = pkt->ip_id;
	key->proto = pkt->proto;
	key->pad = 0;
}

/* A first fragment: its ports are the datagram's. */
static __always_inline void frag4_record(const struct packet *pkt)
{
	struct vipr_frag_key key;
	struct vipr_frag_ports ports = { .sport = pkt->sport, .dport = pkt->dport };

	frag4_key(&key, pkt);
	/* A failed update loses only this datagram's later fragments, which are then counted. */
	bpf_map_update_elem(&vipr_fragments_v1, &key, &ports, BPF_ANY);
}

/* A later fragment: fills in the ports of its first; false when that was not seen. */
static __always_inline bool frag4_lookup_ports(struct packet *pkt)
{
	struct vipr_frag_key key;
	struct vipr_frag_ports *ports;

	frag4_key(&key, pkt);
	ports = bpf_map_lookup_elem(&vipr_fragments_v1, &key);
	if (!ports)
		return false;
	pkt->sport = ports->sport;
	pkt->dport = ports->dport;
	return true;
}

#endif /* __VIPR_FRAG_H */
