/*
 * answer.c: the answers to reads, written for handlers.c (catch-up reads)
 * and for the live path (long-poll answers, SSE events), and nothing
 * else: it calls down only (http.c, the store, parse.c, json.c, and
 * notify.c for its clock).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "fcgi-app/app.h"
#include "fcgi-app/json.h"
#include "fcgi-app/metrics.h"
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
 * The headers that say where an answer leaves the reader (PROTOCOL 5.2,
 * 5.5-5.7): the offset to read next, whether that is the tail, and whether
 * the stream is closed there.
 */
void
ds_add_position(struct ds_req *r, uint64_t next, int up_to_date, int closed)
{
	char off[DS_OFFSET_LEN + 1];

	ds_offset_format(next, off);
	ds_add_header(r, "Stream-Next-Offset", "%s", off);
	if (up_to_date)
		ds_add_header(r, "Stream-Up-To-Date", "true");
	if (closed)
		ds_add_header(r, "Stream-Closed", "true");
}

/*
 * This server's extension: Stream-Earliest-Offset, the earliest position
 * retention kept (only once something was trimmed; reads before it answer
 * 410 Gone, offset=-1 starts there).
 */
void
ds_add_earliest(struct ds_req *r, const struct ds_stream_info *i)
{
	char off[DS_OFFSET_LEN + 1];

	if (i->first == 0)
		return;
	ds_offset_format(i->first, off);
	ds_add_header(r, "Stream-Earliest-Offset", "%s", off);
}

/* The Cache-Control of a catch-up read (PROTOCOL 10.1), bounded by expiry. */
static void
cache_header(struct ds_req *r, const struct ds_stream_info *i)
{
	int64_t left = 60;

	if (i->flags & DS_F_TTL)
		left = (int64_t)i->ttl_s;
	if (i->flags & DS_F_EXPIRES)
		left = (i->expires_ms - r->now) / 1000;
	if (left > 60)
		left = 60;
	if (left <= 0)
		ds_add_header(r, "Cache-Control", "no-store");
	else
		ds_add_header(r, "Cache-Control",
		    "public, max-age=%" PRId64 ", stale-while-revalidate=300",
		    left);
}

/* Does an If-None-Match value name etag (or "*")? */
static int
etag_matches(const char *inm, const char *etag)
{
	size_t n = strlen(etag);
	const char *p;

	for (p = inm; *p; ) {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		if (*p == '*')
			return 1;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (strncmp(p, etag, n) == 0 &&
		    (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return 1;
		while (*p && *p != ',')
			p++;
	}
	return 0;
}

/*
 * The headers of an answer to a read of [from, from + len): where it
 * leaves the reader, Stream-Cursor when cursor > 0 (live reads, PROTOCOL
 * 5.7), and the caching headers: none for offset=now (never cached, no
 * ETag, PROTOCOL 8), else an ETag naming the range and the Cache-Control.
 * Returns 1 when If-None-Match names the same range: the answer is 304,
 * sent (PROTOCOL 5.6, 9.1.5, 10.1); 0 when the caller sends the 200.
 */
static int
read_head(struct ds_req *r, const struct ds_stream_info *info,
    uint64_t from, size_t len, int now_read, uint64_t cursor)
{
	char etag[128];
	const char *inm;
	uint64_t next = from + len;
	int up_to_date = next == info->tail;
	int eof = up_to_date && (info->flags & DS_F_CLOSED);

	ds_add_position(r, next, up_to_date, eof);
	ds_add_earliest(r, info);
	if (cursor > 0)
		ds_add_header(r, "Stream-Cursor", "%" PRIu64, cursor);
	if (now_read) {
		ds_add_header(r, "Cache-Control", "no-store");
		return 0;
	}
	snprintf(etag, sizeof(etag), "\"%016" PRIx64 ":%" PRIu64 ":%" PRIu64
	    "%s\"", info->id, from, next, eof ? ":c" : "");
	ds_add_header(r, "ETag", "%s", etag);
	cache_header(r, info);
	inm = ds_param(r, "HTTP_IF_NONE_MATCH");
	if (inm == NULL || !etag_matches(inm, etag))
		return 0;
	ds_respond(r, 304, NULL, NULL, 0);
	return 1;
}

/*
 * Answers a read with the bytes [from, from + len) of a stream whose
 * snapshot is info: 200 with the data (a JSON array for JSON streams), or
 * 304 (read_head()).
 */
void
ds_send_read(struct ds_req *r, const struct ds_stream_info *info,
    uint64_t from, const char *data, size_t len, int now_read,
    uint64_t cursor)
{
	char *arr = NULL;
	const char *body = data;
	size_t blen = len;

	if (read_head(r, info, from, len, now_read, cursor))
		return;
	if (info->flags & DS_F_MSG) {
		if ((arr = ds_json_array(data ? data : "", len, &blen)) ==
		    NULL) {
			r->hdrlen = 0;
			ds_respond_error(r, 503, "out of memory");
			return;
		}
		body = arr;
	}
	ds_metrics_bytes_read(len);
	ds_respond(r, 200, info->ctype, body, blen);
	free(arr);
}

/* The last bytes of a read sent from files are held back until checked. */
#define HELD_BACK	4096

/*
 * ds_send_read() of a catch-up read of a byte stream whose len bytes are
 * where sp says (ds_store_read_spans()), sent from the files without a
 * copy. Retention may punch those bytes out as soon as it trims past
 * sp->from, and the front server reads them from the page cache only when
 * it gets to them. So the last bytes are held back, copied, until the
 * front server has read all the others and the stream still retains
 * sp->from; failing that, the answer is cut short, and the client, seeing
 * an incomplete body, reads again.
 */
void
ds_send_spans(struct ds_req *r, const struct ds_stream_info *info,
    const struct ds_spans *sp, size_t len)
{
	const struct ds_span *last = &sp->sp[sp->n - 1];
	size_t held = last->len < HELD_BACK ? last->len : HELD_BACK;
	char buf[HELD_BACK];
	int i;

	if (read_head(r, info, sp->from, len, 0, 0))
		return;
	ds_metrics_bytes_read(len);
	if (ds_put_head(r, 200, info->ctype, len) == -1)
		return;
	for (i = 0; i < sp->n; i++)
		if (ds_put_file(r, sp->sp[i].fd, sp->sp[i].at, sp->sp[i].len -
		    (i == sp->n - 1 ? held : 0)) == -1)
			goto cut;
	if (ds_span_read(last, last->len - held, buf, held) == -1)
		goto cut;
	ds_test_pause(r);	/* a trim may land here */
	if (ds_put_drained(r) == -1 || ds_store_recheck(r->store, r->path,
	    ds_now_ms(), info->id, sp->from) != DS_OK)
		goto cut;
	if (ds_put_mem(r, buf, held) == 0)
		return;
cut:
	ds_metrics_read_cut();
	ds_put_cut(r);
}

/*
 * One look at the stream for a waiting long-poll (PROTOCOL 5.7). Answers
 * and returns -1 when there is data past from, the stream is closed at its
 * tail, gone, or the deadline (CLOCK_MONOTONIC ms) has passed. Returns 0,
 * answering nothing, when the request should go on waiting, or, setting
 * *large, when the data is larger than inline_max (0: no limit; large may
 * then be NULL). With a memo, a read is shared by the requests of one
 * stream waiting at the same offset. from DS_POS_FIRST (offset=-1) reads
 * from the earliest retained position as of each look.
 */
int
ds_longpoll_check(struct ds_req *r, uint64_t id, uint64_t from,
    const char *cursor, int64_t deadline, size_t inline_max, int *large,
    struct ds_lp_memo *m)
{
	struct ds_lp_memo own = { 0 };
	int done = -1;

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
	else if (inline_max > 0 && m->len > inline_max) {
		*large = 1;
		done = 0;
	}
	else if (m->len > 0)
		ds_send_read(r, &m->info, from == DS_POS_FIRST ?
		    m->info.first : from, m->data, m->len, 0,
		    ds_cursor_next(ds_now_ms(), cursor));
	else if ((m->info.flags & DS_F_CLOSED) ||
	    notify_mono_ms() >= deadline) {
		/* EOF at once, or the timeout (PROTOCOL 5.7). */
		ds_add_position(r, m->info.tail, 1,
		    (m->info.flags & DS_F_CLOSED) != 0);
		if (!(m->info.flags & DS_F_CLOSED))
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

/* Is this content type sent as text in SSE, or base64 (PROTOCOL 5.8)? */
static int
sse_is_text(const char *ctype)
{
	return strncasecmp(ctype, "text/", 5) == 0 ||
	    ds_media_type_eq(ctype, "application/json");
}

/*
 * Starts an SSE answer (PROTOCOL 5.8) for a stream whose snapshot is info:
 * the headers, then a comment, since front servers hold the headers until
 * the first body byte. Returns 0, or -1 when the client is gone.
 */
int
ds_sse_head(struct ds_req *r, const struct ds_stream_info *info)
{
	ds_add_header(r, "Cache-Control", "no-cache");
	ds_add_header(r, "X-Accel-Buffering", "no");	/* nginx: stream it */
	if (!sse_is_text(info->ctype))
		ds_add_header(r, "Stream-SSE-Data-Encoding", "base64");
	ds_respond_head(r, 200, "text/event-stream", -1);
	FCGX_PutS(":\n\n", r->fr->out);
	return FCGX_FFlush(r->fr->out) == -1 ? -1 : 0;
}

/*
 * Writes one "data" event. Text is split on every line ending an SSE parser
 * knows (CRLF, CR, LF), so stream bytes can never end the event early or
 * forge one (the CRLF-injection tests). Returns -1 when the client is gone.
 */
int
ds_sse_data(struct ds_req *r, const struct ds_stream_info *info,
    const char *data, size_t len)
{
	FCGX_Stream *out = r->fr->out;
	char *b64, *arr = NULL;
	size_t i, start, n, b64len;
	int rc;

	ds_metrics_bytes_read(len);
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
void
ds_sse_control(struct ds_req *r, uint64_t next, int up_to_date, int closed,
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
