/*
 * lot.c: long-polls that wait without a thread.
 *
 * A long-poll that has to wait leaves its thread: the request, its
 * FastCGI connection and its notify watch move here, and the thread goes
 * back to accept. One thread per worker process keeps the lot. It sleeps
 * in epoll on an eventfd, which notify.c pokes whenever a watched stream
 * changes, and on every parked connection, which becomes readable when the
 * front server gives up on the request (client gone). On a change it
 * checks the requests whose stream changed, sharing one store read among
 * those waiting at the same place, and answers them from here; a request
 * costs no context switch and no lock of its own.
 *
 * The rules are those of a thread waiting in live.c: the watch is read
 * before the store (register, then check), deadlines answer 204, and every
 * request is re-checked once a second anyway (every 100 ms while the
 * notifier is away).
 */
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fcgi-app/app.h"
#include "fcgi-app/live.h"
#include "fcgi-app/log.h"
#include "fcgi-app/metrics.h"
#include "fcgi-app/notify.h"

#define MEMO_SLOTS	8	/* distinct (stream, offset) reads per pass */
#define INLINE_MAX	(64 * 1024) /* larger answers get a thread */
#define LARGE_MAX	64	/* such threads at once */

struct spot {
	struct ds_req	*r;
	struct notify_watch *w;
	uint64_t	 id;
	uint64_t	 from;
	uint64_t	 seen;		/* the watch when last checked */
	int64_t		 deadline;
	int		 has_cursor;
	char		 cursor[32];
	struct spot	*prev, *next;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct spot	*incoming;	/* handed over, guarded by mu */
static int		 evfd = -1;	/* wakes the lot thread */
static int		 epfd = -1;
static struct spot	*spots;		/* the lot thread's own list */
static pthread_attr_t	 detached;
static atomic_int	 large;		/* answer_large threads running */
static atomic_int	 draining;	/* shutting down: answer everything */
static atomic_int	 held;		/* spots handed over, not yet ended */

static void
poke(void)
{
	uint64_t one = 1;

	/* A full counter already means "look": nothing to do on EAGAIN. */
	if (write(evfd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		return;
}

int
ds_lot_park(struct ds_req *r, struct notify_watch *w, uint64_t seen,
    uint64_t id, uint64_t from, const char *cursor, int64_t deadline)
{
	struct spot *sp;

	if (evfd == -1 || (cursor && strlen(cursor) >= sizeof(sp->cursor)) ||
	    (sp = calloc(1, sizeof(*sp))) == NULL)
		return 0;
	/* live_start() read the request to its end (ds_drain_body()). */
	sp->r = r;
	sp->w = w;
	sp->id = id;
	sp->from = from;
	sp->seen = seen;
	sp->deadline = deadline;
	if (cursor) {
		sp->has_cursor = 1;
		strcpy(sp->cursor, cursor);
	}
	/* The lot closes every connection it ends (no FastCGI keep-conn). */
	r->fr->keepConnection = 0;
	r->parked = sp;
	return -1;
}

void
ds_lot_handover(struct ds_req *r)
{
	struct spot *sp = r->parked;

	atomic_fetch_add(&held, 1);
	ds_metrics_gauge_add(DS_G_LONGPOLL, 1);
	pthread_mutex_lock(&mu);
	sp->next = incoming;
	incoming = sp;
	pthread_mutex_unlock(&mu);
	poke();		/* from here on, r belongs to the lot */
}

/*
 * At shutdown: answers every waiting long-poll as if its timeout had come
 * (204, so clients simply poll again), waiting at most wait_ms for it.
 */
void
ds_lot_drain(int wait_ms)
{
	int waited;

	if (evfd == -1)
		return;
	atomic_store(&draining, 1);
	poke();
	for (waited = 0; atomic_load(&held) > 0 && waited < wait_ms;
	    waited += 10)
		usleep(10000);
}

/* Takes a spot out of the lot's list and epoll set. */
static void
unlink_spot(struct spot *sp)
{
	if (sp->prev)
		sp->prev->next = sp->next;
	else
		spots = sp->next;
	if (sp->next)
		sp->next->prev = sp->prev;
	epoll_ctl(epfd, EPOLL_CTL_DEL, sp->r->fr->ipcFd, NULL);
}

/* Ends an unlinked spot: the connection closes and all is freed. */
static void
end_spot(struct spot *sp)
{
	struct ds_req *r = sp->r;

	notify_watch_end(sp->w);
	/* The input was read to its end when the spot was taken. */
	FCGX_Detach(r->fr);
	FCGX_Finish_r(r->fr);
	free(r->fr);
	free(r->body);
	free(r);
	free(sp);
	atomic_fetch_sub(&held, 1);
	ds_metrics_gauge_add(DS_G_LONGPOLL, -1);
}

static void
leave(struct spot *sp)
{
	unlink_spot(sp);
	end_spot(sp);
}

/*
 * Answers a spot whose data is too large to write from the lot: a write
 * that fills the socket buffer waits for the front server, which (without
 * buffering) reads only as fast as the client does, and one slow client
 * must not stall the lot. Rare: live tails are mostly small.
 */
static void *
answer_large(void *arg)
{
	struct spot *sp = arg;

	/* Deadline 0: should the data be gone (deleted), a 204 at least. */
	ds_longpoll_check(sp->r, sp->id, sp->from,
	    sp->has_cursor ? sp->cursor : NULL, 0, 0, NULL, NULL);
	end_spot(sp);
	atomic_fetch_sub(&large, 1);
	return NULL;
}

/* Moves what threads handed over into the lot. */
static void
take_incoming(void)
{
	struct spot *in, *sp;
	struct epoll_event ev;

	pthread_mutex_lock(&mu);
	in = incoming;
	incoming = NULL;
	pthread_mutex_unlock(&mu);
	while ((sp = in) != NULL) {
		in = sp->next;
		sp->prev = NULL;
		sp->next = spots;
		if (spots)
			spots->prev = sp;
		spots = sp;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.ptr = sp;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, sp->r->fr->ipcFd, &ev) ==
		    -1) {
			/* Cannot watch for a hang-up: answer now or soon. */
			ds_app_log("epoll_ctl: %s", strerror(errno));
			sp->deadline = notify_mono_ms();
		}
	}
}

/*
 * Checks the spots whose stream changed (or all, on a sweep), answering
 * those that are done. Reads are shared through a few memo slots. Returns
 * the earliest deadline among the spots left, or INT64_MAX.
 */
static int64_t
check(int sweep)
{
	struct ds_lp_memo memo[MEMO_SLOTS];
	uint64_t memo_seen[MEMO_SLOTS];	/* the watch before each read */
	struct spot *sp, *next;
	pthread_t t;
	int64_t now = notify_mono_ms();
	uint64_t g;
	int64_t first = INT64_MAX;
	unsigned i, victim = 0;
	int end = atomic_load(&draining), too_large;

	memset(memo, 0, sizeof(memo));
	for (sp = spots; sp; sp = next) {
		next = sp->next;
		g = notify_watch_seen(sp->w);
		/* Handed over with a change since its check: looks now. */
		if (!sweep && !end && g == sp->seen && now < sp->deadline) {
			if (sp->deadline < first)
				first = sp->deadline;
			continue;
		}
		for (i = 0; i < MEMO_SLOTS; i++)
			if (memo[i].valid && memo[i].id == sp->id &&
			    memo[i].from == sp->from)
				break;
		if (i == MEMO_SLOTS) {
			i = victim++ % MEMO_SLOTS;
			memo_seen[i] = g;	/* read below, after g */
		}
		/*
		 * A shared read is as old as the watch value taken before
		 * it, which may predate g: a change in between must bring
		 * this spot back on the next pass.
		 */
		sp->seen = memo_seen[i];
		too_large = 0;
		if (ds_longpoll_check(sp->r, sp->id, sp->from,
		    sp->has_cursor ? sp->cursor : NULL, end ? 0 : sp->deadline,
		    INLINE_MAX, &too_large, &memo[i]) == -1) {
			leave(sp);
			continue;
		}
		/* Waits, or too large and over the thread cap: later. */
		if (!too_large || atomic_load(&large) >= LARGE_MAX) {
			if (sp->deadline < first)
				first = sp->deadline;
			continue;
		}
		unlink_spot(sp);
		atomic_fetch_add(&large, 1);
		if (pthread_create(&t, &detached, answer_large, sp) != 0)
			answer_large(sp);
	}
	for (i = 0; i < MEMO_SLOTS; i++)
		ds_lp_memo_clear(&memo[i]);
	return first;
}

static void *
run(void *arg)
{
	struct epoll_event ev[256];
	int64_t now, due, first = INT64_MAX, last_sweep = notify_mono_ms();
	uint64_t n;
	int i, k, timeout, changed, slice, sweep;

	(void)arg;
	for (;;) {
		/*
		 * A daemon coming or going bumps every watch, so a slice
		 * taken before the wait is good enough after it.
		 */
		slice = notify_recheck_ms();
		now = notify_mono_ms();
		due = last_sweep + slice < first ? last_sweep + slice : first;
		timeout = due <= now ? 0 : (int)(due - now);
		k = epoll_wait(epfd, ev, 256, timeout);
		changed = 0;
		for (i = 0; i < k; i++) {
			if (ev[i].data.ptr == NULL) {
				if (read(evfd, &n, sizeof(n)) == -1 &&
				    errno != EAGAIN)
					ds_app_log("eventfd: %s",
					    strerror(errno));
				changed = 1;
			} else
				leave(ev[i].data.ptr);	/* client gone */
		}
		if (changed)
			take_incoming();
		now = notify_mono_ms();
		sweep = now >= last_sweep + slice;
		if (sweep)
			last_sweep = now;
		first = check(sweep);
	}
	return NULL;
}

/* Starts the lot thread. Without it, long-polls wait in their threads. */
int
ds_lot_start(void)
{
	struct epoll_event ev;
	pthread_t t;

	if ((evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1 ||
	    (epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		goto fail;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	pthread_attr_init(&detached);
	pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&detached, 256 * 1024);
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) == -1 ||
	    pthread_create(&t, NULL, run, NULL) != 0)
		goto fail;
	pthread_detach(t);
	notify_on_change(poke);
	return 0;
fail:
	if (evfd != -1)
		close(evfd);
	if (epfd != -1)
		close(epfd);
	evfd = epfd = -1;
	return -1;
}
