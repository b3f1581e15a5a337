#define _GNU_SOURCE
/*
 * fanout.c: the fan-out benchmark client. Parks N live readers (long-poll
 * or SSE) on one stream, appends once, and reports how long each reader
 * took to receive the append: p50, p99, max, and how many got it.
 *
 *   fanout PORT STREAM-PATH N long-poll|sse [SETTLE-MS]
 *
 * Readers use keep-alive connections; FANOUT_CLOSE=1 sends Connection: close.
 * FANOUT_HOLD_FILE=PATH: see below (memory with N readers parked).
 *
 * One thread and epoll, so the client's own overhead stays small next to
 * the server's (a Node client spends ~60 ms just handling 1,000 responses).
 * Loopback only: it connects to 127.0.0.1.
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct reader {
	int	fd;
	int	ready;		/* SSE: initial control event seen */
	double	got_ms;		/* when the append arrived, or -1 */
	size_t	n;
	char	buf[8192];
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
dial(int port)
{
	struct sockaddr_in sin;
	int fd, one = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
send_all(int fd, const char *p, size_t n)
{
	ssize_t k;

	while (n > 0) {
		if ((k = write(fd, p, n)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* A blocking request for setup and the append; returns the status. */
static int
request(int port, const char *method, const char *path, const char *body,
    char *tail_out, size_t tail_sz)
{
	char req[1024], resp[4096], *h;
	ssize_t k;
	size_t n = 0;
	int fd, status = -1;

	if ((fd = dial(port)) == -1)
		return -1;
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", method, path, strlen(body), body);
	if (send_all(fd, req, strlen(req)) == 0) {
		while (n < sizeof(resp) - 1 &&
		    (k = read(fd, resp + n, sizeof(resp) - 1 - n)) > 0)
			n += (size_t)k;
		resp[n] = '\0';
		sscanf(resp, "HTTP/1.%*d %d", &status);
		if (tail_out && (h = strcasestr(resp, "Stream-Next-Offset: ")))
			sscanf(h + 20, "%63[0-9_]", tail_out);
		(void)tail_sz;
	}
	close(fd);
	return status;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char *argv[])
{
	struct epoll_event ev, evs[512];
	struct reader *rd;
	struct rlimit rl;
	char path[512], req[1024], tail[64] = "";
	double t0, *lat, settle;
	struct reader *ap;
	const char *hold;
	int port, n, sse, ep, i, k, fd, parked = 0, got = 0, nl = 0;
	int status = -1;
	ssize_t r;

	if (argc < 5) {
		fprintf(stderr, "usage: fanout PORT STREAM-PATH N "
		    "long-poll|sse [SETTLE-MS]\n");
		return 2;
	}
	port = atoi(argv[1]);
	n = atoi(argv[3]);
	sse = strcmp(argv[4], "sse") == 0;
	settle = argc > 5 ? atof(argv[5]) : 1000 + n;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (request(port, "PUT", argv[2], "", NULL, 0) < 0 ||
	    request(port, "POST", argv[2], "x", tail, sizeof(tail)) != 204 ||
	    !*tail) {
		fprintf(stderr, "fanout: cannot create %s\n", argv[2]);
		return 1;
	}
	snprintf(path, sizeof(path), "%s?offset=%s&live=%s", argv[2], tail,
	    sse ? "sse" : "long-poll");
	rd = calloc((size_t)n + 1, sizeof(*rd));	/* + the appender */
	lat = calloc((size_t)n, sizeof(*lat));
	ep = epoll_create1(0);
	/*
	 * Keep-alive, as real long-poll clients do: they reuse the
	 * connection for their next poll. (Connection: close adds two TCP
	 * teardowns per delivery: +~10 ms at p99 for N = 1,000 here.)
	 */
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	    "%s\r\n", path, getenv("FANOUT_CLOSE") ? "Connection: close\r\n" :
	    "");
	for (i = 0; i < n; i++) {
		rd[i].got_ms = -1;
		if ((rd[i].fd = dial(port)) == -1 ||
		    send_all(rd[i].fd, req, strlen(req)) == -1) {
			fprintf(stderr, "fanout: reader %d: %s\n", i,
			    strerror(errno));
			return 1;
		}
		fcntl(rd[i].fd, F_SETFL, O_NONBLOCK);
		ev.events = EPOLLIN;
		ev.data.u32 = (unsigned)i;
		epoll_ctl(ep, EPOLL_CTL_ADD, rd[i].fd, &ev);
	}
	/*
	 * SSE readers announce themselves with the first control event;
	 * long-poll readers say nothing until they answer, so give the pool
	 * time to park them.
	 */
	t0 = now_ms();
	while (now_ms() - t0 < (sse ? 30000 : settle) &&
	    (!sse || parked < n)) {
		k = epoll_wait(ep, evs, 512, 50);
		for (i = 0; i < k; i++) {
			struct reader *x = &rd[evs[i].data.u32];

			r = read(x->fd, x->buf + x->n, sizeof(x->buf) - 1 -
			    x->n);
			if (r <= 0)
				continue;
			x->n += (size_t)r;
			x->buf[x->n] = '\0';
			if (!x->ready && strstr(x->buf, "event: control")) {
				x->ready = 1;
				parked++;
				x->n = 0;
			}
		}
	}
	if (sse && parked < n)
		fprintf(stderr, "fanout: only %d of %d SSE readers parked\n",
		    parked, n);
	/*
	 * FANOUT_HOLD_FILE: with every reader parked, create that file and
	 * wait (up to 60 s) until somebody removes it, so that the bench can
	 * measure the server's memory with N readers waiting.
	 */
	if ((hold = getenv("FANOUT_HOLD_FILE")) != NULL) {
		if ((fd = open(hold, O_WRONLY | O_CREAT | O_TRUNC, 0644)) == -1) {
			fprintf(stderr, "fanout: %s: %s\n", hold,
			    strerror(errno));
			return 1;
		}
		close(fd);
		t0 = now_ms();
		while (access(hold, F_OK) == 0 && now_ms() - t0 < 60000)
			usleep(10000);
	}
	/*
	 * The append goes out on a connection of its own, read in the same
	 * loop as the readers: a writer is not a reader, and a blocking
	 * append would hold back the readers' clocks until it returned.
	 */
	ap = &rd[n];
	ap->got_ms = -1;
	snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	    "Content-Type: text/plain\r\nContent-Length: 4\r\n"
	    "Connection: close\r\n\r\ntick", argv[2]);
	if ((ap->fd = dial(port)) == -1) {
		fprintf(stderr, "fanout: append: %s\n", strerror(errno));
		return 1;
	}
	fcntl(ap->fd, F_SETFL, O_NONBLOCK);
	ev.events = EPOLLIN;
	ev.data.u32 = (unsigned)n;
	epoll_ctl(ep, EPOLL_CTL_ADD, ap->fd, &ev);
	t0 = now_ms();
	if (send_all(ap->fd, req, strlen(req)) == -1) {
		fprintf(stderr, "fanout: append: %s\n", strerror(errno));
		return 1;
	}
	while ((got < n || ap->fd != -1) && now_ms() - t0 < 20000) {
		k = epoll_wait(ep, evs, 512, 100);
		for (i = 0; i < k; i++) {
			struct reader *x = &rd[evs[i].data.u32];

			fd = x->fd;
			r = read(fd, x->buf + x->n, sizeof(x->buf) - 1 - x->n);
			if (r > 0) {
				x->n += (size_t)r;
				x->buf[x->n] = '\0';
			}
			if (x == ap) {
				if (r == 0 || (r < 0 && errno != EAGAIN)) {
					sscanf(ap->buf, "HTTP/1.%*d %d", &status);
					ap->got_ms = now_ms() - t0;
					epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
					close(fd);
					ap->fd = -1;
				}
			} else if (x->got_ms < 0 && strstr(x->buf, "tick")) {
				x->got_ms = now_ms() - t0;
				lat[nl++] = x->got_ms;
				got++;
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
			} else if (r == 0 || (r < 0 && errno != EAGAIN)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
			} else if (x->n > sizeof(x->buf) - 512)
				x->n = 0;
		}
	}
	if (status != 204) {
		fprintf(stderr, "fanout: append answered %d\n", status);
		return 1;
	}
	qsort(lat, (size_t)nl, sizeof(*lat), cmp);
	printf("fanout %-9s N=%-5d delivered=%-5d p50=%.1fms p99=%.1fms "
	    "max=%.1fms append=%.1fms\n", sse ? "sse" : "long-poll", n, got,
	    nl ? lat[nl / 2] : -1.0,
	    nl ? lat[(int)((nl - 1) * 0.99)] : -1.0,
	    nl ? lat[nl - 1] : -1.0, ap->got_ms);
	return got == n ? 0 : 1;
}
