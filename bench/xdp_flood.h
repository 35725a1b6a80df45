/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What bench/xdp-flood.c tells bench/xdp_flood.bpf.c before loading it: the only variable in the
 * program's .rodata, so the loader finds it at offset 0 of that map's initial value.
 */
#ifndef XDP_FLOOD_H
#define XDP_FLOOD_H

#include <linux/types.h>

/* Every frame is this long: Ethernet's minimum (the 58-byte SYN padded, as a NIC pads it). */
#define XDP_FLOOD_FRAME_LEN 60

struct xdp_flood_config {
	__u64 frame[8];    /* the template (flow 0), XDP_FLOOD_FRAME_LEN bytes, zero-padded */
	__u32 saddr0;      /* first source address, host order; flow n's is saddr0 + n / src_ports % src_ips */
	__u32 src_ips;     /* source addresses to cycle over */
	__u32 src_ports;   /* source ports to cycle over, from first_port up */
	__u32 flows;       /* src_ips * src_ports: the cycle */
	__u16 first_port;  /* flow 0's source port */
	__u16 ip_check0;   /* the template's IPv4 header checksum (flow 0), host order */
	__u16 l4_check0;   /* the template's UDP/TCP checksum (flow 0), host order */
	__u8 tcp;          /* 1: TCP SYN frames, 0: UDP */
	__u8 pad[1];
};

#endif
