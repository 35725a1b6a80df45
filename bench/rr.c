// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's load generator: one transaction at a time (never more than one in flight, so
 * each latency is that of one request/response through the dataplane, not of a queue), timed
 * with CLOCK_MONOTONIC, latencies kept and sorted for exact percentiles.
 *
 *   rr --mode rr|crr|udp --target IP:PORT|[IPv6]:PORT [--duration-ms 1000] [--warmup-ms 200] [--size 64]
 *
 *   rr   one TCP connection (set up before timing), SIZE bytes sent and echoed back per
 *        transaction: the established path, served by conntrack in every dataplane.
 *   crr  per transaction: socket, connect, send, receive the echo, close. The new-connection
 *        path, where a rule walk shows (netperf's TCP_CRR).
 *   udp  per transaction: a new UDP socket (so a new source port, as DNS clients do), send,
 *        receive the echo (1 s timeout: a lost datagram counts as an error), close.
 *
 * Transactions finished during the first WARMUP ms are discarded; the run then lasts DURATION ms.
 * Prints one JSON object on stdout:
 *   {"mode":"crr","target":"10.0.0.1:80","samples":N,"errors":E,"elapsed_s":S,"rate":R,
 *    "p50_us":..,"p90_us":..,"p99_us":..,"mean_us":..,"min_us":..,"max_us":..,"first_error":".."}
 * Exit status 0 when at least one transaction was measured, 1 otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_RR, MODE_CRR, MODE_UDP };

struct samples {
	uint64_t *ns;
	size_t len, cap;
};

static const char *first_error;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void push(struct samples *s, uint64_t v)
{
	if (s->len == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 65536;
		s->ns = realloc(s->ns, s->cap * sizeof(*s->ns));
		if (!s->ns) {
			fprintf(stderr, "rr: out of memory\n");
			exit(1);
		}
	}
	s->ns[s->len++] = v;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static double pct_us(const struct samples *s, double p)
{
	size_t rank = (size_t)(p / 100.0 * (double)s->len + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > s->len)
		rank = s->len;
	return (double)s->ns[rank - 1] / 1000.0;
}

static void note_error(const char *what)
{
	if (!first_error)
		first_error = what;
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int recv_all(int fd, char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = recv(fd, buf, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Where transactions go: an IPv4 or an IPv6 address and port. */
struct target {
	struct sockaddr_storage addr;
	socklen_t len;
	int family;
};

static int tcp_connect(const struct target *target)
{
	int one = 1;
	int fd = socket(target->family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		note_error("socket");
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&target->addr, target->len) < 0) {
		note_error(errno == ECONNREFUSED ? "connect: connection refused"
			   : errno == ETIMEDOUT	 ? "connect: timed out"
			   : errno == EADDRNOTAVAIL ? "connect: no free local port"
						   : "connect");
		close(fd);
		return -1;
	}
	return fd;
}

/* One request/response on an open connection; 0 on success. */
static int tcp_transaction(int fd, char *msg, char *reply, size_t size)
{
	if (send_all(fd, msg, size) < 0 || recv_all(fd, reply, size) < 0) {
		note_error("tcp send/receive");
		return -1;
	}
	return 0;
}

static int crr_transaction(const struct target *target, char *msg, char *reply, size_t size)
{
	int fd = tcp_connect(target);
	int rc;

	if (fd < 0)
		return -1;
	rc = tcp_transaction(fd, msg, reply, size);
	close(fd);
	return rc;
}

static int udp_transaction(const struct target *target, char *msg, char *reply, size_t size)
{
	int fd = socket(target->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = -1;

	if (fd < 0) {
		note_error("socket");
		return -1;
	}
	/* connect() picks a fresh ephemeral source port and filters replies to this peer. */
	if (connect(fd, (const struct sockaddr *)&target->addr, target->len) < 0) {
		note_error("udp connect");
		goto out;
	}
	if (send(fd, msg, size, 0) != (ssize_t)size) {
		note_error("udp send");
		goto out;
	}
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 1000) != 1) {
		note_error("udp reply timed out");
		goto out;
	}
	if (recv(fd, reply, size, 0) != (ssize_t)size) {
		note_error("udp receive");
		goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: rr --mode rr|crr|udp --target IP:PORT|[IPv6]:PORT [--duration-ms MS] [--warmup-ms MS] [--size BYTES]\n");
	exit(2);
}

static long num_arg(const char *s, long min, long max)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < min || v > max)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	enum mode mode = MODE_RR;
	const char *mode_name = NULL, *target_arg = NULL;
	long duration_ms = 1000, warmup_ms = 200, size = 64;
	struct target target = { 0 };

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--mode") == 0)
			mode_name = argv[++i];
		else if (strcmp(argv[i], "--target") == 0)
			target_arg = argv[++i];
		else if (strcmp(argv[i], "--duration-ms") == 0)
			duration_ms = num_arg(argv[++i], 1, 3600000);
		else if (strcmp(argv[i], "--warmup-ms") == 0)
			warmup_ms = num_arg(argv[++i], 0, 3600000);
		else if (strcmp(argv[i], "--size") == 0)
			size = num_arg(argv[++i], 1, 65536);
		else
			usage();
	}
	if (!mode_name || !target_arg)
		usage();
	if (strcmp(mode_name, "rr") == 0)
		mode = MODE_RR;
	else if (strcmp(mode_name, "crr") == 0)
		mode = MODE_CRR;
	else if (strcmp(mode_name, "udp") == 0)
		mode = MODE_UDP;
	else
		usage();

	char host[64];
	const char *colon = strrchr(target_arg, ':');
	/* `[v6]:port`: the address is between the brackets. */
	int bracketed = target_arg[0] == '[';
	const char *host_start = target_arg + bracketed;
	size_t host_len = colon ? (size_t)(colon - host_start) - (size_t)bracketed : 0;

	if (!colon || colon < host_start || host_len >= sizeof(host) || (bracketed && colon[-1] != ']'))
		usage();
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	uint16_t port = htons((uint16_t)num_arg(colon + 1, 1, 65535));
	struct sockaddr_in *sin = (struct sockaddr_in *)&target.addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&target.addr;

	if (!bracketed && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = port;
		target.len = sizeof(*sin);
	} else if (bracketed && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		target.len = sizeof(*sin6);
	} else {
		usage();
	}
	target.family = target.addr.ss_family;

	char *msg = malloc((size_t)size), *reply = malloc((size_t)size);

	if (!msg || !reply)
		return 1;
	memset(msg, 'v', (size_t)size);

	int conn = -1;

	if (mode == MODE_RR) {
		conn = tcp_connect(&target);
		if (conn < 0) {
			fprintf(stderr, "rr: %s to %s: %s\n", first_error, target_arg, strerror(errno));
			return 1;
		}
	}

	struct samples s = { 0 };
	unsigned long errors = 0;
	uint64_t start = now_ns();
	uint64_t measure_from = start + (uint64_t)warmup_ms * 1000000ull;
	uint64_t end = measure_from + (uint64_t)duration_ms * 1000000ull;
	uint64_t measured_start = 0, t1 = start;

	while (t1 < end) {
		uint64_t t0 = now_ns();
		int rc;

		if (mode == MODE_RR)
			rc = tcp_transaction(conn, msg, reply, (size_t)size);
		else if (mode == MODE_CRR)
			rc = crr_transaction(&target, msg, reply, (size_t)size);
		else
			rc = udp_transaction(&target, msg, reply, (size_t)size);
		t1 = now_ns();
		if (t0 < measure_from)
			continue;
		if (measured_start == 0)
			measured_start = t0;
		if (rc < 0) {
			errors++;
			if (mode == MODE_RR)
				break; /* the one connection is gone */
			continue;
		}
		push(&s, t1 - t0);
	}
	if (conn >= 0)
		close(conn);

	double elapsed = measured_start ? (double)(t1 - measured_start) / 1e9 : 0;

	if (s.len == 0) {
		fprintf(stderr, "rr: no transaction completed to %s (%lu errors, first: %s)\n", target_arg, errors,
			first_error ? first_error : "none");
		return 1;
	}
	qsort(s.ns, s.len, sizeof(*s.ns), cmp_u64);
	double sum = 0;

	for (size_t i = 0; i < s.len; i++)
		sum += (double)s.ns[i];
	printf("{\"mode\":\"%s\",\"target\":\"%s\",\"samples\":%zu,\"errors\":%lu,\"elapsed_s\":%.6f,\"rate\":%.1f,"
	       "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,\"min_us\":%.2f,\"max_us\":%.2f,"
	       "\"first_error\":%s%s%s}\n",
	       mode_name, target_arg, s.len, errors, elapsed, elapsed > 0 ? (double)s.len / elapsed : 0, pct_us(&s, 50),
	       pct_us(&s, 90), pct_us(&s, 99), sum / (double)s.len / 1000.0, (double)s.ns[0] / 1000.0,
	       (double)s.ns[s.len - 1] / 1000.0, first_error ? "\"" : "", first_error ? first_error : "null",
	       first_error ? "\"" : "");
	return 0;
}
