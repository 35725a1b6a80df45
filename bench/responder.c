// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's backend: echoes whatever it receives, on TCP and UDP, from one epoll loop in
 * one thread (no thread hand-off between a request and its reply, so the server adds as little
 * and as steady a cost as it can). `vipr bench` starts one in every backend pod of its labs.
 *
 *   responder --tcp PORT --udp PORT
 *
 * Listens on 0.0.0.0 and, where the kernel has IPv6, on :: (IPv6-only sockets: an IPv4 client
 * stays on a plain IPv4 socket). Prints `responder: listening tcp PORT udp PORT` once every
 * socket is bound; runs until SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define BUF_SIZE 65536

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "responder: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int parse_port(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < 1 || v > 65535) {
		fprintf(stderr, "responder: bad port '%s'\n", s);
		exit(2);
	}
	return (int)v;
}

/* A socket bound to the wildcard address of `family`; -1 when the kernel has no such family. */
static int bound_socket(int family, int type, int port)
{
	struct sockaddr_in addr4 = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
	struct sockaddr_in6 addr6 = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT };
	int one = 1;
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		if (family == AF_INET6 && errno == EAFNOSUPPORT)
			return -1;
		die("socket");
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("SO_REUSEADDR");
	if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		die("IPV6_V6ONLY");
	if (family == AF_INET6 ? bind(fd, (struct sockaddr *)&addr6, sizeof(addr6)) : bind(fd, (struct sockaddr *)&addr4, sizeof(addr4)))
		die("bind");
	return fd;
}

static void watch(int ep, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

/* Sends all of buf; the peer reads its reply before sending more, so a short write is rare. */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* Reply buffer full: this echo server only ever holds one small reply. */
				usleep(10);
				continue;
			}
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char buf[BUF_SIZE];
	struct epoll_event events[MAX_EVENTS];
	int tcp_port = 0, udp_port = 0;
	int one = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--tcp") == 0 && i + 1 < argc)
			tcp_port = parse_port(argv[++i]);
		else if (strcmp(argv[i], "--udp") == 0 && i + 1 < argc)
			udp_port = parse_port(argv[++i]);
		else {
			fprintf(stderr, "usage: responder --tcp PORT --udp PORT\n");
			return 2;
		}
	}
	if (tcp_port == 0 || udp_port == 0) {
		fprintf(stderr, "usage: responder --tcp PORT --udp PORT\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);

	/* [0]: IPv4, [1]: IPv6 (-1 without IPv6). */
	int lfds[2] = { bound_socket(AF_INET, SOCK_STREAM, tcp_port), bound_socket(AF_INET6, SOCK_STREAM, tcp_port) };
	int ufds[2] = { bound_socket(AF_INET, SOCK_DGRAM, udp_port), bound_socket(AF_INET6, SOCK_DGRAM, udp_port) };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		die("epoll_create1");
	for (int f = 0; f < 2; f++) {
		if (lfds[f] >= 0) {
			if (listen(lfds[f], 4096) < 0)
				die("listen");
			watch(ep, lfds[f]);
		}
		if (ufds[f] >= 0)
			watch(ep, ufds[f]);
	}
	printf("responder: listening tcp %d udp %d\n", tcp_port, udp_port);
	fflush(stdout);

	while (!stopping) {
		int n = epoll_wait(ep, events, MAX_EVENTS, 1000);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;

			if (fd == lfds[0] || fd == lfds[1]) {
				for (;;) {
					int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

					if (c < 0)
						break;
					/* Replies leave at once: Nagle would hold them for the client's ACK. */
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					watch(ep, c);
				}
			} else if (fd == ufds[0] || fd == ufds[1]) {
				for (;;) {
					struct sockaddr_storage peer;
					socklen_t plen = sizeof(peer);
					ssize_t r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen);

					if (r < 0)
						break;
					sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&peer, plen);
				}
			} else {
				ssize_t r = recv(fd, buf, sizeof(buf), 0);

				if (r > 0) {
					if (send_all(fd, buf, (size_t)r) < 0)
						close(fd);
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					/* Closing removes it from the epoll set. */
					close(fd);
				}
			}
		}
	}
	return 0;
}
