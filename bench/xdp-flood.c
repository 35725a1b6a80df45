// SPDX-License-Identifier: Apache-2.0
/*
 * The north-south bench's packet generator: frames made by an XDP program (bench/xdp_flood.bpf.c)
 * that BPF_PROG_TEST_RUN runs with BPF_F_TEST_XDP_LIVE_FRAMES, the way xdp-trafficgen does: the
 * kernel puts the template into page-pool pages, runs the program on each (it writes the flow's
 * source and checksums) and sends what it returns XDP_TX for out of --ifname through the
 * driver's ndo_xdp_xmit, in batches of 64, no skb and no socket on the way. On veth the frames
 * land in the peer's receive queue as xdp_frames, as a NIC's would, so the receiving side must
 * poll (NAPI: an XDP program or GRO on the peer). Debian's xdp-trafficgen (xdp-tools 1.3.1)
 * cannot load on kernels that dropped the xdp_redirect_map tracepoints it probes (6.18 here).
 *
 *   xdp-flood --obj xdp_flood.bpf.o --ifname IF --src-mac MAC --dst-mac MAC --src IP --dst IP
 *             --dport PORT --proto udp|syn [--src-ips N] [--src-ports N] [--duration-ms 1000]
 *
 *   udp  UDP datagrams of 18 bytes (60-byte frames); the source cycles over N addresses (from
 *        --src up) and N ports (from 1024 up): with few of them, every flow is tracked after its
 *        first packet.
 *   syn  TCP SYNs (MSS option; 58-byte frames padded to 60), the source cycling likewise: with many
 *        addresses and ports, every packet is a connection attempt the node has not seen.
 *
 * Checksums (IPv4 header and L4, pseudo-header included) are complete in every frame. The
 * receiving queue drops what it has no room for, as a NIC's ring would: `sent` counts the frames
 * made, not the ones that found room. Prints one JSON object on stdout:
 *   {"proto":"udp","sent":N,"elapsed_s":S,"rate":R}
 * Exit status 0 when frames were sent, 1 otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "xdp_flood.h"

#define FRAME_MAX 64
#define FIRST_PORT 1024
/*
 * Frames of the first BPF_PROG_TEST_RUN call, which tells the rate; later calls last CALL_NS
 * (or what is left of the run). Calls are long because each ends by tearing down its page pool,
 * which waits for an RCU grace period (measured: 8-15 ms on a busy machine) with nothing sent;
 * with calls of 32,768 frames (~4 ms) the generator idled three quarters of the time.
 */
#define FIRST_CALL_FRAMES 32768
#define CALL_NS 250000000ull
#define BATCH 64

enum proto { PROTO_UDP, PROTO_SYN };

struct options {
	const char *obj, *ifname;
	uint8_t src_mac[6], dst_mac[6];
	uint32_t src, dst; /* host order */
	uint16_t dport;
	enum proto proto;
	uint32_t src_ips, src_ports;
	uint64_t duration_ns;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr, "usage: xdp-flood --obj OBJ --ifname IF --src-mac MAC --dst-mac MAC --src IP --dst IP "
			"--dport PORT --proto udp|syn [--src-ips N] [--src-ports N] [--duration-ms MS]\n");
	exit(2);
}

static void parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
		fprintf(stderr, "xdp-flood: '%s' is not a MAC address\n", s);
		exit(2);
	}
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
}

static uint32_t parse_ip(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1) {
		fprintf(stderr, "xdp-flood: '%s' is not an IPv4 address\n", s);
		exit(2);
	}
	return ntohl(a.s_addr);
}

static unsigned long parse_num(const char *name, const char *s, unsigned long lo, unsigned long hi)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "xdp-flood: %s %s: expected a whole number from %lu to %lu\n", name, s, lo, hi);
		exit(2);
	}
	return v;
}

/* Ones' complement sum of 16-bit big-endian words. */
static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

/* Writes flow number @flow's frame into @f; returns its length. */
static size_t build_frame(const struct options *o, uint64_t flow, uint8_t *f)
{
	uint32_t saddr = o->src + (uint32_t)(flow / o->src_ports % o->src_ips);
	uint16_t sport = (uint16_t)(FIRST_PORT + flow % o->src_ports);
	uint8_t *ip = f + 14, *l4 = ip + 20;
	size_t l4len = o->proto == PROTO_UDP ? 8 + 18 : 24;
	uint8_t l4proto = o->proto == PROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP;
	uint8_t pseudo[12];

	memset(f, 0, FRAME_MAX);
	memcpy(f, o->dst_mac, 6);
	memcpy(f + 6, o->src_mac, 6);
	put16(f + 12, ETHERTYPE_IP);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + l4len));
	put16(ip + 4, (uint16_t)flow);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = l4proto;
	put32(ip + 12, saddr);
	put32(ip + 16, o->dst);
	put16(ip + 10, fold(sum16(ip, 20, 0)));

	put16(l4, sport);
	put16(l4 + 2, o->dport);
	if (o->proto == PROTO_UDP) {
		put16(l4 + 4, (uint16_t)l4len);
		memcpy(l4 + 8, "vipr north-south!!", 18);
	} else {
		put32(l4 + 4, (uint32_t)(flow * 2654435761u)); /* sequence number */
		l4[12] = 6 << 4; /* data offset: 24 bytes */
		l4[13] = 0x02;   /* SYN */
		put16(l4 + 14, 64240);
		l4[20] = 2; /* MSS */
		l4[21] = 4;
		put16(l4 + 22, 1460);
	}
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = l4proto;
	put16(pseudo + 10, (uint16_t)l4len);
	uint16_t check = fold(sum16(l4, l4len, sum16(pseudo, 12, 0)));
	if (o->proto == PROTO_UDP && check == 0)
		check = 0xffff;
	put16(l4 + (o->proto == PROTO_UDP ? 6 : 16), check);
	return 14 + 20 + l4len;
}

static int silent(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

int main(int argc, char **argv)
{
	struct options o = { .src_ips = 1, .src_ports = 1, .duration_ns = 1000000000ull };
	int have = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(a, "--obj"))
			o.obj = v, have |= 128;
		else if (!strcmp(a, "--ifname"))
			o.ifname = v, have |= 1;
		else if (!strcmp(a, "--src-mac"))
			parse_mac(v, o.src_mac), have |= 2;
		else if (!strcmp(a, "--dst-mac"))
			parse_mac(v, o.dst_mac), have |= 4;
		else if (!strcmp(a, "--src"))
			o.src = parse_ip(v), have |= 8;
		else if (!strcmp(a, "--dst"))
			o.dst = parse_ip(v), have |= 16;
		else if (!strcmp(a, "--dport"))
			o.dport = (uint16_t)parse_num(a, v, 1, 65535), have |= 32;
		else if (!strcmp(a, "--proto")) {
			if (!strcmp(v, "udp"))
				o.proto = PROTO_UDP;
			else if (!strcmp(v, "syn"))
				o.proto = PROTO_SYN;
			else
				usage();
			have |= 64;
		} else if (!strcmp(a, "--src-ips"))
			o.src_ips = (uint32_t)parse_num(a, v, 1, 65536);
		else if (!strcmp(a, "--src-ports"))
			o.src_ports = (uint32_t)parse_num(a, v, 1, 65536 - FIRST_PORT);
		else if (!strcmp(a, "--duration-ms"))
			o.duration_ns = parse_num(a, v, 1, 3600000) * 1000000ull;
		else
			usage();
		i++;
	}
	if (have != 255)
		usage();

	int ifindex = (int)if_nametoindex(o.ifname);
	if (!ifindex) {
		fprintf(stderr, "xdp-flood: --ifname %s: no such interface in this network namespace\n", o.ifname);
		return 1;
	}
	uint8_t frame[FRAME_MAX];
	size_t len = XDP_FLOOD_FRAME_LEN;

	build_frame(&o, 0, frame); /* zero-filled to FRAME_MAX: a SYN's padding is zeros */

	libbpf_set_print(silent);
	struct bpf_object *obj = bpf_object__open_file(o.obj, NULL);
	if (!obj) {
		fprintf(stderr, "xdp-flood: --obj %s: cannot open it: %s (run 'make build')\n", o.obj, strerror(errno));
		return 1;
	}
	struct bpf_map *map, *rodata = NULL;
	bpf_object__for_each_map(map, obj)
		if (strstr(bpf_map__name(map), ".rodata"))
			rodata = map;
	size_t size = 0;
	const void *initial = rodata ? bpf_map__initial_value(rodata, &size) : NULL;
	struct xdp_flood_config cfg;
	if (!initial || size != sizeof(cfg)) {
		fprintf(stderr, "xdp-flood: --obj %s: its .rodata is not one struct xdp_flood_config\n", o.obj);
		return 1;
	}
	const uint8_t *ip = frame + 14, *l4 = ip + 20;
	cfg = (struct xdp_flood_config){
		.saddr0 = o.src,
		.src_ips = o.src_ips,
		.src_ports = o.src_ports,
		.flows = o.src_ips * o.src_ports,
		.first_port = FIRST_PORT,
		.ip_check0 = (uint16_t)(ip[10] << 8 | ip[11]),
		.l4_check0 = o.proto == PROTO_UDP ? (uint16_t)(l4[6] << 8 | l4[7]) : (uint16_t)(l4[16] << 8 | l4[17]),
		.tcp = o.proto == PROTO_SYN,
	};
	memcpy(cfg.frame, frame, XDP_FLOOD_FRAME_LEN);
	if (bpf_map__set_initial_value(rodata, &cfg, sizeof(cfg))) {
		fprintf(stderr, "xdp-flood: --obj %s: cannot set its configuration\n", o.obj);
		return 1;
	}
	int err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "xdp-flood: loading %s failed: %s\n", o.obj, strerror(-err));
		return 1;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "xdp_flood");
	if (!prog) {
		fprintf(stderr, "xdp-flood: %s has no program xdp_flood\n", o.obj);
		return 1;
	}
	int prog_fd = bpf_program__fd(prog);

	struct xdp_md ctx = { .data_end = (uint32_t)len, .ingress_ifindex = (uint32_t)ifindex };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = (uint32_t)len, .ctx_in = &ctx,
		    .ctx_size_in = sizeof(ctx), .repeat = FIRST_CALL_FRAMES, .batch_size = BATCH,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES);
	uint64_t sent = 0, start = now_ns(), end = start + o.duration_ns, t = start;

	while (t < end) {
		err = bpf_prog_test_run_opts(prog_fd, &opts);
		if (err) {
			fprintf(stderr, "xdp-flood: BPF_PROG_TEST_RUN (live frames) on %s failed: %s\n", o.ifname, strerror(errno));
			return 1;
		}
		sent += opts.repeat;
		t = now_ns();
		/* opts.duration: the kernel's mean ns per frame over the call, teardown left out. */
		uint64_t left = t < end ? end - t : 0, per_frame = opts.duration ? opts.duration : 1;
		uint64_t frames = (left < CALL_NS ? left : CALL_NS) / per_frame;
		opts.repeat = (uint32_t)(frames < BATCH ? BATCH : frames > (1u << 30) ? (1u << 30) : frames);
	}
	double elapsed = (double)(t - start) / 1e9;
	printf("{\"proto\":\"%s\",\"sent\":%llu,\"elapsed_s\":%.6f,\"rate\":%.1f}\n",
	       o.proto == PROTO_UDP ? "udp" : "syn", (unsigned long long)sent, elapsed,
	       elapsed > 0 ? (double)sent / elapsed : 0.0);
	bpf_object__close(obj);
	return sent > 0 ? 0 : 1;
}
