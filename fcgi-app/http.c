/*
 * http.c: reading a FastCGI request and writing its response.
 *
 * Responses are written in one go: status line, the headers every response
 * carries (PROTOCOL 12.7 and CORS), the handler's headers, then the body.
 * Write errors (the client left) surface on FCGX_FFlush, which is checked.
 */
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <linux/sockios.h>

#include <errno.h>
#include <fastcgi.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fcgi-app/app.h"
#include "fcgi-app/metrics.h"
#include "fcgi-app/parse.h"

int64_t
ds_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *
ds_param(const struct ds_req *r, const char *name)
{
	return FCGX_GetParam(name, r->fr->envp);
}

/*
 * Test hook, only with ds-fcgi --test-hooks: sleeps as long as the
 * X-DS-Test-Pause header asks (ms, at most 10 s) between a handler's check
 * of a stream and the store call that acts on it, so that a test can race
 * a DELETE and a PUT (or a trim) against that window deterministically.
 */
void
ds_test_pause(struct ds_req *r)
{
	const char *v;
	uint64_t ms;

	if (!r->cfg->test_hooks ||
	    (v = ds_param(r, "HTTP_X_DS_TEST_PAUSE")) == NULL ||
	    ds_parse_uint(v, strlen(v), 10000, &ms) == -1)
		return;
	nanosleep(&(struct timespec){ (time_t)(ms / 1000),
	    (long)(ms % 1000) * 1000000L }, NULL);
}

/*
 * The request's Content-Type as the client sent it, or NULL when it sent
 * none. Front servers differ: nginx passes it as both CONTENT_TYPE and
 * HTTP_CONTENT_TYPE, lighttpd as CONTENT_TYPE only, and Caddy's FastCGI
 * transport passes HTTP_CONTENT_TYPE when the client sent one but fills
 * CONTENT_TYPE with "application/x-www-form-urlencoded" when it did not.
 */
const char *
ds_content_type(const struct ds_req *r)
{
	const char *v, *sw;

	if ((v = ds_param(r, "HTTP_CONTENT_TYPE")) != NULL)
		return v;
	sw = ds_param(r, "SERVER_SOFTWARE");
	if (sw != NULL && strncmp(sw, "Caddy/", 6) == 0)
		return NULL;
	return ds_param(r, "CONTENT_TYPE");
}

/*
 * Reads the request body into r->body, at most cfg->max_body bytes.
 * CONTENT_LENGTH may be absent, "-1" (Caddy passes chunked uploads that
 * way) or "0": then read to the end of the stream, so that a front server
 * that announces no length cannot slip a body past the limit or leave it
 * unread. Returns 0, or the status of the failure: 413 when the body is
 * over the limit (nothing of it is kept), 400 for a malformed or short
 * one, 500 when out of memory.
 */
static int
read_body(struct ds_req *r)
{
	const char *cl = ds_param(r, "CONTENT_LENGTH");
	size_t want, cap, got = 0;
	uint64_t n = 0;
	char *nb;
	int k;

	r->body = NULL;
	r->bodylen = 0;
	if (cl && *cl && strcmp(cl, "-1") != 0) {
		if (ds_parse_uint(cl, strlen(cl), UINT64_MAX / 2, &n) == -1)
			return 400;
		if (n > r->cfg->max_body)
			return 413;
	}
	if (n > 0) {
		want = (size_t)n;
		if ((r->body = malloc(want)) == NULL)
			return 500;
		while (got < want) {
			k = FCGX_GetStr(r->body + got, (int)(want - got > 65536 ?
			    65536 : want - got), r->fr->in);
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		if (got != want) {
			free(r->body);
			r->body = NULL;
			return 400;	/* the client sent less than it said */
		}
		r->bodylen = got;
		r->input_done = 1;
		return 0;
	}
	cap = 0;
	for (;;) {
		if (got == cap) {
			if (cap > r->cfg->max_body)
				break;
			cap = cap ? cap * 2 : 65536;
			if ((nb = realloc(r->body, cap)) == NULL) {
				free(r->body);
				r->body = NULL;
				return 500;
			}
			r->body = nb;
		}
		k = FCGX_GetStr(r->body + got, (int)(cap - got), r->fr->in);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	if (got > r->cfg->max_body) {
		free(r->body);
		r->body = NULL;
		return 413;
	}
	r->bodylen = got;
	r->input_done = 1;
	if (got == 0) {
		free(r->body);
		r->body = NULL;
	}
	return 0;
}

/* Reads the request body (read_body()). Returns 0, or -1 after answering. */
int
ds_read_body(struct ds_req *r)
{
	int st;

	if ((st = read_body(r)) == 0)
		return 0;
	return ds_respond_error(r, st, st == 413 ? "request body too large" :
	    st == 400 ? "malformed or truncated request body" :
	    "cannot read request body");
}

/*
 * Reads and drops whatever is left of the request body (a GET may carry
 * one), so that the connection has nothing more to read until the front
 * server closes it or aborts the request.
 */
void
ds_drain_body(struct ds_req *r)
{
	char trash[4096];

	while (FCGX_GetStr(trash, sizeof(trash), r->fr->in) > 0)
		continue;
	r->input_done = 1;
}

/*
 * Is v fit to be repeated in a response header? Horizontal tab, space,
 * visible ASCII and bytes of 0x80 and above (RFC 9110 field-vchar and
 * obs-text); no other control byte, so nothing stored from a request can
 * end a header line or forge one.
 */
int
ds_header_value_ok(const char *v)
{
	const unsigned char *p;

	for (p = (const unsigned char *)v; *p; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			return 0;
	return 1;
}

void
ds_add_header(struct ds_req *r, const char *name, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(r->hdr) - r->hdrlen;
	int n, m;

	n = snprintf(r->hdr + r->hdrlen, room, "%s: ", name);
	if (n < 0 || (size_t)n >= room) {
		r->hdr_overflow = 1;
		return;
	}
	va_start(ap, fmt);
	m = vsnprintf(r->hdr + r->hdrlen + n, room - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0 || (size_t)(n + m + 2) >= room) {
		r->hdr_overflow = 1;
		r->hdr[r->hdrlen] = '\0';
		return;
	}
	memcpy(r->hdr + r->hdrlen + n + m, "\r\n", 3);
	r->hdrlen += (size_t)(n + m + 2);
}

static const char *
reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 413: return "Payload Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

/* Headers every response carries: PROTOCOL 12.7 and CORS for browsers. */
static const char common_headers[] =
    "X-Content-Type-Options: nosniff\r\n"
    "Cross-Origin-Resource-Policy: cross-origin\r\n"
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Expose-Headers: Stream-Next-Offset, Stream-Cursor, "
    "Stream-Up-To-Date, Stream-Closed, Stream-TTL, Stream-Expires-At, "
    "Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, "
    "Content-Type\r\n";

/*
 * Writes the status line, the headers every response carries, the
 * Content-Type and Content-Length (length < 0: none, for a body of unknown
 * length such as SSE), then the handler's headers and the blank line.
 */
void
ds_respond_head(struct ds_req *r, int status, const char *ctype,
    int64_t length)
{
	FCGX_Stream *out = r->fr->out;
	char line[DS_CTYPE_MAX + 64];
	int n;

	ds_metrics_request(r->method, status);
	/* libfcgi's own printf lacks C99 length modifiers: format here. */
	n = snprintf(line, sizeof(line), "Status: %d %s\r\n", status,
	    reason(status));
	FCGX_PutStr(line, n, out);
	FCGX_PutStr(common_headers, (int)sizeof(common_headers) - 1, out);
	if (ctype && status != 204 && status != 304) {
		n = snprintf(line, sizeof(line), "Content-Type: %s\r\n", ctype);
		if (n > 0 && (size_t)n < sizeof(line))
			FCGX_PutStr(line, n, out);
	}
	if (length >= 0) {
		n = snprintf(line, sizeof(line), "Content-Length: %" PRId64
		    "\r\n", length);
		FCGX_PutStr(line, n, out);
	}
	FCGX_PutStr(r->hdr, (int)r->hdrlen, out);
	FCGX_PutStr("\r\n", 2, out);
}

/*
 * Large bodies go out as FastCGI records of up to REC_MAX bytes written
 * straight to the connection, REC_BATCH records a writev(): libfcgi would
 * cut them into records of its 8 KiB buffer, a write() each (129 of them
 * for a 1 MiB read).
 */
#define LARGE_BODY	(64 * 1024)
#define REC_MAX		65528		/* a multiple of 8: no padding */
#define REC_BATCH	16

/* writev() all of iov, waiting for room should the socket be non-blocking. */
static int
writev_all(int fd, struct iovec *iov, int cnt)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	ssize_t n;

	while (cnt > 0) {
		if ((n = writev(fd, iov, cnt)) == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && poll(&pfd, 1, -1) >= 0)
				continue;
			return -1;
		}
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* The header of a STDOUT record of k bytes (k <= REC_MAX) of request id. */
static void
rec_header(unsigned char h[8], int id, size_t k)
{
	h[0] = FCGI_VERSION_1;
	h[1] = FCGI_STDOUT;
	h[2] = (unsigned char)(id >> 8);
	h[3] = (unsigned char)id;
	h[4] = (unsigned char)(k >> 8);
	h[5] = (unsigned char)k;
	h[6] = 0;	/* padding */
	h[7] = 0;
}

/*
 * Writes body as STDOUT records of the request, after what libfcgi holds
 * (flushed first). Returns 0, or -1 when the front server is gone.
 */
int
ds_put_mem(struct ds_req *r, const char *p, size_t len)
{
	unsigned char hdr[REC_BATCH][8];
	struct iovec iov[2 * REC_BATCH];
	size_t k;
	int i, cnt;

	if (FCGX_FFlush(r->fr->out) == -1)
		return -1;
	while (len > 0) {
		cnt = 0;
		for (i = 0; i < REC_BATCH && len > 0; i++) {
			k = len > REC_MAX ? REC_MAX : len;
			rec_header(hdr[i], r->fr->requestId, k);
			iov[cnt].iov_base = hdr[i];
			iov[cnt++].iov_len = sizeof(hdr[i]);
			iov[cnt].iov_base = (void *)p;
			iov[cnt++].iov_len = k;
			p += k;
			len -= k;
		}
		if (writev_all(r->fr->ipcFd, iov, cnt) == -1)
			return -1;
	}
	return 0;
}

/*
 * An answer whose body the caller writes in pieces (answer.c, bytes sent
 * from segment files): ds_put_head(), then ds_put_file() and ds_put_mem()
 * until length bytes are written. Each returns 0, or -1 when the front
 * server is gone or, for ds_put_head(), the answer was an error instead.
 */
int
ds_put_head(struct ds_req *r, int status, const char *ctype, size_t length)
{
	if (r->hdr_overflow)
		return ds_respond(r, status, ctype, NULL, 0);
	ds_respond_head(r, status, ctype, (int64_t)length);
	return FCGX_FFlush(r->fr->out) == -1 ? -1 : 0;
}

/*
 * Can ds_put_file() send without copying, and ds_put_drained() tell when
 * the front server has read it, on connections accepted from listening
 * socket fd? Over a Unix socket only: a TCP send queue empties when the
 * peer's kernel has the bytes, not when the peer read them.
 */
int
ds_put_can_splice(int fd)
{
	struct sockaddr_storage ss;
	socklen_t n = sizeof(ss);

	return getsockname(fd, (struct sockaddr *)&ss, &n) == 0 &&
	    ss.ss_family == AF_UNIX;
}

/*
 * Sends the bytes [at, at + len) of file fd as STDOUT records, with
 * sendfile(): the socket queues references to the file's pages, not a copy,
 * so what the front server reads is what the file holds when it reads it
 * (see ds_put_drained()). A file shorter than that is an error.
 */
int
ds_put_file(struct ds_req *r, int fd, uint64_t at, size_t len)
{
	struct pollfd pfd = { .fd = r->fr->ipcFd, .events = POLLOUT };
	unsigned char h[8];
	struct iovec iov;
	off_t off = (off_t)at;
	size_t k, left;
	ssize_t n;

	while (len > 0) {
		k = len > REC_MAX ? REC_MAX : len;
		rec_header(h, r->fr->requestId, k);
		iov.iov_base = h;
		iov.iov_len = sizeof(h);
		if (writev_all(r->fr->ipcFd, &iov, 1) == -1)
			return -1;
		for (left = k; left > 0; left -= (size_t)n) {
			n = sendfile(r->fr->ipcFd, fd, &off, left);
			if (n == -1 && (errno == EINTR || (errno == EAGAIN &&
			    poll(&pfd, 1, -1) >= 0)))
				n = 0;
			else if (n <= 0)
				return -1;
		}
		len -= k;
	}
	return 0;
}

/*
 * Waits until the front server has read everything written to it: a Unix
 * socket's send queue (SIOCOUTQ) counts bytes until the reader has copied
 * them out, or closed. As long as a blocking write would wait: a front
 * server that does not buffer answers reads at its client's pace, and its
 * own timeouts end a stalled client. Naps of 0.1 to 1.6 ms (front servers
 * that buffer read within a few), growing to 51.2 ms after the first
 * second. Returns 0, or -1 when the socket fails.
 */
int
ds_put_drained(struct ds_req *r)
{
	struct timespec nap = { 0, 100000 };
	long waited = 0;
	int queued;

	for (;;) {
		if (ioctl(r->fr->ipcFd, SIOCOUTQ, &queued) == -1)
			return -1;
		if (queued == 0)
			return 0;
		nanosleep(&nap, NULL);
		waited += nap.tv_nsec;
		if (nap.tv_nsec < 1000000 || (waited > 1000000000L &&
		    nap.tv_nsec < 50000000))
			nap.tv_nsec *= 2;
	}
}

/*
 * Cuts the answer short: the front server sees the connection end before
 * the body does, and fails the response to its client rather than pass it
 * on whole.
 */
void
ds_put_cut(struct ds_req *r)
{
	(void)shutdown(r->fr->ipcFd, SHUT_RDWR);
}

/*
 * Writes the whole response. A body is not sent for HEAD, 204 and 304.
 * Returns -1: the request is answered (a write that fails, the client
 * gone, surfaces when the request ends).
 */
int
ds_respond(struct ds_req *r, int status, const char *ctype, const void *body,
    size_t len)
{
	FCGX_Stream *out = r->fr->out;
	int nobody;

	if (r->hdr_overflow) {
		/* Never send half a header block. */
		r->hdrlen = 0;
		r->hdr[0] = '\0';
		r->hdr_overflow = 0;
		status = 500;
		ctype = "text/plain; charset=utf-8";
		body = "response headers too large\n";
		len = strlen(body);
	}
	nobody = status == 204 || status == 304 ||
	    (r->method && strcmp(r->method, "HEAD") == 0);
	ds_respond_head(r, status, ctype, nobody ? -1 : (int64_t)len);
	if (!nobody && len >= LARGE_BODY)
		(void)ds_put_mem(r, body, len);	/* fails: the client is gone */
	else if (!nobody && len > 0)
		(void)FCGX_PutStr(body, (int)len, out);
	/*
	 * No flush here: FCGX_Finish_r() sends the rest together with the
	 * end-of-request records, one write and one wake-up of the front
	 * server per response instead of two (it matters at a thousand
	 * long-polls answered at once).
	 */
	return -1;
}

/* Answers status with msg as a text body. Returns -1 (answered). */
int
ds_respond_error(struct ds_req *r, int status, const char *msg)
{
	char buf[512];
	int n;

	n = snprintf(buf, sizeof(buf), "%s\n", msg);
	if (n < 0 || (size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	if (status != 304)
		ds_add_header(r, "Cache-Control", "no-store");
	return ds_respond(r, status, "text/plain; charset=utf-8", buf,
	    (size_t)n);
}

/*
 * The one place where store errors become HTTP statuses. Returns -1
 * (answered).
 */
int
ds_respond_store_error(struct ds_req *r, enum ds_err e)
{
	int status;

	switch (e) {
	case DS_ENOTFOUND:
		status = 404;
		break;
	case DS_EGONE:
	case DS_ETRIMMED:	/* PROTOCOL 5.6: before the earliest retained */
		status = 410;
		break;
	case DS_EEXIST:
	case DS_ESOURCE_GONE:
	case DS_ECLOSED:
	case DS_ECTYPE:
	case DS_ESEQ:
	case DS_EPRODUCER_GAP:
		status = 409;
		break;
	case DS_EPRODUCER_STALE:
		status = 403;
		break;
	case DS_EPRODUCER_BADSEQ:
	case DS_EOFFSET:
	case DS_ETOOBIG:
		status = 400;
		break;
	case DS_EFULL:
	case DS_ENOSPC:
		status = 507;
		break;
	case DS_ENOMEM:
	case DS_EREPLACED:	/* replaced again and again: try later */
		status = 503;
		break;
	case DS_EDEPTH:
		status = 400;
		break;
	default:
		status = 500;
		break;
	}
	return ds_respond_error(r, status, ds_strerror(e));
}

/*
 * Ends a request: sends what is buffered and the end records, then closes
 * the connection. libfcgi's own close shuts down the write side and then
 * reads until the front server closes, so that input still in flight (a
 * body we refused unread) cannot reset the connection under the answer.
 * That wait holds the thread until the front server has processed the
 * answer. When the request's input was read to its end (input_done: a
 * body read whole, or none announced), only the empty record that ends it
 * can follow, and it is on its way: read it, and close at once. Anything
 * else keeps libfcgi's careful close.
 */
void
ds_finish(FCGX_Request *fr, int input_done)
{
	if (input_done && fr->ipcFd >= 0 && fr->in &&
	    FCGX_GetChar(fr->in) == EOF)
		FCGX_Detach(fr);
	FCGX_Finish_r(fr);
}
