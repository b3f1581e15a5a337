/*
 * handlers.c: the Durable Streams protocol over HTTP (PROTOCOL 5).
 *
 * Each handler validates every header and parameter before it touches the
 * store, so bad input gets a 4xx and changes nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fcgi-app/app.h"
#include "fcgi-app/live.h"
#include "fcgi-app/json.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/parse.h"
#include "fcgi-app/subs.h"

#define ALLOW "GET, HEAD, POST, PUT, DELETE, OPTIONS"
#define DEFAULT_CTYPE "application/octet-stream"
#define nitems(a) (sizeof(a) / sizeof((a)[0]))

static int
is_json(const char *ctype)
{
	return ds_media_type_eq(ctype, "application/json");
}

/* Headers describing a stream: PROTOCOL 5.1 and 5.5. */
static void
stream_headers(struct ds_req *r, const struct ds_stream_info *i)
{
	char ts[32];

	ds_add_position(r, i->tail, 0, (i->flags & DS_F_CLOSED) != 0);
	ds_add_earliest(r, i);
	if (i->flags & DS_F_TTL)
		ds_add_header(r, "Stream-TTL", "%" PRIu64, i->ttl_s);
	if (i->flags & DS_F_EXPIRES) {
		ds_format_rfc3339(i->expires_ms, ts);
		ds_add_header(r, "Stream-Expires-At", "%s", ts);
	}
}

/*
 * The absolute URL of the request's stream, for the Location of a 201. It
 * echoes Host, so it is made before the stream is created: a Host unfit to
 * echo is refused with 400 and nothing created, never created and then
 * reported as a failure. Returns 0 with the URL in loc, or -1 after
 * answering.
 */
static int
location_url(struct ds_req *r, char *loc, size_t locsz)
{
	const char *host = ds_param(r, "HTTP_HOST");
	const char *https = ds_param(r, "HTTPS");
	const char *scheme = (https && *https && strcasecmp(https, "off")) ?
	    "https" : "http";
	size_t pathlen = (size_t)(r->query - r->uri);
	int n;

	if (r->querylen > 0 || (pathlen > 0 && r->uri[pathlen - 1] == '?'))
		pathlen--;
	if (host && !ds_host_valid(host))
		return ds_respond_error(r, 400, "invalid Host header");
	/*
	 * Without a Host (HTTP/1.0) the server's name is unknown (nginx's
	 * SERVER_NAME is a pattern such as "_"): a relative reference is a
	 * valid Location (RFC 9110 10.2.2).
	 */
	if (host)
		n = snprintf(loc, locsz, "%s://%s%.*s", scheme, host,
		    (int)pathlen, r->uri);
	else
		n = snprintf(loc, locsz, "%.*s", (int)pathlen, r->uri);
	if (n < 0 || (size_t)n >= locsz)
		return ds_respond_error(r, 400,
		    "request URL too long to answer");
	return 0;
}

/*
 * Reads Stream-Closed (PROTOCOL 4.1) into *closed (1: true). Returns 0, or
 * -1 after answering 400 for a joined list that says both ("true, false").
 */
static int
closed_header(struct ds_req *r, int *closed)
{
	*closed = ds_header_closed(ds_param(r, "HTTP_STREAM_CLOSED"));
	if (*closed == -1)
		return ds_respond_error(r, 400,
		    "conflicting Stream-Closed values");
	return 0;
}

/* How often a request checks a stream again that was replaced under it. */
#define REPLACED_TRIES 3

/*
 * Reads the optional TTL/expiry headers of a PUT (PROTOCOL 5.1). Returns 0,
 * or -1 after answering 400.
 */
static int
expiry_headers(struct ds_req *r, struct ds_create *c)
{
	const char *ttl = ds_param(r, "HTTP_STREAM_TTL");
	const char *exp = ds_param(r, "HTTP_STREAM_EXPIRES_AT");

	if (ttl && exp)
		return ds_respond_error(r, 400,
		    "Stream-TTL and Stream-Expires-At are mutually exclusive");
	if (ttl) {
		/* Ten years is plenty and keeps ms arithmetic far from overflow. */
		if (ds_parse_uint(ttl, strlen(ttl), 315360000, &c->ttl_s) ==
		    -1)
			return ds_respond_error(r, 400, "invalid Stream-TTL");
		c->flags |= DS_F_TTL;
	}
	if (exp) {
		if (ds_parse_rfc3339(exp, strlen(exp), &c->expires_ms) == -1)
			return ds_respond_error(r, 400,
			    "invalid Stream-Expires-At");
		c->flags |= DS_F_EXPIRES;
	}
	return 0;
}

/*
 * Splits a JSON-mode body into stored records (PROTOCOL 9.1): *msgs gets a
 * malloc'd buffer the caller frees. allow_empty admits "[]" (PUT, 9.1.3).
 * Returns 0, or -1 after answering 400 (or 503 when out of memory).
 */
static int
json_body(struct ds_req *r, int allow_empty, char **msgs, size_t *len)
{
	enum ds_json_err je;
	size_t nmsg;

	je = ds_json_split(r->body, r->bodylen, allow_empty, msgs, len, &nmsg);
	if (je == DS_JSON_OK)
		return 0;
	return ds_respond_error(r, je == DS_JSON_NOMEM ? 503 : 400,
	    ds_json_strerror(je));
}

/* Does an existing stream have the configuration a PUT asks for? */
static int
same_config(const struct ds_stream_info *i, const struct ds_create *c)
{
	uint32_t m = DS_F_TTL | DS_F_EXPIRES | DS_F_CLOSED;

	if (!ds_media_type_eq(i->ctype, c->ctype))
		return 0;
	if ((i->flags & m) != (c->flags & m))
		return 0;
	if ((i->flags & DS_F_TTL) && i->ttl_s != c->ttl_s)
		return 0;
	if ((i->flags & DS_F_EXPIRES) && i->expires_ms != c->expires_ms)
		return 0;
	/* PROTOCOL 4.2: a fork's source and fork point are config too. */
	if (i->src_id != c->src_id || (c->src_id && i->base != c->base))
		return 0;
	return 1;
}

/*
 * Reads the fork headers of a PUT (PROTOCOL 4.2) into c, checking the
 * source so that the body can be framed by the source's type. Returns 0
 * (c->src_path set for a fork, NULL otherwise), or -1 after answering.
 */
static int
fork_headers(struct ds_req *r, struct ds_create *c, char *src,
    size_t srcsz, struct ds_stream_info *si)
{
	const char *from = ds_param(r, "HTTP_STREAM_FORKED_FROM");
	const char *off = ds_param(r, "HTTP_STREAM_FORK_OFFSET");
	const char *sub = ds_param(r, "HTTP_STREAM_FORK_SUB_OFFSET");
	size_t plen = strlen(DS_ROUTE_PREFIX), n;
	enum ds_offset_kind kind;
	enum ds_err e;

	if (from == NULL) {
		if (off || sub) {
			ds_respond_error(r, 400, "Stream-Fork-Offset and "
			    "Stream-Fork-Sub-Offset need Stream-Forked-From");
			return -1;
		}
		return 0;
	}
	if (strncmp(from, DS_ROUTE_PREFIX, plen) != 0 ||
	    strchr(from, '?') ||
	    ds_path_decode(from + plen, strlen(from + plen), src, srcsz,
	    &n) == -1) {
		ds_respond_error(r, 400, "invalid Stream-Forked-From");
		return -1;
	}
	if (off) {
		if (ds_offset_parse(off, strlen(off), &kind, &c->fork_at) ==
		    -1) {
			ds_respond_error(r, 400, "malformed Stream-Fork-Offset");
			return -1;
		}
		if (kind == DS_OFFSET_START)	/* what the source retains */
			c->fork_at = DS_POS_FIRST;
		c->has_fork_at = kind != DS_OFFSET_NOW;
	}
	if (sub && ds_parse_uint(sub, strlen(sub), DS_MAX_SAFE_INT,
	    &c->sub) == -1) {
		ds_respond_error(r, 400, "malformed Stream-Fork-Sub-Offset");
		return -1;
	}
	if ((e = ds_store_stat(r->store, src, r->now, si)) != DS_OK) {
		if (e == DS_EGONE)
			ds_respond_error(r, 409, "the source stream is deleted");
		else
			ds_respond_store_error(r, e);
		return -1;
	}
	c->src_path = src;
	c->src_want = si->id;	/* the body is framed by this stream */
	return 0;
}

/*
 * PUT: create a stream or a fork, or confirm an identical one (5.1, 4.2).
 * A fork's body is framed by its source's type; when the source is
 * replaced between that check and the create, the create answers
 * DS_EREPLACED and the request is checked again from the start.
 */
static void
handle_put(struct ds_req *r)
{
	struct ds_create c, req;
	struct ds_stream_info info, si;
	const char *ct = ds_content_type(r);
	char norm[DS_CTYPE_MAX + 1], src[DS_PATH_MAX + 1], msg[80];
	char loc[2048];		/* Host <= 255, path <= 3 * DS_PATH_MAX */
	char *msgs = NULL;
	size_t msglen = 0;
	enum ds_err e;
	int json, tries, closed;

	memset(&req, 0, sizeof(req));
	/* The type is stored whole and repeated in every answer. */
	if (ct && *ct && (strlen(ct) > DS_CTYPE_MAX ||
	    !ds_header_value_ok(ct) ||
	    ds_media_type_norm(ct, norm, sizeof(norm)) == -1)) {
		ds_respond_error(r, 400, "invalid Content-Type");
		return;
	}
	if (closed_header(r, &closed) == -1)
		return;
	if (closed)
		req.flags |= DS_F_CLOSED;
	if (expiry_headers(r, &req) == -1)
		return;
	if (location_url(r, loc, sizeof(loc)) == -1)
		return;
	for (tries = 1; ; tries++) {
		c = req;
		if (fork_headers(r, &c, src, sizeof(src), &si) == -1)
			return;
		if (c.src_path) {
			/* A fork inherits its source's type, or repeats it. */
			if (ct && *ct && !ds_media_type_eq(ct, si.ctype)) {
				ds_respond_error(r, 409, "Content-Type "
				    "differs from the source stream's");
				return;
			}
			/* si lives in this frame: same_config() reads it. */
			c.ctype = ct && *ct ? ct : si.ctype;
			json = (si.flags & DS_F_MSG) != 0;
		} else {
			c.ctype = ct && *ct ? ct : DEFAULT_CTYPE;
			json = is_json(c.ctype);
		}
		c.body = r->body;
		c.len = r->bodylen;
		if (json) {
			c.flags |= DS_F_MSG;
			if (r->bodylen > 0) {
				if (json_body(r, 1, &msgs, &msglen) == -1)
					return;
				c.body = msgs;
				c.len = msglen;
			}
		}
		if (tries == 1 && c.src_path)
			ds_test_pause(r);
		e = ds_store_create(r->store, r->path, &c, r->now, &info);
		free(msgs);
		msgs = NULL;
		if (e != DS_EREPLACED || tries == REPLACED_TRIES)
			break;
	}
	if (e == DS_OK) {
		ds_deliver_kick();	/* subscriptions may have work */
		ds_add_header(r, "Location", "%s", loc);
		stream_headers(r, &info);
		ds_respond(r, 201, info.ctype, NULL, 0);
	} else if (e == DS_EEXIST && same_config(&info, &c)) {
		stream_headers(r, &info);
		ds_respond(r, 200, info.ctype, NULL, 0);
	} else if (e == DS_EEXIST || e == DS_EGONE) {
		ds_respond_error(r, 409, e == DS_EEXIST ?
		    "stream exists with a different configuration" :
		    "a deleted stream still holds this path");
	} else if (e == DS_EOFFSET)
		ds_respond_error(r, 400, "fork point is beyond the source's "
		    "tail or not on a message boundary");
	else if (e == DS_EDEPTH) {
		snprintf(msg, sizeof(msg), "forks nest at most %d deep; the "
		    "source is that deep already", DS_CHAIN_MAX - 1);
		ds_respond_error(r, 400, msg);
	} else
		ds_respond_store_error(r, e);
}

/*
 * Reads the producer headers (PROTOCOL 5.2.1) into p: p->id is NULL when
 * none is sent. Returns 0, or -1 after answering 400 when some are
 * missing or invalid.
 */
static int
producer_headers(struct ds_req *r, struct ds_producer *p)
{
	const char *id = ds_param(r, "HTTP_PRODUCER_ID");
	const char *ep = ds_param(r, "HTTP_PRODUCER_EPOCH");
	const char *sq = ds_param(r, "HTTP_PRODUCER_SEQ");

	p->id = NULL;
	if (!id && !ep && !sq)
		return 0;
	if (!id || !ep || !sq)
		return ds_respond_error(r, 400, "Producer-Id, "
		    "Producer-Epoch and Producer-Seq go together");
	if (*id == '\0' || strlen(id) > DS_PRODUCER_MAX)
		return ds_respond_error(r, 400, "invalid Producer-Id");
	if (ds_parse_uint(ep, strlen(ep), DS_MAX_SAFE_INT, &p->epoch) == -1 ||
	    ds_parse_uint(sq, strlen(sq), DS_MAX_SAFE_INT, &p->seq) == -1)
		return ds_respond_error(r, 400, "invalid Producer-Epoch or "
		    "Producer-Seq");
	p->id = id;
	p->idlen = strlen(id);
	return 0;
}

/*
 * POST: append, close, or both (PROTOCOL 5.2, 5.2.1, 5.3). The body is
 * framed by the stream the handler looked at, and the append is pinned to
 * that stream's id: if the path is deleted and created again in between,
 * the store refuses (DS_EREPLACED) and the request is checked again from
 * the start against whatever the path names now.
 */
static void
handle_post(struct ds_req *r)
{
	struct ds_append a;
	struct ds_append_res res;
	struct ds_producer p;
	struct ds_stream_info info;
	const char *ct = ds_content_type(r);
	const char *seq = ds_param(r, "HTTP_STREAM_SEQ");
	char norm[DS_CTYPE_MAX + 1];
	char *msgs = NULL;
	size_t msglen;
	enum ds_err e;
	int hasp, tries;

	memset(&a, 0, sizeof(a));
	if (producer_headers(r, &p) == -1)
		return;
	hasp = p.id != NULL;
	a.producer = hasp ? &p : NULL;
	if (closed_header(r, &a.close) == -1)
		return;
	if (seq) {
		if (*seq == '\0' || strlen(seq) > DS_SEQ_MAX) {
			ds_respond_error(r, 400, "invalid Stream-Seq");
			return;
		}
		a.seq = seq;
		a.seqlen = strlen(seq);
	}
	if (r->bodylen == 0 && !a.close) {
		ds_respond_error(r, 400, "empty body without Stream-Closed");
		return;
	}
	if (r->bodylen > 0 && (ct == NULL || *ct == '\0' ||
	    strlen(ct) > DS_CTYPE_MAX ||
	    ds_media_type_norm(ct, norm, sizeof(norm)) == -1)) {
		ds_respond_error(r, 400, "missing or invalid Content-Type");
		return;
	}
	for (tries = 1; ; tries++) {
		e = ds_store_stat(r->store, r->path, r->now, &info);
		if (e != DS_OK) {
			ds_respond_store_error(r, e);
			return;
		}
		a.id = info.id;
		a.body = r->body;
		a.len = r->bodylen;
		a.ctype_ok = r->bodylen == 0 ||
		    ds_media_type_eq(ct, info.ctype);
		if ((info.flags & DS_F_MSG) && r->bodylen > 0 && a.ctype_ok &&
		    !(info.flags & DS_F_CLOSED)) {
			if (json_body(r, 0, &msgs, &msglen) == -1)
				return;
			a.body = msgs;
			a.len = msglen;
		}
		if (tries == 1)
			ds_test_pause(r);
		e = ds_store_append(r->store, r->path, &a, r->now, &res);
		free(msgs);
		msgs = NULL;
		if (e != DS_EREPLACED || tries == REPLACED_TRIES)
			break;
	}
	switch (e) {
	case DS_OK:
		if (!res.duplicate) {
			notify_publish(res.id);
			ds_deliver_kick();
		}
		ds_add_position(r, res.tail, 0, res.closed);
		if (hasp) {
			ds_add_header(r, "Producer-Epoch", "%" PRIu64,
			    res.epoch);
			ds_add_header(r, "Producer-Seq", "%" PRIu64, res.seq);
		}
		/* PROTOCOL 5.2.1: 200 for new data from a producer. */
		ds_respond(r, hasp && !res.duplicate && a.len > 0 ? 200 : 204,
		    NULL, NULL, 0);
		return;
	case DS_ECLOSED:
		ds_add_position(r, res.tail, 0, 1);
		break;
	case DS_EPRODUCER_STALE:
		ds_add_header(r, "Producer-Epoch", "%" PRIu64, res.epoch);
		break;
	case DS_EPRODUCER_GAP:
		ds_add_header(r, "Producer-Expected-Seq", "%" PRIu64, res.seq);
		ds_add_header(r, "Producer-Received-Seq", "%" PRIu64, p.seq);
		break;
	default:
		break;
	}
	ds_respond_store_error(r, e);
}

/*
 * GET: parses offset, live and cursor (PROTOCOL 5.6-5.8, 8), then serves a
 * catch-up read here or hands over to the live modes.
 */
static void
handle_get(struct ds_req *r)
{
	struct ds_stream_info info;
	struct ds_spans spans = { .n = 0 };
	enum ds_offset_kind kind = DS_OFFSET_START;
	char val[256], cursor[32], *data = NULL;
	size_t vlen, len = 0;
	uint64_t from = 0;
	enum ds_err e;
	enum ds_live_mode live = DS_LIVE_NONE;
	int n;

	n = ds_query_get(r->query, r->querylen, "offset", val, sizeof(val),
	    &vlen);
	if (n > 1 || n == -1) {
		ds_respond_error(r, 400, n > 1 ? "more than one offset" :
		    "malformed offset");
		return;
	}
	if (n == 1 && ds_offset_parse(val, vlen, &kind, &from) == -1) {
		ds_respond_error(r, 400, "malformed offset");
		return;
	}
	if (kind == DS_OFFSET_START)
		from = DS_POS_FIRST;	/* 0, unless retention trimmed */
	else if (kind == DS_OFFSET_NOW)
		from = DS_POS_NOW;
	switch (ds_query_get(r->query, r->querylen, "live", val, sizeof(val),
	    &vlen)) {
	case 0:
		break;
	case 1:
		if (strcmp(val, "long-poll") == 0)
			live = DS_LIVE_LONGPOLL;
		else if (strcmp(val, "sse") == 0)
			live = DS_LIVE_SSE;
		else {
			ds_respond_error(r, 400,
			    "live must be long-poll or sse");
			return;
		}
		break;
	default:
		ds_respond_error(r, 400, "malformed live parameter");
		return;
	}
	if (live != DS_LIVE_NONE) {
		/* PROTOCOL 5.7/5.8: live reads name their offset. */
		if (n == 0) {
			ds_respond_error(r, 400, "live reads need an offset");
			return;
		}
		n = ds_query_get(r->query, r->querylen, "cursor", cursor,
		    sizeof(cursor), &vlen);
		if (n < 0) {
			ds_respond_error(r, 400, "malformed cursor");
			return;
		}
		ds_live_serve(r, live, from, n >= 1 ? cursor : NULL);
		return;
	}
	/* Large reads of byte streams go out from the segment files. */
	e = ds_store_read_spans(r->store, r->path, from, from == DS_POS_NOW ?
	    0 : r->cfg->chunk, DS_SPLICE_MIN, r->now, &info, &data, &len,
	    r->cfg->splice ? &spans : NULL);
	if (e != DS_OK) {
		ds_respond_store_error(r, e);
		return;
	}
	/*
	 * A catch-up answer is whole when it is written: a front server that
	 * offers to buffer it (nginx, see deploy/nginx.conf.in) takes it at
	 * once, so that a slow client holds no worker thread.
	 */
	if (len > 0 && ds_param(r, "DS_FRONT_BUFFERS") != NULL)
		ds_add_header(r, "X-Accel-Buffering", "yes");
	if (spans.n > 0) {
		ds_send_spans(r, &info, &spans, len);
		ds_spans_close(&spans);
		return;
	}
	if (from == DS_POS_FIRST)
		from = info.first;
	ds_send_read(r, &info, from == DS_POS_NOW ? info.tail : from, data,
	    len, from == DS_POS_NOW, 0);
	free(data);
}

/* HEAD: metadata only, never cached (PROTOCOL 5.5). */
static void
handle_head(struct ds_req *r)
{
	struct ds_stream_info info;
	enum ds_err e;

	if ((e = ds_store_stat(r->store, r->path, r->now, &info)) != DS_OK) {
		ds_respond_store_error(r, e);
		return;
	}
	stream_headers(r, &info);
	ds_add_header(r, "Cache-Control", "no-store");
	ds_respond(r, 200, info.ctype, NULL, 0);
}

static void
handle_delete(struct ds_req *r)
{
	enum ds_err e;

	if ((e = ds_store_delete(r->store, r->path)) != DS_OK)
		ds_respond_store_error(r, e);
	else
		ds_respond(r, 204, NULL, NULL, 0);
}

/* CORS preflight. */
static void
handle_options(struct ds_req *r)
{
	const char *want = ds_param(r, "HTTP_ACCESS_CONTROL_REQUEST_HEADERS");

	ds_add_header(r, "Access-Control-Allow-Methods", ALLOW);
	if (want && *want && strlen(want) < 1024 && ds_header_value_ok(want))
		ds_add_header(r, "Access-Control-Allow-Headers", "%s", want);
	else
		ds_add_header(r, "Access-Control-Allow-Headers",
		    "Content-Type, Stream-TTL, Stream-Expires-At, Stream-Seq, "
		    "Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, "
		    "Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, "
		    "Producer-Seq, If-None-Match, Authorization");
	ds_add_header(r, "Access-Control-Max-Age", "86400");
	ds_add_header(r, "Allow", ALLOW);
	ds_respond(r, 204, NULL, NULL, 0);
}

/* The methods of a stream URL, in the order of ALLOW. */
static const struct route {
	const char	*method;
	void		(*handle)(struct ds_req *);
	int		 body;		/* reads the request body first */
} routes[] = {
	{ "GET",	handle_get,	0 },
	{ "HEAD",	handle_head,	0 },
	{ "POST",	handle_post,	1 },
	{ "PUT",	handle_put,	1 },
	{ "DELETE",	handle_delete,	0 },
	{ "OPTIONS",	handle_options,	0 },
};

/*
 * Routes one request: checks the stream path and the method, reads the
 * body where the method takes one, then hands over to the method's handler.
 */
void
ds_handle(struct ds_req *r)
{
	const struct route *rt;
	const char *q, *name;
	char msg[64];
	size_t rawlen, plen;


	r->method = ds_param(r, "REQUEST_METHOD");
	r->uri = ds_param(r, "REQUEST_URI");
	if (r->method == NULL || r->uri == NULL) {
		ds_respond_error(r, 500, "front server sent no REQUEST_METHOD "
		    "or REQUEST_URI");
		return;
	}
	if ((q = strchr(r->uri, '?')) != NULL) {
		r->query = q + 1;
		r->querylen = strlen(q + 1);
		rawlen = (size_t)(q - r->uri);
	} else {
		r->query = r->uri + strlen(r->uri);
		r->querylen = 0;
		rawlen = strlen(r->uri);
	}
	plen = strlen(DS_ROUTE_PREFIX);
	if (rawlen < plen || strncmp(r->uri, DS_ROUTE_PREFIX, plen) != 0) {
		ds_respond_error(r, 404, "not a stream URL");
		return;
	}
	/* PROTOCOL 6: the reserved control routes come before streams. */
	if (rawlen >= plen + 4 && memcmp(r->uri + plen, "__ds", 4) == 0 &&
	    (rawlen == plen + 4 || r->uri[plen + 4] == '/')) {
		ds_subs_handle(r, r->uri + plen + 4, rawlen - plen - 4);
		return;
	}
	if (ds_path_decode(r->uri + plen, rawlen - plen, r->path,
	    sizeof(r->path), &plen) == -1) {
		ds_respond_error(r, 400, "invalid stream path");
		return;
	}
	/*
	 * PROTOCOL 6 reserves a first segment "__ds" for control APIs, routed
	 * above. Paths are case-sensitive, but "__DS", "%5F_ds" and the like
	 * are refused too, so that no stream can be mistaken for one.
	 */
	if (strncasecmp(r->path, "__ds", 4) == 0 &&
	    (r->path[4] == '/' || r->path[4] == '\0')) {
		ds_respond_error(r, 400, "a first path segment __ds, in any "
		    "letter case or encoding, is reserved");
		return;
	}
	for (rt = routes; rt < routes + nitems(routes); rt++)
		if (strcmp(r->method, rt->method) == 0)
			break;
	if (rt == routes + nitems(routes)) {
		ds_add_header(r, "Allow", ALLOW);
		ds_respond_error(r, 405, "method not allowed");
		return;
	}
	if (rt->body) {
		if ((name = ds_env_conflict(r->fr->envp)) != NULL) {
			snprintf(msg, sizeof(msg), "conflicting %s headers",
			    name);
			ds_respond_error(r, 400, msg);
			return;
		}
		if (ds_read_body(r) == -1)
			return;
	}
	rt->handle(r);
}
