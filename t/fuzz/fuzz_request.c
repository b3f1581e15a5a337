/*
 * fuzz_request.c: libFuzzer target for the whole request path.
 *
 * Each input is a short session of HTTP requests. Every request goes over
 * real FastCGI: a client thread connects to a Unix socket that libfcgi
 * listens on, writes BEGIN_REQUEST, PARAMS and STDIN records the way a
 * front server does, and reads the answer to EOF, while this thread
 * accepts it with FCGX_Accept_r() and serves it exactly as serve() in
 * fcgi-app/main.c does: ds_handle() on the real store in a temporary
 * directory, then ds_finish(). No lot is started, so a long-poll waits in
 * this thread; the notifier is never started, so notify_publish() only
 * wakes local watches. Live timeouts are a few milliseconds.
 *
 * Beyond not crashing, every answer is checked and a violation aborts:
 * FastCGI framing that ends in FCGI_REQUEST_COMPLETE; a "Status: NNN"
 * line and a header block of well-formed lines, each a header the server
 * is known to send, none twice and none carrying a control byte (so no
 * CR/LF from a request reaches the response), ending in a blank line; no
 * 5xx but 501, 503 and 507; no body for HEAD, 204 and 304; a
 * Content-Length equal to the body on everything else but SSE; SSE bodies
 * made of events only. Any read of a JSON stream must be a JSON array
 * (jansson's json_loadb): no non-JSON body may get into a JSON stream.
 * Each PUT and POST (but those to the subscription routes under
 * /v1/stream/__ds/) is bracketed by a HEAD of its stream: a refused write
 * must leave the tail and the closed state as they were, and one that
 * succeeded must leave the tail it reported and is followed by a
 * catch-up read of the whole stream that has to end at that tail. After
 * each input the store must pass ds_store_verify() and is emptied, so
 * inputs do not depend on each other.
 *
 * Input format, meant to stay readable in crash files. Requests are
 * separated by the line "===". Each request is:
 *
 *	METHOD SP URI LF
 *	header lines LF
 *	LF
 *	body
 *
 * A URI starting with "~" is a stream URL: "~3?offset=-1" is
 * "/v1/stream/s3?offset=-1" (any other "~x" is "/v1/stream/x"), so a few
 * streams get created, appended to, read, forked and deleted over and
 * over. A header line "Name: value" becomes the param HTTP_NAME
 * (Content-Type and Content-Length become CONTENT_TYPE and CONTENT_LENGTH);
 * its value takes the same "~" shorthand and the escapes \r \n \t \\ \xHH,
 * so CR/LF can reach the server; a name given twice is sent twice.
 * CONTENT_LENGTH defaults to the body's true length (empty when there is
 * none). Lines starting with '=' set a param verbatim ("=HTTPS=on"), CR
 * and LF removed, as a front server sets its own. Lines starting with '!'
 * steer the harness:
 *
 *	!nocl		send no CONTENT_LENGTH at all
 *	!rep=N		the body repeated N times (up to MAX_WIRE_BODY)
 *	!rec=N		FastCGI records of at most N content bytes
 *	!lp=N !sse=N !hb=N	long-poll timeout, SSE lifetime and heartbeat
 *			in ms (default 2, 2 and 1; at most 50)
 *	!chunk=N	bytes per catch-up read (1024 to 65536, default 4096)
 *
 * Set FUZZ_REQUEST_VERBOSE=1 to print every request and its status.
 * t/fuzz/regress/fuzz_request/ holds the inputs of past findings; they
 * seed the corpus, so each run checks them first.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <fastcgi.h>
#include <fcgiapp.h>
#include <jansson.h>
#include <sanitizer/common_interface_defs.h>

#include "fcgi-app/app.h"
#include "fcgi-app/json.h"
#include "fcgi-app/parse.h"
#include "fcgi-app/subs.h"
#include "store/store.h"

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define SEP		"\n===\n"
#define MAX_REQS	16		/* requests per input */
#define MAX_PARAMS	48		/* params per request */
#define MAX_BODY	(64u << 10)	/* cfg.max_body */
#define MAX_WIRE_BODY	(MAX_BODY + 4096) /* bodies sent: 413 is reachable */
#define MAX_RESPONSE	(64u << 20)	/* more is a runaway response */
#define MAX_PROBE	64		/* catch-up reads per probe */
#define LIVE_MAX_MS	50

struct buf {
	char		*p;		/* always NUL-terminated */
	size_t		 len;
	size_t		 cap;
};

struct fz_param {
	char		*name;
	char		*value;
};

/* One request as decoded from the input. */
struct fz_req {
	char		*method;
	char		*uri;
	struct fz_param	 param[MAX_PARAMS];
	size_t		 nparam;
	struct buf	 body;
	int		 nocl;		/* send no CONTENT_LENGTH */
	int		 cl_given;	/* a header line set CONTENT_LENGTH */
	size_t		 rec;		/* FastCGI record content size */
	unsigned	 lp_ms;
	unsigned	 sse_ms;
	unsigned	 hb_ms;
	size_t		 chunk;
};

/* What came back, and what the checks found in it. */
struct fz_resp {
	struct buf	 raw;		/* every byte the client read */
	struct buf	 out;		/* the FCGI_STDOUT stream */
	int		 status;
	const char	*body;		/* into out */
	size_t		 bodylen;
	char		 ctype[DS_CTYPE_MAX + 64];
	char		 next[DS_OFFSET_LEN + 1]; /* Stream-Next-Offset */
	int		 up_to_date;	/* Stream-Up-To-Date: true */
	int		 closed;	/* Stream-Closed: true */
	int		 expiring;	/* Stream-TTL or Stream-Expires-At */
	int		 b64;		/* Stream-SSE-Data-Encoding: base64 */
};

struct client {
	const char	*wire;
	size_t		 wirelen;
	struct buf	 got;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		 sending;	/* the first bytes are on their way */
	atomic_int	 accepted;	/* FCGX_Accept_r() returned */
};

static char		 dir[4096];
static char		 sockpath[sizeof(((struct sockaddr_un *)0)->sun_path)];
static struct ds_store	*store;
static FCGX_Request	 fr;
static struct ds_cfg	 cfg;
static int		 verbose;

/*
 * Durability costs a disk flush per write, which this harness does not
 * need. These definitions take the place of libc's for the store objects
 * linked in here and, through the dynamic linker, for liblmdb too (its
 * mdb_env_sync() calls fdatasync()), as t/unit/store_crash_test.c does
 * with pwrite(). A bad descriptor still fails.
 */
__attribute__((visibility("default"))) int
fdatasync(int fd)
{

	return fcntl(fd, F_GETFD) == -1 ? -1 : 0;
}

__attribute__((visibility("default"))) int
fsync(int fd)
{

	return fcntl(fd, F_GETFD) == -1 ? -1 : 0;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{

	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) == -1)
		fprintf(stderr, "fuzz_request: remove %s: %s\n", path,
		    strerror(errno));
	return 0;
}

/*
 * Removes the temporary directory: at exit, when a sanitizer fires, and
 * before the harness aborts (libFuzzer's own crash and timeout handlers
 * leave without running either).
 */
static void
cleanup(void)
{

	if (dir[0] != '\0')
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	dir[0] = '\0';
}

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_request: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	cleanup();
	abort();
}

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	size_t	 cap;
	char	*np;

	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL)
			die("realloc: %s", strerror(errno));
		b->p = np;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_adds(struct buf *b, const char *s)
{

	buf_add(b, s, strlen(s));
}

static void
buf_free(struct buf *b)
{

	free(b->p);
	memset(b, 0, sizeof(*b));
}

static char *
xstrndup(const char *s, size_t n)
{
	char	*p;

	if ((p = strndup(s, n)) == NULL)
		die("strndup: %s", strerror(errno));
	return p;
}

/* Writes s[0..n) to stderr with control and high bytes escaped. */
static void
dump(const char *label, const char *s, size_t n)
{
	size_t	 i, lim = n > 4096 ? 4096 : n;
	int	 c;

	fprintf(stderr, "%s (%zu bytes): \"", label, n);
	for (i = 0; i < lim; i++) {
		c = (unsigned char)s[i];
		if (c == '\\' || c == '"')
			fprintf(stderr, "\\%c", c);
		else if (c == '\n')
			fprintf(stderr, "\\n");
		else if (c == '\r')
			fprintf(stderr, "\\r");
		else if (c < 0x20 || c >= 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fprintf(stderr, "\"%s\n", lim < n ? "..." : "");
}

static void
dump_req(const struct fz_req *q)
{
	size_t	 i;

	dump("method", q->method, strlen(q->method));
	dump("uri", q->uri, strlen(q->uri));
	for (i = 0; i < q->nparam; i++)
		dump(q->param[i].name, q->param[i].value,
		    strlen(q->param[i].value));
	dump("body", q->body.p ? q->body.p : "", q->body.len);
}

/* A violated invariant: shows the request and the answer, then aborts. */
static void
fail(const struct fz_req *q, const struct fz_resp *rs, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static void
fail(const struct fz_req *q, const struct fz_resp *rs, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_request: FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	dump_req(q);
	if (rs != NULL)
		dump("response", rs->out.p ? rs->out.p : "", rs->out.len);
	cleanup();
	abort();
}

/*
 * Sets up what a worker has before its first accept: the store, libfcgi
 * and the listening socket. No lot and no notifier (see the top).
 */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct ds_store_cfg	 scfg;
	const char		*tmp = getenv("TMPDIR");
	enum ds_err		 e;
	int			 fd;

	(void)argc;
	(void)argv;
	verbose = getenv("FUZZ_REQUEST_VERBOSE") != NULL;
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		die("signal: %s", strerror(errno));
	snprintf(dir, sizeof(dir), "%s/ds-fuzz-request-XXXXXX",
	    tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		die("mkdtemp %s: %s", dir, strerror(errno));
	if (atexit(cleanup) != 0)
		die("atexit failed");
	__sanitizer_set_death_callback(cleanup);
	if ((size_t)snprintf(sockpath, sizeof(sockpath), "%s/fcgi.sock",
	    dir) >= sizeof(sockpath))
		die("socket path too long: %s", dir);

	memset(&scfg, 0, sizeof(scfg));
	scfg.dir = dir;
	scfg.map_size = 256u << 20;	/* emptied after each input */
	if ((e = ds_store_open(&scfg, &store)) != DS_OK)
		die("ds_store_open %s: %s", dir, ds_strerror(e));
	/* The __ds routes sign and check tokens as ds-fcgi does. */
	if (ds_keys_load(store) == -1)
		die("ds_keys_load failed");

	cfg.data_dir = dir;
	cfg.listen = sockpath;
	cfg.threads = 1;
	cfg.max_body = MAX_BODY;
	if (FCGX_Init() != 0)
		die("FCGX_Init failed");
	if ((fd = FCGX_OpenSocket(sockpath, 16)) < 0)
		die("FCGX_OpenSocket %s failed", sockpath);
	if (FCGX_InitRequest(&fr, fd, 0) != 0)
		die("FCGX_InitRequest failed");
	return 0;
}

/* Lets the server thread go on to accept: the request has started. */
static void
client_sending(struct client *c)
{

	if (c->sending)
		return;
	if ((errno = pthread_mutex_lock(&c->mu)) != 0)
		die("pthread_mutex_lock: %s", strerror(errno));
	c->sending = 1;
	if ((errno = pthread_cond_signal(&c->cv)) != 0 ||
	    (errno = pthread_mutex_unlock(&c->mu)) != 0)
		die("pthread_cond_signal: %s", strerror(errno));
}

/*
 * The client side of one request: connects, writes the wire bytes and
 * reads everything that comes back until the server closes. Reading and
 * writing are interleaved, so neither side can block the other however
 * large the request or the answer. It never shuts its write side down:
 * live reads take that for a client that went away.
 *
 * The server thread accepts only once the first bytes are sent: libfcgi
 * drops a Unix-socket connection that has nothing to read within two
 * seconds of its accept (is_af_unix_keeper), and on a busy machine the
 * client thread may not run that soon. A connection closed before the
 * accept returned would leave the server thread in accept for good, so
 * that aborts here.
 */
static void *
client_run(void *arg)
{
	struct client		*c = arg;
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	char			 tmp[65536];
	size_t			 sent = 0;
	ssize_t			 n;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, sockpath, strlen(sockpath) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		die("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		die("connect %s: %s", sockpath, strerror(errno));
	if (fcntl(fd, F_SETFL, O_NONBLOCK) == -1)
		die("fcntl: %s", strerror(errno));
	for (;;) {
		pfd.fd = fd;
		pfd.events = POLLIN | (sent < c->wirelen ? POLLOUT : 0);
		pfd.revents = 0;
		if (poll(&pfd, 1, -1) == -1) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if ((pfd.revents & POLLOUT) && sent < c->wirelen) {
			n = send(fd, c->wire + sent, c->wirelen - sent,
			    MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n == -1 && (errno == EPIPE ||
			    errno == ECONNRESET))
				sent = c->wirelen;	/* it stopped reading */
			else if (n == -1 && errno != EAGAIN && errno != EINTR)
				die("send: %s", strerror(errno));
			if (sent > 0)
				client_sending(c);
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(fd, tmp, sizeof(tmp), 0);
			if (n == 0)
				break;
			if (n == -1) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				if (errno == ECONNRESET)
					break;
				die("recv: %s", strerror(errno));
			}
			buf_add(&c->got, tmp, (size_t)n);
			if (c->got.len > MAX_RESPONSE)
				die("response over %u bytes", MAX_RESPONSE);
		}
	}
	if (!atomic_load(&c->accepted))
		die("the server closed the connection before it accepted "
		    "the request");
	if (close(fd) == -1)
		die("close: %s", strerror(errno));
	return NULL;
}

static void
rec_header(struct buf *w, int type, size_t len, size_t pad)
{
	unsigned char h[FCGI_HEADER_LEN];

	h[0] = FCGI_VERSION_1;
	h[1] = (unsigned char)type;
	h[2] = 0;
	h[3] = 1;			/* request id */
	h[4] = (unsigned char)(len >> 8);
	h[5] = (unsigned char)len;
	h[6] = (unsigned char)pad;
	h[7] = 0;
	buf_add(w, h, sizeof(h));
}

/* One FastCGI stream: records of at most rec bytes, padded to 8 as nginx
 * does, then the empty record that ends the stream. */
static void
put_stream(struct buf *w, int type, const char *p, size_t len, size_t rec)
{
	static const char	 zero[8];
	size_t			 n, pad;

	while (len > 0) {
		n = len < rec ? len : rec;
		pad = (8 - n % 8) % 8;
		rec_header(w, type, n, pad);
		buf_add(w, p, n);
		buf_add(w, zero, pad);
		p += n;
		len -= n;
	}
	rec_header(w, type, 0, 0);
}

/* A name or value length in a FastCGI name-value pair (spec 3.4). */
static void
put_nvlen(struct buf *b, size_t n)
{
	unsigned char l[4];

	if (n < 128) {
		l[0] = (unsigned char)n;
		buf_add(b, l, 1);
		return;
	}
	l[0] = (unsigned char)(0x80 | ((n >> 24) & 0x7f));
	l[1] = (unsigned char)(n >> 16);
	l[2] = (unsigned char)(n >> 8);
	l[3] = (unsigned char)n;
	buf_add(b, l, 4);
}

static void
put_pair(struct buf *b, const char *name, const char *value)
{

	put_nvlen(b, strlen(name));
	put_nvlen(b, strlen(value));
	buf_adds(b, name);
	buf_adds(b, value);
}

/* Everything the front server sends for q, in the order nginx uses. */
static void
build_wire(const struct fz_req *q, struct buf *w)
{
	struct buf	 pv = { 0 };
	unsigned char	 begin[8] = { 0, FCGI_RESPONDER, 0, 0, 0, 0, 0, 0 };
	const char	*qs;
	char		 cl[32];
	size_t		 i;

	qs = strchr(q->uri, '?');
	put_pair(&pv, "QUERY_STRING", qs ? qs + 1 : "");
	put_pair(&pv, "REQUEST_METHOD", q->method);
	if (!q->nocl && !q->cl_given) {
		if (q->body.len > 0)
			snprintf(cl, sizeof(cl), "%zu", q->body.len);
		else
			cl[0] = '\0';
		put_pair(&pv, "CONTENT_LENGTH", cl);
	}
	put_pair(&pv, "SCRIPT_NAME", "");
	put_pair(&pv, "REQUEST_URI", q->uri);
	put_pair(&pv, "SERVER_PROTOCOL", "HTTP/1.1");
	put_pair(&pv, "GATEWAY_INTERFACE", "CGI/1.1");
	put_pair(&pv, "SERVER_NAME", "localhost");
	put_pair(&pv, "SERVER_PORT", "80");
	for (i = 0; i < q->nparam; i++)
		put_pair(&pv, q->param[i].name, q->param[i].value);

	rec_header(w, FCGI_BEGIN_REQUEST, sizeof(begin), 0);
	buf_add(w, begin, sizeof(begin));
	put_stream(w, FCGI_PARAMS, pv.p, pv.len, q->rec);
	put_stream(w, FCGI_STDIN, q->body.p, q->body.len, q->rec);
	buf_free(&pv);
}

/*
 * Splits what the client read into FastCGI records: STDOUT is gathered
 * into rs->out; the last record must end the request as complete.
 */
static void
parse_records(const struct fz_req *q, struct fz_resp *rs)
{
	const unsigned char	*p = (const unsigned char *)rs->raw.p;
	size_t			 n = rs->raw.len, off = 0, clen, plen;
	int			 ended = 0;

	while (off < n) {
		if (ended)
			fail(q, rs, "data after FCGI_END_REQUEST");
		if (n - off < FCGI_HEADER_LEN)
			fail(q, rs, "truncated FastCGI record header");
		clen = (size_t)p[off + 4] << 8 | p[off + 5];
		plen = p[off + 6];
		if (p[off] != FCGI_VERSION_1 || p[off + 2] != 0 ||
		    p[off + 3] != 1)
			fail(q, rs, "bad FastCGI record version or id");
		if (n - off - FCGI_HEADER_LEN < clen + plen)
			fail(q, rs, "truncated FastCGI record");
		switch (p[off + 1]) {
		case FCGI_STDOUT:
			buf_add(&rs->out, p + off + FCGI_HEADER_LEN, clen);
			break;
		case FCGI_STDERR:
			break;
		case FCGI_END_REQUEST:
			if (clen != 8 || p[off + FCGI_HEADER_LEN + 4] !=
			    FCGI_REQUEST_COMPLETE)
				fail(q, rs, "bad FCGI_END_REQUEST");
			ended = 1;
			break;
		default:
			fail(q, rs, "unexpected FastCGI record type %d",
			    p[off + 1]);
		}
		off += FCGI_HEADER_LEN + clen + plen;
	}
	if (!ended)
		fail(q, rs, "no FCGI_END_REQUEST");
	if (rs->out.p == NULL)
		buf_add(&rs->out, "", 0);
}

/* Every header the server may send, besides the Status line. */
static const char *const hdrs[] = {
	"X-Content-Type-Options", "Cross-Origin-Resource-Policy",
	"Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
	"Access-Control-Max-Age", "Allow", "Content-Type", "Content-Length",
	"Cache-Control", "ETag", "Location", "X-Accel-Buffering",
	"Stream-Next-Offset", "Stream-Up-To-Date", "Stream-Closed",
	"Stream-Cursor", "Stream-TTL", "Stream-Expires-At",
	"Stream-SSE-Data-Encoding", "Producer-Epoch", "Producer-Seq",
	"Producer-Expected-Seq", "Producer-Received-Seq",
};
#define NHDRS	(sizeof(hdrs) / sizeof(hdrs[0]))

/* RFC 7230 tchar. */
static int
is_tchar(int c)
{

	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

/* Is a media type application/json? Written apart from parse.c on purpose. */
static int
is_json_type(const char *v)
{
	static const char	 js[] = "application/json";

	while (*v == ' ' || *v == '\t')
		v++;
	if (strncasecmp(v, js, sizeof(js) - 1) != 0)
		return 0;
	v += sizeof(js) - 1;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ';';
}

static int
is_offset(const char *v)
{
	size_t	 i;

	if (strlen(v) != DS_OFFSET_LEN || v[16] != '_')
		return 0;
	for (i = 0; i < DS_OFFSET_LEN; i++)
		if (i != 16 && !isdigit((unsigned char)v[i]))
			return 0;
	return 1;
}

/*
 * A read of a JSON stream must be one JSON array. jansson refuses some
 * valid JSON the server rightly keeps (numbers beyond its range, escaped
 * lone surrogates): those pass.
 */
static void
check_json(const struct fz_req *q, const struct fz_resp *rs, const char *p,
    size_t n, int want_array)
{
	json_error_t	 err;
	json_t		*j;

	if ((j = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL,
	    &err)) == NULL) {
		if (json_error_code(&err) == json_error_numeric_overflow ||
		    strstr(err.text, "invalid Unicode") != NULL)
			return;
		fail(q, rs, "JSON stream read is not JSON: %s at %d",
		    err.text, err.position);
	}
	if (want_array ? !json_is_array(j) : !json_is_object(j))
		fail(q, rs, "JSON read is not an %s",
		    want_array ? "array" : "object");
	json_decref(j);
}

/*
 * An SSE body (PROTOCOL 5.8) is a sequence of events: "event:" lines
 * followed by "data:" lines and a blank line, or ":" comments. Control
 * events carry a JSON object; base64 data uses the base64 alphabet.
 */
static void
check_sse(const struct fz_req *q, const struct fz_resp *rs)
{
	const char	*p = rs->body, *end = rs->body + rs->bodylen, *nl;
	const char	*line;
	size_t		 len, i;
	int		 control = 0, data = 0;

	if (rs->bodylen > 0 && end[-1] != '\n')
		fail(q, rs, "SSE body ends inside a line");
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		line = p;
		len = (size_t)(nl - p);
		if (memchr(line, '\r', len) != NULL)
			fail(q, rs, "CR inside an SSE line");
		if (len == 0) {
			control = data = 0;
			continue;
		}
		if (line[0] == ':')
			continue;
		if (len == 11 && memcmp(line, "event: data", 11) == 0) {
			data = 1;
			continue;
		}
		if (len == 14 && memcmp(line, "event: control", 14) == 0) {
			control = 1;
			continue;
		}
		if (len < 5 || memcmp(line, "data:", 5) != 0 ||
		    (!control && !data))
			fail(q, rs, "SSE line is not part of an event");
		if (control)
			check_json(q, rs, line + 5, len - 5, 0);
		else if (rs->b64)
			for (i = 5; i < len; i++)
				if (!isalnum((unsigned char)line[i]) &&
				    !strchr("+/=", line[i]))
					fail(q, rs, "bad base64 in SSE data");
	}
}

/*
 * Checks the answer to q against everything a response must be (see the
 * top of the file) and fills in what the caller needs from it.
 */
static void
check_response(const struct fz_req *q, struct fz_resp *rs)
{
	const char	*o, *end, *p, *eol, *colon, *v;
	char		 seen[NHDRS];
	size_t		 i, k, vlen;
	uint64_t	 cl = 0;
	int		 has_cl = 0, nobody, sse, c;

	parse_records(q, rs);
	o = rs->out.p;
	if (rs->out.len < 13 || memcmp(o, "Status: ", 8) != 0 ||
	    !isdigit((unsigned char)o[8]) || !isdigit((unsigned char)o[9]) ||
	    !isdigit((unsigned char)o[10]) || o[11] != ' ')
		fail(q, rs, "the answer does not start with a Status line");
	rs->status = (o[8] - '0') * 100 + (o[9] - '0') * 10 + (o[10] - '0');
	if ((end = memmem(o, rs->out.len, "\r\n\r\n", 4)) == NULL)
		fail(q, rs, "no blank line after the headers");
	rs->body = end + 4;
	rs->bodylen = rs->out.len - (size_t)(rs->body - o);

	memset(seen, 0, sizeof(seen));
	rs->ctype[0] = rs->next[0] = '\0';
	rs->up_to_date = rs->closed = rs->expiring = rs->b64 = 0;
	for (p = o; p < end + 2; p = eol + 2) {
		eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		for (v = p; v < eol; v++) {
			c = (unsigned char)*v;
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				fail(q, rs, "control byte 0x%02x in a response "
				    "header", c);
		}
		if (p == o)
			continue;	/* the Status line */
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL ||
		    colon == p || colon[1] != ' ')
			fail(q, rs, "malformed response header line");
		for (v = p; v < colon; v++)
			if (!is_tchar((unsigned char)*v))
				fail(q, rs, "bad response header name");
		for (k = 0; k < NHDRS; k++)
			if (strlen(hdrs[k]) == (size_t)(colon - p) &&
			    memcmp(hdrs[k], p, (size_t)(colon - p)) == 0)
				break;
		if (k == NHDRS)
			fail(q, rs, "unknown response header %.*s",
			    (int)(colon - p), p);
		if (seen[k]++)
			fail(q, rs, "response header %s sent twice", hdrs[k]);
		v = colon + 2;
		vlen = (size_t)(eol - v);
		if (strcmp(hdrs[k], "Content-Type") == 0) {
			if (vlen >= sizeof(rs->ctype))
				fail(q, rs, "Content-Type too long");
			memcpy(rs->ctype, v, vlen);
			rs->ctype[vlen] = '\0';
		} else if (strcmp(hdrs[k], "Content-Length") == 0) {
			has_cl = 1;
			if (vlen == 0 || vlen > 15)
				fail(q, rs, "bad Content-Length");
			for (i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)v[i]))
					fail(q, rs, "bad Content-Length");
				cl = cl * 10 + (uint64_t)(v[i] - '0');
			}
		} else if (strcmp(hdrs[k], "Stream-Next-Offset") == 0) {
			if (vlen != DS_OFFSET_LEN)
				fail(q, rs, "bad Stream-Next-Offset");
			memcpy(rs->next, v, vlen);
			rs->next[vlen] = '\0';
			if (!is_offset(rs->next))
				fail(q, rs, "bad Stream-Next-Offset");
		} else if (strcmp(hdrs[k], "Stream-Up-To-Date") == 0)
			rs->up_to_date = vlen == 4 && memcmp(v, "true", 4) == 0;
		else if (strcmp(hdrs[k], "Stream-Closed") == 0)
			rs->closed = vlen == 4 && memcmp(v, "true", 4) == 0;
		else if (strcmp(hdrs[k], "Stream-TTL") == 0 ||
		    strcmp(hdrs[k], "Stream-Expires-At") == 0)
			rs->expiring = 1;
		else if (strcmp(hdrs[k], "Stream-SSE-Data-Encoding") == 0)
			rs->b64 = vlen == 6 && memcmp(v, "base64", 6) == 0;
	}

	if (rs->status < 200 || rs->status > 599 ||
	    (rs->status >= 300 && rs->status < 400 && rs->status != 304))
		fail(q, rs, "unexpected status %d", rs->status);
	if (rs->status >= 500 && rs->status != 501 && rs->status != 503 &&
	    rs->status != 507)
		fail(q, rs, "status %d", rs->status);
	nobody = rs->status == 204 || rs->status == 304 ||
	    strcmp(q->method, "HEAD") == 0;
	sse = rs->status == 200 && strcmp(rs->ctype, "text/event-stream") == 0;
	if (nobody && rs->bodylen > 0)
		fail(q, rs, "a body on a response that must have none");
	if (sse) {
		if (has_cl)
			fail(q, rs, "Content-Length on SSE");
		check_sse(q, rs);
	} else if (!nobody && !has_cl)
		fail(q, rs, "no Content-Length");
	if (has_cl && cl != rs->bodylen)
		fail(q, rs, "Content-Length %llu, body %zu bytes",
		    (unsigned long long)cl, rs->bodylen);
	/* A read of a JSON stream is an array; a __ds document an object. */
	if (!sse && rs->status == 200 && strcmp(q->method, "GET") == 0 &&
	    is_json_type(rs->ctype))
		check_json(q, rs, rs->body, rs->bodylen,
		    strncmp(q->uri, "/v1/stream/__ds/", 16) != 0);
}

/* Serves q end to end, as serve() in fcgi-app/main.c serves a request. */
static void
run_request(const struct fz_req *q, struct fz_resp *rs)
{
	struct client	 c;
	struct buf	 wire = { 0 };
	struct ds_req	*r;
	pthread_t	 t;
	const char	*cl;

	build_wire(q, &wire);
	memset(&c, 0, sizeof(c));
	c.wire = wire.p;
	c.wirelen = wire.len;
	atomic_init(&c.accepted, 0);
	if ((errno = pthread_mutex_init(&c.mu, NULL)) != 0 ||
	    (errno = pthread_cond_init(&c.cv, NULL)) != 0)
		die("pthread_mutex_init: %s", strerror(errno));
	cfg.longpoll_ms = q->lp_ms;
	cfg.sse_ms = q->sse_ms;
	cfg.heartbeat_ms = q->hb_ms;
	cfg.chunk = q->chunk;
	if ((errno = pthread_create(&t, NULL, client_run, &c)) != 0)
		die("pthread_create: %s", strerror(errno));
	if ((errno = pthread_mutex_lock(&c.mu)) != 0)
		die("pthread_mutex_lock: %s", strerror(errno));
	while (!c.sending)
		if ((errno = pthread_cond_wait(&c.cv, &c.mu)) != 0)
			die("pthread_cond_wait: %s", strerror(errno));
	if ((errno = pthread_mutex_unlock(&c.mu)) != 0)
		die("pthread_mutex_unlock: %s", strerror(errno));
	if (FCGX_Accept_r(&fr) < 0)
		die("FCGX_Accept_r failed");
	atomic_store(&c.accepted, 1);
	/* Fresh memory each time, so ASan sees stale fields being read. */
	if ((r = malloc(sizeof(*r))) == NULL)
		die("malloc: %s", strerror(errno));
	memset(r, 0, offsetof(struct ds_req, hdr));
	r->hdrlen = 0;
	r->hdr_overflow = 0;
	r->hdr[0] = '\0';
	r->fr = &fr;
	r->cfg = &cfg;
	r->store = store;
	r->now = ds_now_ms();
	cl = FCGX_GetParam("CONTENT_LENGTH", fr.envp);
	r->input_done = cl == NULL || *cl == '\0' || strcmp(cl, "0") == 0;
	ds_handle(r);
	if (r->parked)
		die("a request was parked, but there is no lot");
	free(r->body);
	r->body = NULL;
	ds_finish(&fr, r->input_done);
	free(r);
	if ((errno = pthread_join(t, NULL)) != 0)
		die("pthread_join: %s", strerror(errno));
	pthread_cond_destroy(&c.cv);
	pthread_mutex_destroy(&c.mu);
	buf_free(&wire);

	memset(rs, 0, sizeof(*rs));
	rs->raw = c.got;
	check_response(q, rs);
	if (verbose)
		fprintf(stderr, "fuzz_request: %s %s -> %d\n", q->method,
		    q->uri, rs->status);
}

static void
resp_free(struct fz_resp *rs)
{

	buf_free(&rs->raw);
	buf_free(&rs->out);
}

static void
req_free(struct fz_req *q)
{
	size_t	 i;

	free(q->method);
	free(q->uri);
	for (i = 0; i < q->nparam; i++) {
		free(q->param[i].name);
		free(q->param[i].value);
	}
	buf_free(&q->body);
	memset(q, 0, sizeof(*q));
}

static void
req_init(struct fz_req *q)
{

	memset(q, 0, sizeof(*q));
	q->rec = 65535;
	q->lp_ms = 2;
	q->sse_ms = 2;
	q->hb_ms = 1;
	q->chunk = 4096;
}

static void
add_param(struct fz_req *q, const char *name, const char *value)
{

	if (q->nparam == MAX_PARAMS)
		return;
	q->param[q->nparam].name = xstrndup(name, strlen(name));
	q->param[q->nparam].value = xstrndup(value, strlen(value));
	q->nparam++;
}

/* The "~" shorthand for stream URLs, then s[0..n) as it is. */
static void
expand(struct buf *b, const char *s, size_t n)
{

	if (n > 0 && s[0] == '~') {
		buf_adds(b, DS_ROUTE_PREFIX);
		if (n > 1 && isdigit((unsigned char)s[1]))
			buf_adds(b, "s");
		s++;
		n--;
	}
	buf_add(b, s, n);
}

static int
hexval(int c)
{

	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A header value: the "~" shorthand and backslash escapes; NUL dropped. */
static char *
header_value(const char *s, size_t n)
{
	struct buf	 raw = { 0 }, b = { 0 };
	size_t		 i;
	char		 c;
	int		 h1, h2;

	expand(&raw, s, n);
	for (i = 0; i < raw.len; i++) {
		c = raw.p[i];
		if (c == '\\' && i + 1 < raw.len) {
			switch (raw.p[++i]) {
			case 'r':
				c = '\r';
				break;
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'x':
				if (i + 2 < raw.len &&
				    (h1 = hexval((unsigned char)raw.p[i + 1]))
				    != -1 &&
				    (h2 = hexval((unsigned char)raw.p[i + 2]))
				    != -1) {
					c = (char)(h1 << 4 | h2);
					i += 2;
				} else
					c = 'x';
				break;
			default:
				c = raw.p[i];
				break;
			}
		}
		if (c != '\0')
			buf_add(&b, &c, 1);
	}
	buf_free(&raw);
	if (b.p == NULL)
		buf_add(&b, "", 0);
	return b.p;
}

static unsigned
ctl_num(const char *s, size_t n, unsigned min, unsigned max)
{
	unsigned long	 v = 0;
	size_t		 i;

	for (i = 0; i < n && isdigit((unsigned char)s[i]) && v <= max; i++)
		v = v * 10 + (unsigned long)(s[i] - '0');
	return v < min ? min : v > max ? max : (unsigned)v;
}

/* A "!" line: steers the harness for this request. */
static void
control_line(struct fz_req *q, const char *s, size_t n, unsigned *rep)
{

	if (n == 5 && memcmp(s, "!nocl", 5) == 0)
		q->nocl = 1;
	else if (n > 5 && memcmp(s, "!rep=", 5) == 0)
		*rep = ctl_num(s + 5, n - 5, 1, 1024);
	else if (n > 5 && memcmp(s, "!rec=", 5) == 0)
		q->rec = ctl_num(s + 5, n - 5, 1, 65535);
	else if (n > 4 && memcmp(s, "!lp=", 4) == 0)
		q->lp_ms = ctl_num(s + 4, n - 4, 0, LIVE_MAX_MS);
	else if (n > 5 && memcmp(s, "!sse=", 5) == 0)
		q->sse_ms = ctl_num(s + 5, n - 5, 0, LIVE_MAX_MS);
	else if (n > 4 && memcmp(s, "!hb=", 4) == 0)
		q->hb_ms = ctl_num(s + 4, n - 4, 1, LIVE_MAX_MS);
	else if (n > 7 && memcmp(s, "!chunk=", 7) == 0)
		q->chunk = ctl_num(s + 7, n - 7, 1024, 65536);
}

/* A header line "Name: value" or a raw "=NAME=value" param. */
static void
header_line(struct fz_req *q, const char *s, size_t n)
{
	struct buf	 name = { 0 };
	const char	*colon, *eq;
	char		*value, c;
	size_t		 i;

	if (s[0] == '=') {
		s++;
		n--;
		if ((eq = memchr(s, '=', n)) == NULL || eq == s)
			return;
		for (i = 0; i < (size_t)(eq - s); i++)
			if (s[i] != '\0')
				buf_add(&name, &s[i], 1);
		value = header_value(eq + 1, n - (size_t)(eq - s) - 1);
		for (i = 0; value[i] != '\0'; i++)
			if (value[i] == '\r' || value[i] == '\n')
				value[i] = ' ';
		if (name.p != NULL)
			add_param(q, name.p, value);
		free(value);
		buf_free(&name);
		return;
	}
	if ((colon = memchr(s, ':', n)) == NULL)
		colon = s + n;
	if (colon - s == 12 && strncasecmp(s, "Content-Type", 12) == 0)
		buf_adds(&name, "CONTENT_TYPE");
	else if (colon - s == 14 && strncasecmp(s, "Content-Length", 14) == 0) {
		buf_adds(&name, "CONTENT_LENGTH");
		q->cl_given = 1;
	} else {
		buf_adds(&name, "HTTP_");
		for (i = 0; i < (size_t)(colon - s); i++) {
			c = s[i] == '-' ? '_' :
			    (char)toupper((unsigned char)s[i]);
			if (c != '\0')
				buf_add(&name, &c, 1);
		}
	}
	if (colon < s + n)
		colon++;
	while (colon < s + n && (*colon == ' ' || *colon == '\t'))
		colon++;
	value = header_value(colon, (size_t)(s + n - colon));
	add_param(q, name.p, value);
	free(value);
	buf_free(&name);
}

/* Decodes one request from s[0..n) (see the top of the file). */
static void
decode_request(struct fz_req *q, const char *s, size_t n)
{
	struct buf	 uri = { 0 };
	const char	*end = s + n, *nl, *sp, *u;
	size_t		 i, len, total;
	unsigned	 rep = 1;

	req_init(q);
	nl = memchr(s, '\n', n);
	len = nl ? (size_t)(nl - s) : n;
	sp = memchr(s, ' ', len);
	q->method = xstrndup(s, sp ? (size_t)(sp - s) : len);
	u = sp ? sp + 1 : s + len;
	/* Front servers refuse CR and LF in the request line. */
	expand(&uri, u, (size_t)(s + len - u));
	for (i = 0; i < uri.len; i++)
		if (uri.p[i] == '\r')
			uri.p[i] = ' ';
	q->uri = xstrndup(uri.p ? uri.p : "", uri.len);
	buf_free(&uri);

	for (s = nl ? nl + 1 : end; s < end; s = nl + 1) {
		nl = memchr(s, '\n', (size_t)(end - s));
		if (nl == NULL)
			nl = end;
		len = (size_t)(nl - s);
		if (len == 0) {
			s = nl + 1;
			break;
		}
		if (s[0] == '!')
			control_line(q, s, len, &rep);
		else
			header_line(q, s, len);
		if (nl == end) {
			s = end;
			break;
		}
	}
	if (s < end) {
		len = (size_t)(end - s);
		for (total = 0; rep > 0 && total < MAX_WIRE_BODY; rep--) {
			i = len < MAX_WIRE_BODY - total ? len :
			    MAX_WIRE_BODY - total;
			buf_add(&q->body, s, i);
			total += i;
		}
	}
}

/* A request of the harness's own for the stream of w's URI plus query. */
static void
own_request(struct fz_req *q, const char *method, const struct fz_req *w,
    const char *query)
{
	size_t	 plen = strcspn(w->uri, "?");

	req_init(q);
	q->method = xstrndup(method, strlen(method));
	if ((q->uri = malloc(plen + strlen(query) + 1)) == NULL)
		die("malloc: %s", strerror(errno));
	memcpy(q->uri, w->uri, plen);
	strcpy(q->uri + plen, query);
	q->chunk = w->chunk;
}

/* What HEAD says of the stream that w wrote to. */
static void
snapshot(const struct fz_req *w, struct fz_resp *rs)
{
	struct fz_req	 q;

	own_request(&q, "HEAD", w, "");
	run_request(&q, rs);
	req_free(&q);
}

static uint64_t
offset_pos(const char *off)
{

	return strtoull(off + 17, NULL, 10);
}

/*
 * After a write that succeeded: reads the whole stream from the start,
 * chunk by chunk, through the server. check_response() checks each
 * answer, JSON included. Unless the stream may expire meanwhile, the read
 * must end where HEAD (after) put the tail, and every chunk of a byte
 * stream must move the offset on by its length.
 */
static void
probe(const struct fz_req *w, const struct fz_resp *after)
{
	struct fz_req	 q;
	struct fz_resp	 rs;
	char		 next[DS_OFFSET_LEN + 1], query[64];
	uint64_t	 pos = 0;
	int		 i, json;

	strcpy(next, "-1");
	for (i = 0; i < MAX_PROBE; i++) {
		snprintf(query, sizeof(query), "?offset=%s", next);
		own_request(&q, "GET", w, query);
		run_request(&q, &rs);
		if (rs.status != 200 || rs.next[0] == '\0') {
			resp_free(&rs);
			req_free(&q);
			return;
		}
		json = is_json_type(rs.ctype);
		if (!json && offset_pos(rs.next) != pos + rs.bodylen)
			fail(&q, &rs, "a read of %zu bytes at %llu moved the "
			    "offset to %s", rs.bodylen,
			    (unsigned long long)pos, rs.next);
		pos = offset_pos(rs.next);
		if (rs.up_to_date) {
			if (!after->expiring && after->status == 200 &&
			    strcmp(rs.next, after->next) != 0)
				fail(&q, &rs, "the read ends at %s, HEAD said "
				    "%s", rs.next, after->next);
			resp_free(&rs);
			req_free(&q);
			return;
		}
		if (strcmp(rs.next, next) == 0 && i > 0)
			fail(&q, &rs, "a read that is not up to date made no "
			    "progress");
		strcpy(next, rs.next);
		resp_free(&rs);
		req_free(&q);
	}
}

/*
 * Runs the write q, with a HEAD of its stream before and after. A write
 * refused with 4xx or 5xx must change nothing (handlers.c validates before
 * it touches the store); one that succeeded must leave the tail it
 * reported, and the stream is then read back whole (probe()).
 */
static void
run_write(const struct fz_req *q)
{
	struct fz_resp	 before, rs, after;

	snapshot(q, &before);
	run_request(q, &rs);
	snapshot(q, &after);
	if (before.expiring || rs.expiring || after.expiring)
		goto done;
	if (rs.status >= 400 && (before.status != after.status ||
	    strcmp(before.next, after.next) != 0 ||
	    before.closed != after.closed))
		fail(q, &rs, "refused with %d, yet HEAD went from %d %s%s to "
		    "%d %s%s", rs.status, before.status, before.next,
		    before.closed ? " closed" : "", after.status, after.next,
		    after.closed ? " closed" : "");
	if (rs.status >= 200 && rs.status < 300) {
		if (after.status != 200)
			fail(q, &rs, "written with %d, yet HEAD says %d",
			    rs.status, after.status);
		if (rs.next[0] != '\0' && strcmp(rs.next, after.next) != 0)
			fail(q, &rs, "written up to %s, yet HEAD says %s",
			    rs.next, after.next);
		if (rs.closed && !after.closed)
			fail(q, &rs, "closed, yet HEAD says open");
		probe(q, &after);
	}
done:
	resp_free(&before);
	resp_free(&rs);
	resp_free(&after);
}

struct paths {
	char		**v;
	size_t		  n;
};

static int
collect(const char *path, const struct ds_stream_info *i, void *arg)
{
	struct paths	*ps = arg;
	char		**nv;

	(void)i;
	if ((nv = realloc(ps->v, (ps->n + 1) * sizeof(*nv))) == NULL)
		die("realloc: %s", strerror(errno));
	ps->v = nv;
	ps->v[ps->n++] = xstrndup(path, strlen(path));
	return 0;
}

static void
paths_free(struct paths *ps)
{
	size_t	 i;

	for (i = 0; i < ps->n; i++)
		free(ps->v[i]);
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

/* ds_sub_foreach(): collects subscription ids. */
static int
collect_sub(const char *id, const struct ds_sub *sub, void *arg)
{
	struct ds_stream_info none;

	(void)sub;
	memset(&none, 0, sizeof(none));
	return collect(id, &none, arg);
}

/*
 * After an input: the store must pass its own verification, and deleting
 * every stream (soft-deleted sources go with their last fork) must leave
 * it empty, ready for the next input; every subscription is deleted too.
 */
static void
store_reset(void)
{
	struct paths	 ps = { 0 };
	unsigned	 streams, problems;
	enum ds_err	 e;
	size_t		 i;

	if ((e = ds_store_verify(store, ds_json_record_ok, &streams,
	    &problems)) != DS_OK)
		die("FINDING: ds_store_verify: %s", ds_strerror(e));
	if (problems > 0)
		die("FINDING: ds_store_verify: %u problems in %u streams",
		    problems, streams);
	if ((e = ds_store_foreach(store, collect, &ps)) != DS_OK)
		die("ds_store_foreach: %s", ds_strerror(e));
	for (i = 0; i < ps.n; i++) {
		e = ds_store_delete(store, ps.v[i]);
		if (e != DS_OK && e != DS_ENOTFOUND && e != DS_EGONE)
			die("FINDING: ds_store_delete %s: %s", ps.v[i],
			    ds_strerror(e));
	}
	paths_free(&ps);
	if ((e = ds_sub_foreach(store, collect_sub, &ps)) != DS_OK)
		die("ds_sub_foreach: %s", ds_strerror(e));
	for (i = 0; i < ps.n; i++)
		if ((e = ds_sub_delete(store, ps.v[i])) != DS_OK)
			die("FINDING: ds_sub_delete %s: %s", ps.v[i],
			    ds_strerror(e));
	paths_free(&ps);
	if ((e = ds_store_foreach(store, collect, &ps)) != DS_OK)
		die("ds_store_foreach: %s", ds_strerror(e));
	if (ps.n > 0)
		die("FINDING: %zu streams left after deleting all, first %s",
		    ps.n, ps.v[0]);
	paths_free(&ps);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*s = (const char *)data, *end = s + size, *sep;
	struct fz_req	 q;
	struct fz_resp	 rs;
	int		 nreq;

	for (nreq = 0; s < end && nreq < MAX_REQS; nreq++) {
		if ((sep = memmem(s, (size_t)(end - s), SEP,
		    sizeof(SEP) - 1)) == NULL)
			sep = end;
		decode_request(&q, s, (size_t)(sep - s));
		/* Writes to streams are bracketed; __ds routes are no stream. */
		if ((strcmp(q.method, "PUT") == 0 ||
		    strcmp(q.method, "POST") == 0) &&
		    strncmp(q.uri, "/v1/stream/__ds/", 16) != 0)
			run_write(&q);
		else {
			run_request(&q, &rs);
			resp_free(&rs);
		}
		req_free(&q);
		s = sep == end ? end : sep + sizeof(SEP) - 1;
	}
	store_reset();
	return 0;
}
