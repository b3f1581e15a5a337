/*
 * notify.c: the worker side of ds-notify (see notify.h).
 *
 * One table per process maps a stream id to the requests parked on it and
 * a change counter they share. The table and the daemon socket are guarded
 * by one mutex, taken to park, unpark and wake. Parked requests sleep on
 * the counter itself (a futex), so a wake-up of hundreds of requests does
 * not make them queue on that mutex one by one as they get up: each reads
 * the counter and goes straight back to the store.
 */
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fcgi-app/log.h"
#include "fcgi-app/metrics.h"
#include "fcgi-app/notify.h"

#define NBUCKETS 1024

struct notify_watch {
	uint64_t	 id;
	uint64_t	 serial;	/* never the same for two watches */
	unsigned	 refs;		/* requests parked on id here */
	_Atomic uint32_t gen;		/* bumped on every change of id; the
					   futex word parked requests sleep on */
	struct notify_watch *next;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct notify_watch *buckets[NBUCKETS];
static int		 sock = -1;	/* daemon connection, or -1 */
static uint64_t		 serials;	/* watches made, for their serials */
static _Atomic uint32_t	*table;		/* its interest table, or NULL */
static atomic_int	 connected;	/* sock != -1, read without mu */
static char		*sockpath;

int64_t
notify_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct notify_watch **
slot(uint64_t id)
{
	struct notify_watch **pp;

	pp = &buckets[notify_slot(id) % NBUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/*
 * Sends one message to the daemon; call with mu held. Errors drop it.
 * Returns whether it was sent.
 */
static int
send_locked(uint32_t type, uint64_t id, uint32_t gen)
{
	struct notify_msg m;

	if (sock == -1)
		return 0;
	memset(&m, 0, sizeof(m));
	m.type = type;
	m.gen = gen;
	m.id = id;
	/* SO_SNDTIMEO bounds this; a lost message costs latency only. */
	if (send(sock, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m))
		return 1;
	if (errno != EAGAIN && errno != EWOULDBLOCK) {
		/*
		 * The connection thread closes it (run()): closing it here
		 * would let it close a number reused by then.
		 */
		shutdown(sock, SHUT_RDWR);
		sock = -1;
	}
	return 0;
}

/*
 * Subscribes to id, counting it in the interest table first (see
 * notify.h); call with mu held. The daemon takes the count away with the
 * subscription, so a subscription that was not sent takes its own away.
 */
static void
sub_locked(uint64_t id)
{
	uint32_t gen = 0;

	if (sock == -1)
		return;
	if (table) {
		atomic_fetch_add(notify_count(table, id), 1);
		/* Counted in before the caller looks at the store. */
		atomic_thread_fence(memory_order_seq_cst);
		gen = NOTIFY_COUNTED | (atomic_load(notify_gen(table, id)) &
		    NOTIFY_GEN_MASK);
	}
	if (!send_locked(NOTIFY_SUB, id, gen) && table)
		atomic_fetch_sub(notify_count(table, id), 1);
}

static void	(*on_change)(void);

void
notify_on_change(void (*fn)(void))
{
	pthread_mutex_lock(&mu);
	on_change = fn;
	pthread_mutex_unlock(&mu);
}

/* Marks a change of w's stream and wakes whoever waits for it. */
static void
bump(struct notify_watch *w)
{
	atomic_fetch_add(&w->gen, 1);
	syscall(SYS_futex, &w->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
	    0);
	if (on_change)
		on_change();
}

/* Wakes every request parked on id in this process; call with mu held. */
static void
wake_locked(uint64_t id)
{
	struct notify_watch *w = *slot(id);

	if (w)
		bump(w);
}

/*
 * Wakes everything when the daemon comes or goes: a request that picked
 * its wait slice just before sees a change, re-checks, and picks again.
 */
static void
wake_all_locked(void)
{
	struct notify_watch *w;
	size_t i;

	for (i = 0; i < NBUCKETS; i++)
		for (w = buckets[i]; w; w = w->next)
			bump(w);
}

/*
 * Reads the daemon's NOTIFY_HELLO and maps the interest table it carries
 * into *tbl. Without a table (none sent, a mapping that fails, no HELLO
 * within a second from a ds-notify older than the table) *tbl is NULL: the
 * worker publishes every append, and the daemon counts its subscriptions
 * in for it (NOTIFY_COUNTED). Returns 0, or -1 when the connection failed.
 */
static int
hello(int fd, _Atomic uint32_t **tbl)
{
	union {
		struct cmsghdr	 h;
		char		 buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct timeval tv = { 1, 0 }, none = { 0, 0 };
	struct notify_msg m;
	struct iovec iov = { &m, sizeof(m) };
	struct msghdr msg;
	struct cmsghdr *c;
	void *p;
	ssize_t n;
	int tfd = -1, err;

	*tbl = NULL;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = sizeof(ctl.buf);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1)
		return -1;
	while ((n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) == -1 &&
	    errno == EINTR)
		;
	err = errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	if (n == -1 && (err == EAGAIN || err == EWOULDBLOCK)) {
		ds_app_log("notifier: no hello within a second (an older "
		    "ds-notify?); publishing every append");
		return 0;
	}
	for (c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; c;
	    c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&tfd, CMSG_DATA(c), sizeof(int));
	if (n != (ssize_t)sizeof(m) || m.type != NOTIFY_HELLO) {
		if (tfd != -1)
			close(tfd);
		return -1;
	}
	if (tfd == -1)
		return 0;
	p = mmap(NULL, NOTIFY_TABLE_BYTES, PROT_READ | PROT_WRITE,
	    MAP_SHARED, tfd, 0);
	close(tfd);
	if (p == MAP_FAILED) {
		ds_app_log("notifier: mapping its interest table: %s",
		    strerror(errno));
		return 0;	/* publish everything */
	}
	*tbl = p;
	return 0;
}

static int
dial(const char *path)
{
	struct sockaddr_un sun;
	struct timeval tv = { 0, 200000 };
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -1;
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The connection thread: connects (again and again, if need be),
 * re-subscribes what is parked, and wakes parked requests on wake-ups.
 */
static void *
run(void *arg)
{
	struct notify_msg m;
	struct notify_watch *w;
	_Atomic uint32_t *tbl;
	ssize_t n;
	size_t i;
	int fd, down_logged = 0;

	(void)arg;
	for (;;) {
		if ((fd = dial(sockpath)) == -1 || hello(fd, &tbl) == -1) {
			if (fd != -1)
				close(fd);
			if (!down_logged++)
				ds_app_log("notifier %s unreachable; "
				    "parked requests poll", sockpath);
			usleep(200000);
			continue;
		}
		pthread_mutex_lock(&mu);
		if (table)
			munmap(table, NOTIFY_TABLE_BYTES);
		table = tbl;
		sock = fd;
		atomic_store(&connected, 1);
		ds_metrics_gauge_set(DS_G_NOTIFIER, 1);
		for (i = 0; i < NBUCKETS; i++)
			for (w = buckets[i]; w; w = w->next)
				sub_locked(w->id);
		wake_all_locked();
		pthread_mutex_unlock(&mu);
		if (down_logged)
			ds_app_log("notifier %s back", sockpath);
		down_logged = 0;
		for (;;) {
			n = recv(fd, &m, sizeof(m), 0);
			if (n == -1 && errno == EINTR)
				continue;
			if (n != (ssize_t)sizeof(m))
				break;
			if (m.type != NOTIFY_WAKE)
				continue;
			pthread_mutex_lock(&mu);
			wake_locked(m.id);
			pthread_mutex_unlock(&mu);
		}
		pthread_mutex_lock(&mu);
		sock = -1;	/* send_locked() may have let go already */
		atomic_store(&connected, 0);
		ds_metrics_gauge_set(DS_G_NOTIFIER, 0);
		wake_all_locked();
		pthread_mutex_unlock(&mu);
		close(fd);
	}
	return NULL;
}

int
notify_start(const char *path)
{
	pthread_t t;

	if (path == NULL)
		return 0;
	if ((sockpath = strdup(path)) == NULL ||
	    pthread_create(&t, NULL, run, NULL) != 0)
		return -1;
	pthread_detach(t);
	return 0;
}

int
notify_recheck_ms(void)
{
	return atomic_load(&connected) ? NOTIFY_SAFETY_MS : NOTIFY_POLL_MS;
}

void
notify_publish(uint64_t id)
{
	/* The commit before, the count after: see notify.h. */
	atomic_thread_fence(memory_order_seq_cst);
	pthread_mutex_lock(&mu);
	wake_locked(id);
	if (sock != -1 && (table == NULL ||
	    atomic_load_explicit(notify_count(table, id),
	    memory_order_relaxed) != 0)) {
		/* The generation before the PUB: see notify.h. */
		if (table)
			atomic_fetch_add(notify_gen(table, id), 1);
		if (send_locked(NOTIFY_PUB, id, 0))
			ds_metrics_notify_pub();
	}
	pthread_mutex_unlock(&mu);
}

struct notify_watch *
notify_watch_begin(uint64_t id)
{
	struct notify_watch **pp, *w;

	pthread_mutex_lock(&mu);
	pp = slot(id);
	if ((w = *pp) == NULL) {
		if ((w = calloc(1, sizeof(*w))) == NULL) {
			pthread_mutex_unlock(&mu);
			return NULL;
		}
		w->id = id;
		w->serial = ++serials;
		*pp = w;
		sub_locked(id);
	}
	w->refs++;
	pthread_mutex_unlock(&mu);
	return w;
}

uint64_t
notify_watch_seen(struct notify_watch *w)
{
	return w ? atomic_load(&w->gen) : 0;
}

uint64_t
notify_watch_serial(const struct notify_watch *w)
{
	return w->serial;
}

void
notify_watch_wait(struct notify_watch *w, uint64_t seen, int64_t deadline)
{
	struct timespec ts;
	int64_t until, now = notify_mono_ms();

	until = now + (w ? notify_recheck_ms() : NOTIFY_POLL_MS);
	if (until > deadline)
		until = deadline;
	if (w == NULL) {
		if (until > now)
			usleep((useconds_t)(until - now) * 1000);
		return;
	}
	/* The pointer stays valid: our reference keeps the watch. */
	while (atomic_load(&w->gen) == (uint32_t)seen && now < until) {
		ts.tv_sec = (until - now) / 1000;
		ts.tv_nsec = (until - now) % 1000 * 1000000;
		syscall(SYS_futex, &w->gen, FUTEX_WAIT_PRIVATE,
		    (uint32_t)seen, &ts, NULL, 0);
		now = notify_mono_ms();
	}
}

void
notify_watch_end(struct notify_watch *w)
{
	struct notify_watch **pp;

	if (w == NULL)
		return;
	pthread_mutex_lock(&mu);
	if (--w->refs == 0) {
		pp = slot(w->id);
		*pp = w->next;
		send_locked(NOTIFY_UNSUB, w->id, 0);
		free(w);
	}
	pthread_mutex_unlock(&mu);
}
