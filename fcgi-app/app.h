/*
 * app.h: what the FastCGI application's files share.
 */
#ifndef DS_APP_H
#define DS_APP_H

#include <stddef.h>
#include <stdint.h>

#include <fcgiapp.h>

#include "store/store.h"

#define DS_ROUTE_PREFIX "/v1/stream/"

/* Process-wide configuration, fixed before the first request. */
struct ds_cfg {
	const char	*data_dir;	/* --data */
	const char	*listen;	/* --listen, or NULL for fd 0 */
	unsigned	 threads;	/* --threads */
	size_t		 max_body;	/* --max-body: larger bodies get 413 */
	size_t		 chunk;		/* --chunk: bytes per catch-up read */
	const char	*notify;	/* --notify: ds-notify socket or NULL */
	unsigned	 longpoll_ms;	/* --long-poll-timeout */
	unsigned	 sse_ms;	/* --sse-lifetime */
	unsigned	 heartbeat_ms;	/* --sse-heartbeat */
	int		 test_hooks;	/* --test-hooks: honour X-DS-Test-Pause */
	int		 splice;	/* connections are Unix sockets:
					   ds_put_can_splice() */
	int		 webhook_loopback; /* --webhook-loopback: development
					   webhooks to loopback (PROTOCOL 6.2) */
	const char	*public_url;	/* --public-url: the stream root URL
					   clients use, behind a proxy */
	unsigned	 retry_base_ms;	/* --webhook-retry-base: first retry */
	unsigned	 retry_max_ms;	/* --webhook-retry-max: longest wait */
};

/* One request in flight, owned by the thread serving it or the lot. */
struct ds_req {
	FCGX_Request	*fr;
	const struct ds_cfg *cfg;
	struct ds_store	*store;
	const char	*method;
	const char	*uri;		/* REQUEST_URI as sent */
	const char	*query;		/* after '?', or "" */
	size_t		 querylen;
	char		 path[DS_PATH_MAX + 1]; /* decoded stream path */
	char		*body;		/* request body (malloc'd) or NULL */
	size_t		 bodylen;
	int64_t		 now;		/* ms since the epoch, at arrival */
	void		*parked;	/* its spot in the lot (lot.c) */
	int		 input_done;	/* the request body was read whole */
	char		 hdr[4096];	/* response headers being built */
	size_t		 hdrlen;
	int		 hdr_overflow;
};

/*
 * What a function of the HTTP side returns, one rule for all of fcgi-app:
 *
 *    0  the request is still the caller's: nothing was answered, go on;
 *   -1  it is not any more: it was answered (an error or the whole
 *       answer), the client is gone, or the lot took it (ds_lot_park());
 *       the caller returns at once and writes nothing more.
 *
 * So "if (check(r) == -1) return;" reads the same everywhere, and a check
 * ends with "return ds_respond_error(...)". Any other result (a flag, a
 * count) comes back through a pointer. Handlers always answer and return
 * void, as do functions that only write an answer (ds_send_read()).
 */

/* http.c: request and response plumbing. */
const char	*ds_param(const struct ds_req *, const char *name);
const char	*ds_content_type(const struct ds_req *);
int		 ds_read_body(struct ds_req *);	/* answers its errors */
void		 ds_drain_body(struct ds_req *);
int		 ds_header_value_ok(const char *);
void		 ds_add_header(struct ds_req *, const char *name,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void		 ds_respond_head(struct ds_req *, int status,
		    const char *ctype, int64_t length);
int		 ds_respond(struct ds_req *, int status, const char *ctype,
		    const void *body, size_t len);
int		 ds_respond_error(struct ds_req *, int status, const char *msg);
int		 ds_put_head(struct ds_req *, int status, const char *ctype,
		    size_t length);
int		 ds_put_can_splice(int listen_fd);
int		 ds_put_file(struct ds_req *, int fd, uint64_t at, size_t len);
int		 ds_put_mem(struct ds_req *, const char *p, size_t len);
int		 ds_put_drained(struct ds_req *);
void		 ds_put_cut(struct ds_req *);
int		 ds_respond_store_error(struct ds_req *, enum ds_err);
/* With --test-hooks, sleeps as X-DS-Test-Pause asks (http.c). */
void		 ds_test_pause(struct ds_req *);
int64_t		 ds_now_ms(void);
void		 ds_finish(FCGX_Request *, int input_done);

/*
 * retention.c: policies from --retention FILE, applied by one worker's
 * thread in the background. ds_retention_check() reports a file's errors
 * (each with its line) and returns -1 when there are any.
 */
int		 ds_retention_check(const char *file);
int		 ds_retention_start(struct ds_store *, const char *file,
		    const char *data_dir, unsigned interval_ms);

/*
 * scrape.c: answers the metrics path (metrics.h) and returns 1, or returns
 * 0 for any other URL.
 */
int		 ds_scrape(struct ds_req *);

/* handlers.c: the protocol. */
void		 ds_handle(struct ds_req *);

/* answer.c: the answers to reads, below the handlers and the live path. */
void		 ds_add_position(struct ds_req *, uint64_t next,
		    int up_to_date, int closed);
void		 ds_add_earliest(struct ds_req *, const struct ds_stream_info *);
void		 ds_send_read(struct ds_req *, const struct ds_stream_info *,
		    uint64_t from, const char *data, size_t len, int now_read,
		    uint64_t cursor);
/* Catch-up reads of at least DS_SPLICE_MIN bytes are sent from the file. */
#define DS_SPLICE_MIN	(64 * 1024)
void		 ds_send_spans(struct ds_req *, const struct ds_stream_info *,
		    const struct ds_spans *, size_t len);
uint64_t	 ds_cursor_next(int64_t now_ms, const char *client);

/* A read kept for the next long-poll waiting at the same place. */
struct ds_lp_memo {
	int		 valid;
	uint64_t	 id, from;
	enum ds_err	 e;
	struct ds_stream_info info;
	char		*data;
	size_t		 len;
};
int		 ds_longpoll_check(struct ds_req *, uint64_t id,
		    uint64_t from, const char *cursor, int64_t deadline,
		    size_t inline_max, int *large, struct ds_lp_memo *);
void		 ds_lp_memo_clear(struct ds_lp_memo *);

int		 ds_sse_head(struct ds_req *, const struct ds_stream_info *);
int		 ds_sse_data(struct ds_req *, const struct ds_stream_info *,
		    const char *data, size_t len);
void		 ds_sse_control(struct ds_req *, uint64_t next, int up_to_date,
		    int closed, const char *cursor);

#endif /* DS_APP_H */
