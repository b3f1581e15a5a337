/*
 * live.c: long-poll (PROTOCOL 5.7) and Server-Sent Events (5.8).
 *
 * A live request registers a notify watch of the stream before it checks
 * the store, and waits only if the watch has not changed since, so an
 * append between the check and the wait is never missed. A long-poll waits
 * in the worker's lot (lot.c) without a thread when it can; an SSE request
 * sleeps on the watch in its thread. Each wait is bounded (see notify.h),
 * after which the request re-checks the store and whether the front server
 * has hung up.
 */
#include <sys/socket.h>

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "fcgi-app/app.h"
#include "fcgi-app/json.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/parse.h"

/* PROTOCOL 10.1: 20-second intervals counted from 2024-10-09T00:00:00Z. */
#define CURSOR_EPOCH_S	1728432000LL
#define CURSOR_STEP_S	20

/*
 * The cursor for a live response: the current interval number, or, when
 * the client already holds that interval or a later one, its cursor plus a
 * random 20 s to one hour, so cursors never repeat or go back.
 */
uint64_t
ds_cursor_next(int64_t now_ms, const char *client)
{
	uint64_t cur, theirs;

	cur = (uint64_t)((now_ms / 1000 - CURSOR_EPOCH_S) / CURSOR_STEP_S);
	if (client && ds_parse_uint(client, strlen(client), DS_MAX_SAFE_INT,
	    &theirs) == 0 && theirs >= cur)
		return theirs + 1 + randombytes_uniform(3600 / CURSOR_STEP_S);
	return cur;
}

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
 * (PROTOCOL 5.1). Returns 0, or -1 after answering.
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
	if (*from == DS_POS_NOW)
		*from = info->tail;
	if (*from > info->tail) {
		ds_respond_store_error(r, DS_EOFFSET);
		return -1;
	}
	ds_store_touch(r->store, r->path, r->now);
	return 0;
}

/*
 * One look at the stream for a waiting long-poll (PROTOCOL 5.7). Answers
 * and returns 1 when there is data past from, the stream is closed at its
 * tail, gone, or the deadline (CLOCK_MONOTONIC ms) has passed; returns 0
 * when the request should go on waiting, and -1, answering nothing, when
 * the data is larger than inline_max (0: no limit). With a memo, a read is
 * shared by the requests of one stream waiting at the same offset.
 */
int
ds_longpoll_check(struct ds_req *r, uint64_t id, uint64_t from,
    const char *cursor, int64_t deadline, size_t inline_max,
    struct ds_lp_memo *m)
{
	struct ds_lp_memo own = { 0 };
	char off[DS_OFFSET_LEN + 1];
	int done = 1;

	if (m == NULL)
		m = &own;
	if (!m->valid || m->id != id || m->from != from) {
		ds_lp_memo_clear(m);
		/* Over inline_max needs no more than one byte over it. */
		m->e = ds_store_read(r->store, r->path, from,
		    inline_max > 0 && inline_max < r->cfg->chunk ?
		    inline_max + 1 : r->cfg->chunk, ds_now_ms(), &m->info,
		    &m->data, &m->len);
		m->valid = 1;
		m->id = id;
		m->from = from;
	}
	if ((m->e == DS_OK || m->e == DS_EOFFSET) && m->info.id != id)
		/* Deleted and made again (maybe shorter than from). */
		ds_respond_store_error(r, DS_ENOTFOUND);
	else if (m->e != DS_OK)
		ds_respond_store_error(r, m->e);
	else if (inline_max > 0 && m->len > inline_max)
		done = -1;
	else if (m->len > 0)
		ds_send_read(r, &m->info, from, m->data, m->len, 0,
		    ds_cursor_next(ds_now_ms(), cursor));
	else if ((m->info.flags & DS_F_CLOSED) ||
	    notify_mono_ms() >= deadline) {
		/* EOF at once, or the timeout (PROTOCOL 5.7). */
		ds_offset_format(m->info.tail, off);
		ds_add_header(r, "Stream-Next-Offset", "%s", off);
		ds_add_header(r, "Stream-Up-To-Date", "true");
		if (m->info.flags & DS_F_CLOSED)
			ds_add_header(r, "Stream-Closed", "true");
		else
			ds_add_header(r, "Stream-Cursor", "%" PRIu64,
			    ds_cursor_next(ds_now_ms(), cursor));
		ds_add_header(r, "Cache-Control", "no-store");
		ds_respond(r, 204, NULL, NULL, 0);
	} else
		done = 0;
	ds_lp_memo_clear(&own);
	return done;
}

void
ds_lp_memo_clear(struct ds_lp_memo *m)
{
	free(m->data);
	memset(m, 0, sizeof(*m));
}

/*
 * A long-poll checks once in its thread. If it has to wait, it moves to the
 * worker's lot (lot.c) and the thread goes back to accept; only when the
 * lot cannot take it does the thread wait here.
 */
void
ds_live_longpoll(struct ds_req *r, uint64_t from, const char *cursor)
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
		if (ds_longpoll_check(r, id, from, cursor, deadline, 0, NULL))
			break;
		if (w && ds_lot_park(r, w, seen, id, from, cursor,
		    deadline) == 0)
			return;		/* the lot takes r and w */
		if (client_gone(r))
			break;
		notify_watch_wait(w, seen, deadline);
	}
	notify_watch_end(w);
}

/* Is this content type sent as text in SSE, or base64 (PROTOCOL 5.8)? */
static int
sse_is_text(const char *ctype)
{
	return strncasecmp(ctype, "text/", 5) == 0 ||
	    ds_media_type_eq(ctype, "application/json");
}

/*
 * Writes one "data" event. Text is split on every line ending an SSE parser
 * knows (CRLF, CR, LF), so stream bytes can never end the event early or
 * forge one (the CRLF-injection tests). Returns -1 when the client is gone.
 */
static int
sse_data(struct ds_req *r, const struct ds_stream_info *info,
    const char *data, size_t len)
{
	FCGX_Stream *out = r->fr->out;
	char *b64, *arr = NULL;
	size_t i, start, n, b64len;
	int rc;

	FCGX_PutS("event: data\n", out);
	if (!sse_is_text(info->ctype)) {
		b64len = sodium_base64_encoded_len(len,
		    sodium_base64_VARIANT_ORIGINAL);
		if ((b64 = malloc(b64len)) == NULL)
			return -1;
		sodium_bin2base64(b64, b64len, (const unsigned char *)data,
		    len, sodium_base64_VARIANT_ORIGINAL);
		/* Lines of 76 characters, a multiple of 4, as in MIME. */
		n = strlen(b64);
		for (i = 0; i < n || i == 0; i += 76) {
			FCGX_PutS("data:", out);
			FCGX_PutStr(b64 + i, (int)(n - i > 76 ? 76 : n - i),
			    out);
			FCGX_PutS("\n", out);
			if (n == 0)
				break;
		}
		free(b64);
		FCGX_PutS("\n", out);
		return 0;
	}
	if (info->flags & DS_F_MSG) {
		/* One JSON array per event; records hold no raw newline. */
		if ((arr = ds_json_array(data, len, &len)) == NULL)
			return -1;
		data = arr;
	}
	for (start = 0, i = 0; i <= len; i++) {
		if (i < len && data[i] != '\r' && data[i] != '\n')
			continue;
		/*
		 * "data:" then the line; a parser drops one space after the
		 * colon, so a line that starts with one gets one more.
		 */
		FCGX_PutS(i > start && data[start] == ' ' ? "data: " : "data:",
		    out);
		FCGX_PutStr(data + start, (int)(i - start), out);
		FCGX_PutS("\n", out);
		if (i < len && data[i] == '\r' && i + 1 < len &&
		    data[i + 1] == '\n')
			i++;
		start = i + 1;
	}
	rc = FCGX_PutS("\n", out);
	free(arr);
	return rc < 0 ? -1 : 0;
}

/* Writes the "control" event that follows data or reports state. */
static void
sse_control(struct ds_req *r, uint64_t next, int up_to_date, int closed,
    const char *cursor)
{
	char off[DS_OFFSET_LEN + 1], buf[256];

	ds_offset_format(next, off);
	if (closed)
		snprintf(buf, sizeof(buf), "event: control\ndata:"
		    "{\"streamNextOffset\":\"%s\",\"upToDate\":true,"
		    "\"streamClosed\":true}\n\n", off);
	else
		snprintf(buf, sizeof(buf), "event: control\ndata:"
		    "{\"streamNextOffset\":\"%s\",\"streamCursor\":\"%" PRIu64
		    "\"%s}\n\n", off, ds_cursor_next(ds_now_ms(), cursor),
		    up_to_date ? ",\"upToDate\":true" : "");
	FCGX_PutS(buf, r->fr->out);
}

void
ds_live_sse(struct ds_req *r, uint64_t from, const char *cursor)
{
	struct ds_stream_info info;
	struct notify_watch *w;
	char *data = NULL;
	size_t len;
	uint64_t seen, id;
	int64_t deadline, beat, now;
	enum ds_err e;
	int first = 1, at_tail, closed, wrote;

	if (live_start(r, &from, &info) == -1)
		return;
	id = info.id;
	ds_add_header(r, "Cache-Control", "no-cache");
	ds_add_header(r, "X-Accel-Buffering", "no");	/* nginx: stream it */
	if (!sse_is_text(info.ctype))
		ds_add_header(r, "Stream-SSE-Data-Encoding", "base64");
	ds_respond_head(r, 200, "text/event-stream", -1);
	/* Front servers hold the headers until the first body byte. */
	FCGX_PutS(":\n\n", r->fr->out);
	if (FCGX_FFlush(r->fr->out) == -1)
		return;

	w = notify_watch_begin(id);
	now = notify_mono_ms();
	deadline = now + r->cfg->sse_ms;
	beat = now + r->cfg->heartbeat_ms;
	for (;;) {
		seen = notify_watch_seen(w);
		e = ds_store_read(r->store, r->path, from, r->cfg->chunk,
		    ds_now_ms(), &info, &data, &len);
		if (e != DS_OK || info.id != id)
			break;		/* deleted: end the stream */
		at_tail = from + len == info.tail;
		closed = at_tail && (info.flags & DS_F_CLOSED);
		wrote = len > 0 || first || closed;
		if (len > 0) {
			if (sse_data(r, &info, data, len) == -1)
				break;
			from += len;
			sse_control(r, from, at_tail, closed, cursor);
		} else if (wrote)
			sse_control(r, from, 1, closed, cursor);
		free(data);
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
	free(data);
	notify_watch_end(w);
}
