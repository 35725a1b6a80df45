/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Headers outside an skb's linear data. TC programs read packets directly only up to
 * skb->data_end, the end of the linear part; the rest sits in page fragments. Some senders leave
 * headers there: an AF_PACKET socket (tap and vhost backends, packet generators) sending a frame
 * larger than a page puts only the Ethernet header in the linear part, some drivers split headers
 * at arbitrary points, tunnels and GRO leave partial headers. Such a packet then looks short and
 * would pass untranslated. As Cilium's revalidate_data_pull, the headers are pulled into the
 * linear part when, and only when, the parse ran out of linear data while the packet has more:
 * the common path costs one comparison.
 */
#ifndef __VIPR_PULL_H
#define __VIPR_PULL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "lb6.h"

/*
 * Enough for every header the programs read: Ethernet, IPv4 with options, and either a TCP
 * header or an ICMP error's quote up to the quoted TCP checksum (14 + 60 + 8 + 20 + 18 = 120).
 */
#define PULL_LEN 128

/* Parses @skb, pulling its headers into the linear data when they are not; counts it. */
static __always_inline enum lb_packet tc_lb4_parse(struct __sk_buff *skb, struct packet *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	enum parse_result r;
	__u32 linear = data_end - data;

	r = parse_ipv4_l4(data, data_end, pkt);

	if (r == PARSE_SHORT && skb->len > linear &&
	    !bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN)) {
		stats_count(VIPR_STAT_PULLED, skb->len);
		r = parse_ipv4_l4((void *)(long)skb->data, (void *)(long)skb->data_end, pkt);
	}
	return lb4_classify(r, pkt, skb->len);
}

/*
 * IPv6: Ethernet, IPv6 and extension headers, then TCP or an ICMPv6 error's quote. Extension
 * headers have no fixed bound; a chain longer than this pulls only what fits and parses as short.
 */
#define PULL6_LEN 256

static __always_inline enum lb_packet tc_lb6_parse(struct __sk_buff *skb, struct packet6 *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	enum parse_result r;
	__u32 linear = data_end - data;

	r = parse_ipv6_l4(data, data_end, pkt);

	if (r == PARSE_SHORT && skb->len > linear &&
	    !bpf_skb_pull_data(skb, skb->len < PULL6_LEN ? skb->len : PULL6_LEN)) {
		stats_count(VIPR_STAT_PULLED, skb->len);
		r = parse_ipv6_l4((void *)(long)skb->data, (void *)(long)skb->data_end, pkt);
	}
	return lb6_classify(r, pkt, skb->len);
}

#endif /* __VIPR_PULL_H */
