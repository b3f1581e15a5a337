/*
 * live.c: long-poll (PROTOCOL 5.7) and Server-Sent Events (5.8), in the
 * steps live.h lays out.
 *
 * A long-poll waits in the worker's lot (lot.c) without a thread when it
 * can; an SSE request sleeps on the watch in its thread. Each wait is
 * bounded (see notify.h), after which the request re-checks the store and
 * whether the front server has hung up.
 */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi-app/app.h"
#include "fcgi-app/live.h"
#include "fcgi-app/metrics.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/parse.h"

/*
 * Has the front server given up on this request? After the request body
 * the FastCGI connection carries nothing more to us, so anything readable
 * (an abort record, or EOF) means the client is gone.
 */
static int
client_gone(struct ds_req *r)
{
	struct pollfd p = { .fd = r->fr->ipcFd, .events = POLLIN | POLLRDHUP };

	return poll(&p, 1, 0) == 1 &&
	    (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR));
}

/*
 * What both live modes do first: find the stream (answering 404/410 when it
 * is not there), resolve offset=now to its tail, refuse an offset past the
 * tail, and renew a sliding TTL, which a live read does when it starts
 * (PROTOCOL 5.1). offset=-1 (DS_POS_FIRST) stays as it is: the first read
 * resolves it to the earliest retained position as of that read, so that a
 * trim landing after this look cannot make it answer 410.
 * Returns 0, or -1 after answering.
 */
static int
live_start(struct ds_req *r, uint64_t *from, struct ds_stream_info *info)
{
	enum ds_err e;

	/*
	 * A live request waits for the front server to give up by watching
	 * its connection, so anything it sent must be read first: a body on
	 * a GET would look like a hang-up.
	 */
	ds_drain_body(r);
	if ((e = ds_store_stat(r->store, r->path, r->now, info)) != DS_OK) {
		ds_respond_store_error(r, e);
		return -1;
	}
	ds_test_pause(r);	/* a trim may land here */
	if (*from == DS_POS_NOW)
		*from = info->tail;
	if (*from == DS_POS_FIRST)
		;
	else if (*from > info->tail) {
		ds_respond_store_error(r, DS_EOFFSET);
		return -1;
	}
	if (*from < info->first) {
		ds_respond_store_error(r, DS_ETRIMMED);
		return -1;
	}
	ds_store_touch(r->store, r->path, r->now);
	return 0;
}

/*
 * A long-poll checks once in its thread. If it has to wait, it moves to the
 * worker's lot (lot.c) and the thread goes back to accept; only when the
 * lot cannot take it does the thread wait here.
 */
static void
live_longpoll(struct ds_req *r, uint64_t from, const char *cursor)
{
	struct ds_stream_info info;
	struct notify_watch *w;
	uint64_t seen, id;
	int64_t deadline;

	if (live_start(r, &from, &info) == -1)
		return;
	id = info.id;
	w = notify_watch_begin(id);
	deadline = notify_mono_ms() + r->cfg->longpoll_ms;
	for (;;) {
		seen = notify_watch_seen(w);
		if (ds_longpoll_check(r, id, from, cursor, deadline, 0, NULL,
		    NULL) == -1)
			break;
		if (w && ds_lot_park(r, w, seen, id, from, cursor,
		    deadline) == -1)
			return;		/* the lot takes r and w */
		if (client_gone(r))
			break;
		ds_metrics_gauge_add(DS_G_LONGPOLL, 1);
		notify_watch_wait(w, seen, deadline);
		ds_metrics_gauge_add(DS_G_LONGPOLL, -1);
	}
	notify_watch_end(w);
}

/*
 * SSE readers of one stream at one position wake together on an append and
 * would each read the same bytes: the last small reads are shared. A read
 * is reused by a reader that saw the same change count of the same watch
 * of the stream (notify.c) before it looked, so it is as fresh as a read
 * of its own: a change not counted yet wakes it again. Reads over
 * SHARE_MAX bytes (a reader catching up) are not kept, nor reads of a
 * reader without a watch (it polls).
 */
#define SHARE_SLOTS	16
#define SHARE_MAX	(64 * 1024)

struct share {
	uint64_t		 id, from, serial, seen;
	struct ds_stream_info	 info;
	char			*data;
	size_t			 len;
	unsigned		 refs;		/* readers writing it out */
	int			 valid;
};

static pthread_mutex_t	 share_mu = PTHREAD_MUTEX_INITIALIZER;
static struct share	 shares[SHARE_SLOTS];

/*
 * Reads for an SSE reader of stream id from from, or takes the same read
 * another reader made after the same change (seen, on watch w). *sh is
 * the shared read to give back with share_done(), or NULL when *data is
 * the caller's.
 */
static enum ds_err
share_read(struct ds_req *r, uint64_t id, uint64_t from,
    struct notify_watch *w, uint64_t seen, struct ds_stream_info *info,
    char **data, size_t *len, struct share **sh)
{
	struct share *s = &shares[ds_id_hash(id ^ from) % SHARE_SLOTS];
	uint64_t serial = w ? notify_watch_serial(w) : 0;
	int shared = w != NULL && from != DS_POS_FIRST;
	enum ds_err e;

	*sh = NULL;
	if (shared) {
		pthread_mutex_lock(&share_mu);
		if (s->valid && s->id == id && s->from == from &&
		    s->serial == serial && s->seen == seen) {
			s->refs++;
			*info = s->info;
			*data = s->data;
			*len = s->len;
			*sh = s;
		}
		pthread_mutex_unlock(&share_mu);
		if (*sh)
			return DS_OK;
	}
	e = ds_store_read(r->store, r->path, from, r->cfg->chunk, ds_now_ms(),
	    info, data, len);
	if (!shared || e != DS_OK || info->id != id || *len > SHARE_MAX)
		return e;
	pthread_mutex_lock(&share_mu);
	if (s->refs == 0) {
		free(s->data);
		s->id = id;
		s->from = from;
		s->serial = serial;
		s->seen = seen;
		s->info = *info;
		s->data = *data;
		s->len = *len;
		s->valid = 1;
		s->refs = 1;
		*sh = s;
	}
	pthread_mutex_unlock(&share_mu);
	return e;
}

/* Gives back a read of share_read(). */
static void
share_done(struct share *sh, char *data)
{
	if (sh == NULL) {
		free(data);
		return;
	}
	pthread_mutex_lock(&share_mu);
	sh->refs--;
	pthread_mutex_unlock(&share_mu);
}

static void
live_sse(struct ds_req *r, uint64_t from, const char *cursor)
{
	struct ds_stream_info info;
	struct notify_watch *w;
	struct share *sh = NULL;
	char *data = NULL;
	size_t len;
	uint64_t seen, id;
	int64_t deadline, beat, now;
	enum ds_err e;
	int first = 1, at_tail, closed, wrote;

	if (live_start(r, &from, &info) == -1)
		return;
	id = info.id;
	if (ds_sse_head(r, &info) == -1)
		return;
	ds_metrics_gauge_add(DS_G_SSE, 1);

	w = notify_watch_begin(id);
	now = notify_mono_ms();
	deadline = now + r->cfg->sse_ms;
	beat = now + r->cfg->heartbeat_ms;
	for (;;) {
		seen = notify_watch_seen(w);
		e = share_read(r, id, from, w, seen, &info, &data, &len, &sh);
		if (e != DS_OK || info.id != id)
			break;		/* deleted: end the stream */
		if (from == DS_POS_FIRST)
			from = info.first;	/* where this read began */
		at_tail = from + len == info.tail;
		closed = at_tail && (info.flags & DS_F_CLOSED);
		wrote = len > 0 || first || closed;
		if (len > 0) {
			if (ds_sse_data(r, &info, data, len) == -1)
				break;
			from += len;
			ds_sse_control(r, from, at_tail, closed, cursor);
		} else if (wrote)
			ds_sse_control(r, from, 1, closed, cursor);
		share_done(sh, data);
		sh = NULL;
		data = NULL;
		first = 0;
		if (wrote && FCGX_FFlush(r->fr->out) == -1)
			break;
		if (closed)
			break;		/* EOF: close the connection */
		if (!at_tail)
			continue;	/* more to send right away */
		now = notify_mono_ms();
		if (now >= deadline)
			break;
		if (now >= beat) {
			FCGX_PutS(":\n\n", r->fr->out);
			if (FCGX_FFlush(r->fr->out) == -1)
				break;
			beat = now + r->cfg->heartbeat_ms;
		}
		if (client_gone(r))
			break;
		notify_watch_wait(w, seen, deadline < beat ? deadline : beat);
	}
	share_done(sh, data);
	notify_watch_end(w);
	ds_metrics_gauge_add(DS_G_SSE, -1);
}

void
ds_live_serve(struct ds_req *r, enum ds_live_mode mode, uint64_t from,
    const char *cursor)
{
	if (mode == DS_LIVE_SSE)
		live_sse(r, from, cursor);
	else
		live_longpoll(r, from, cursor);
}
