/*
 * ds-notify.c: ds-notify, the wake-up daemon (protocol in notify.h).
 *
 * One epoll loop. It keeps, for every stream id some worker subscribed to,
 * the list of worker connections to wake, and forwards each publish to
 * them. It holds no durable state: if it dies, workers fall back to polling
 * and re-subscribe when it comes back. It also makes the interest table
 * (see notify.h), hands it to every worker that connects, and uncounts the
 * subscriptions it drops.
 */
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fcgi-app/log.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/privdrop.h"

#define NBUCKETS 4096

struct sub {
	uint64_t	 id;
	int		*fds;		/* subscribed connections */
	size_t		 n, cap;
	struct sub	*next;
};

struct conn {
	uint64_t	*ids;		/* what this connection subscribed */
	size_t		 n, cap;
};

static struct sub	*subs[NBUCKETS];
static _Atomic uint32_t	*table;		/* the interest table, or NULL */
static int		 table_fd = -1;
static struct conn	*conns;		/* indexed by fd */
static size_t		 nconns;
static volatile sig_atomic_t quit;

static void
on_signal(int sig)
{
	(void)sig;
	quit = 1;
}

static struct sub **
sub_slot(uint64_t id)
{
	struct sub **pp = &subs[notify_slot(id) % NBUCKETS];

	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/* Appends v to a growable array; returns -1 when out of memory. */
static int
push(void *arrp, size_t *n, size_t *cap, size_t sz, const void *v)
{
	void **arr = arrp;
	void *na;

	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		if ((na = realloc(*arr, *cap * sz)) == NULL)
			return -1;
		*arr = na;
	}
	memcpy((char *)*arr + *n * sz, v, sz);
	(*n)++;
	return 0;
}

/*
 * Sends a NOTIFY_WAKE for id to one worker. Never blocks the loop on a
 * slow worker: a wake-up it misses is covered by its periodic re-check.
 */
static void
wake(int fd, uint64_t id)
{
	struct notify_msg m;

	memset(&m, 0, sizeof(m));
	m.type = NOTIFY_WAKE;
	m.id = id;
	(void)send(fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Takes a subscription of id out of the interest table; never below 0. */
static void
uncount(uint64_t id)
{
	_Atomic uint32_t *slot;
	uint32_t v;

	if (table == NULL)
		return;
	slot = notify_count(table, id);
	v = atomic_load(slot);
	while (v > 0 && !atomic_compare_exchange_weak(slot, &v, v - 1))
		;
}

/*
 * A new subscriber of id whose slot was published since it counted itself
 * in (gen) may have lost that publish to the order epoll gave us: wake it.
 */
static void
woken_if_moved(int fd, uint64_t id, uint32_t gen)
{
	if (table != NULL && (gen & NOTIFY_COUNTED) &&
	    (atomic_load(notify_gen(table, id)) & NOTIFY_GEN_MASK) !=
	    (gen & NOTIFY_GEN_MASK))
		wake(fd, id);
}

static void
subscribe(int fd, uint64_t id, uint32_t gen)
{
	struct sub **pp = sub_slot(id), *s = *pp;
	struct conn *c = &conns[fd];
	size_t i;

	/*
	 * The worker counted this SUB in (or we do, for one that could not):
	 * a SUB that makes no subscription here (a repeat, after its UNSUB
	 * was lost; no memory) is counted out at once, or its slot would stay
	 * up for good.
	 */
	if (table && !(gen & NOTIFY_COUNTED))
		atomic_fetch_add(notify_count(table, id), 1);
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL) {
			uncount(id);
			return;
		}
		s->id = id;
		*pp = s;
	}
	for (i = 0; i < s->n; i++)
		if (s->fds[i] == fd) {
			uncount(id);
			woken_if_moved(fd, id, gen);
			return;
		}
	if (push(&s->fds, &s->n, &s->cap, sizeof(int), &fd) == -1) {
		ds_app_log("out of memory");
		uncount(id);
		if (s->n == 0) {
			*pp = s->next;
			free(s->fds);
			free(s);
		}
		return;
	}
	if (push(&c->ids, &c->n, &c->cap, sizeof(uint64_t), &id) == -1) {
		/* Not dropped with the connection: leave it counted. */
		ds_app_log("out of memory");
	}
	woken_if_moved(fd, id, gen);
}

static void
unsubscribe(int fd, uint64_t id, int from_conn)
{
	struct sub **pp = sub_slot(id), *s = *pp;
	struct conn *c = &conns[fd];
	size_t i;

	if (s) {
		for (i = 0; i < s->n; i++)
			if (s->fds[i] == fd) {
				s->fds[i] = s->fds[--s->n];
				uncount(id);
				break;
			}
		if (s->n == 0) {
			*pp = s->next;
			free(s->fds);
			free(s);
		}
	}
	if (from_conn)
		for (i = 0; i < c->n; i++)
			if (c->ids[i] == id) {
				c->ids[i] = c->ids[--c->n];
				break;
			}
}

static void
drop(int ep, int fd)
{
	struct conn *c = &conns[fd];
	size_t i;

	for (i = 0; i < c->n; i++)
		unsubscribe(fd, c->ids[i], 0);
	free(c->ids);
	memset(c, 0, sizeof(*c));
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
}

/*
 * A worker that has just connected may have committed appends before it
 * could publish them (it starts serving before it connects, and connects
 * again after a restart of ours at its own pace): every subscriber looks
 * again. Rare, and a wake-up is only a hint.
 */
static void
wake_everyone(void)
{
	struct sub *s;
	size_t b, i;

	for (b = 0; b < NBUCKETS; b++)
		for (s = subs[b]; s; s = s->next)
			for (i = 0; i < s->n; i++)
				wake(s->fds[i], s->id);
}

/* Forwards a publish to every subscriber but the publisher. */
static void
publish(int from, uint64_t id)
{
	struct sub *s = *sub_slot(id);
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		if (s->fds[i] != from)
			wake(s->fds[i], id);
}

/*
 * Makes the interest table: shared memory of its own, zeroed. Without it
 * (logged), workers publish every append.
 */
static void
table_make(void)
{
	void *p;

	table_fd = memfd_create("ds-notify-interest", MFD_CLOEXEC);
	if (table_fd == -1 ||
	    ftruncate(table_fd, NOTIFY_TABLE_BYTES) == -1 ||
	    (p = mmap(NULL, NOTIFY_TABLE_BYTES,
	    PROT_READ | PROT_WRITE, MAP_SHARED, table_fd, 0)) == MAP_FAILED) {
		ds_app_log("interest table: %s; workers will publish every "
		    "append", strerror(errno));
		if (table_fd != -1)
			close(table_fd);
		table_fd = -1;
		return;
	}
	table = p;
}

/*
 * Greets a new connection with NOTIFY_HELLO and the interest table. Returns
 * 0, or -1 when the worker cannot be told (it is then dropped, and dials
 * again).
 */
static int
greet(int fd)
{
	union {
		struct cmsghdr	 h;
		char		 buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct notify_msg m;
	struct iovec iov = { &m, sizeof(m) };
	struct msghdr msg;
	struct cmsghdr *c;

	memset(&m, 0, sizeof(m));
	m.type = NOTIFY_HELLO;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (table_fd != -1) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &table_fd, sizeof(int));
	}
	return sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) ==
	    (ssize_t)sizeof(m) ? 0 : -1;
}

static int
listen_on(const char *path)
{
	struct sockaddr_un sun;
	int fd, probe;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	/* A socket file nobody answers on is left over from a crash. */
	if ((probe = socket(AF_UNIX, SOCK_SEQPACKET, 0)) != -1) {
		if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			ds_app_log("another ds-notify already serves %s",
			    path);
			close(probe);
			return -1;
		}
		close(probe);
	}
	unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(path, 0660) == -1 || listen(fd, 512) == -1) {
		ds_app_log("listen on %s: %s", path, strerror(errno));
		return -1;
	}
	return fd;
}

static void
usage(void)
{
	fprintf(stderr, "usage: ds-notify --socket PATH [--user NAME] "
	    "[-n|--check]\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "check", no_argument, NULL, 'n' },
		{ "user", required_argument, NULL, 'u' },
		{ NULL, 0, NULL, 0 }
	};
	struct epoll_event ev, evs[256];
	struct notify_msg m;
	struct sockaddr_un sun;
	struct sigaction sa;
	struct rlimit rl;
	const char *path = NULL, *user = NULL;
	uid_t uid = 0;
	gid_t gid = 0;
	char dir[sizeof(sun.sun_path)], *slash;
	int ch, check = 0, lfd, ep, n, i, fd;
	ssize_t k;

	while ((ch = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			path = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'u':
			user = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || path == NULL)
		usage();
	/* Check the configuration before acquiring anything. */
	if (strlen(path) >= sizeof(sun.sun_path)) {
		ds_app_log("socket path longer than %zu bytes: %s",
		    sizeof(sun.sun_path) - 1, path);
		return 2;
	}
	strcpy(dir, path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if (access(dir[0] ? dir : "/", W_OK | X_OK) == -1) {
		ds_app_log("cannot create a socket in %s: %s",
		    dir, strerror(errno));
		return 2;
	}
	if (user && ds_priv_lookup(user, &uid, &gid) == -1)
		return 2;
	if (check) {
		/* With --user, prove the drop as well (nothing is held yet). */
		if (user && ds_priv_drop(uid, gid) == -1)
			return 1;
		printf("ds-notify: configuration is fine");
		if (user)
			printf("; running as %s (uid %ld, gid %ld), root cannot "
			    "be regained", user, (long)uid, (long)gid);
		printf("\n");
		return 0;
	}

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	nconns = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 20) ?
	    (size_t)rl.rlim_cur : 65536;
	if ((conns = calloc(nconns, sizeof(*conns))) == NULL) {
		ds_app_log("out of memory");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((lfd = listen_on(path)) == -1)
		return 1;
	table_make();
	/*
	 * The socket is all that needs root: it is made in a directory the
	 * user may not write, and given to the user, whose workers connect.
	 */
	if (user && geteuid() == 0 && chown(path, uid, gid) == -1) {
		ds_app_log("chown %s: %s", path, strerror(errno));
		return 1;
	}
	if (user && ds_priv_drop(uid, gid) == -1)
		return 1;
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		ds_app_log("epoll_create1: %s", strerror(errno));
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) == -1) {
		ds_app_log("epoll_ctl: %s", strerror(errno));
		return 1;
	}
	while (!quit) {
		n = epoll_wait(ep, evs, 256, 1000);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			ds_app_log("epoll_wait: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			fd = evs[i].data.fd;
			if (fd == lfd) {
				while ((fd = accept4(lfd, NULL, NULL,
				    SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
					if ((size_t)fd >= nconns) {
						close(fd);
						continue;
					}
					ev.events = EPOLLIN;
					ev.data.fd = fd;
					if (greet(fd) == -1 ||
					    epoll_ctl(ep, EPOLL_CTL_ADD, fd,
					    &ev) == -1)
						close(fd);
					else
						wake_everyone();
				}
				continue;
			}
			for (;;) {
				k = recv(fd, &m, sizeof(m), 0);
				if (k == -1 && errno == EINTR)
					continue;
				if (k == -1 && (errno == EAGAIN ||
				    errno == EWOULDBLOCK))
					break;
				if (k != (ssize_t)sizeof(m)) {
					drop(ep, fd);
					break;
				}
				if (m.type == NOTIFY_SUB)
					subscribe(fd, m.id, m.gen);
				else if (m.type == NOTIFY_UNSUB)
					unsubscribe(fd, m.id, 1);
				else if (m.type == NOTIFY_PUB)
					publish(fd, m.id);
			}
		}
	}
	unlink(path);
	return 0;
}
