/*
 * scrape.c: the metrics path, GET /metrics (metrics.h), beside the stream
 * routes rather than under them: DS_METRICS_PATH is not under
 * DS_ROUTE_PREFIX, so no stream URL ever reaches it, and ds_handle() never
 * sees it. The front configs (deploy/) pass it to the pool from loopback
 * clients only; as a second fence the pool itself answers 403 to a client
 * whose REMOTE_ADDR is not a loopback address.
 */
#include <stdlib.h>
#include <string.h>

#include "fcgi-app/app.h"
#include "fcgi-app/metrics.h"

/* Is a the address of a loopback client (127.0.0.0/8 or ::1)? */
static int
loopback(const char *a)
{
	return a && (strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0 ||
	    strncmp(a, "::ffff:127.", 11) == 0);
}

int
ds_scrape(struct ds_req *r)
{
	const char *uri = ds_param(r, "REQUEST_URI");
	size_t n = strlen(DS_METRICS_PATH), len;
	char *text;

	if (uri == NULL || strncmp(uri, DS_METRICS_PATH, n) != 0 ||
	    (uri[n] != '\0' && uri[n] != '?'))
		return 0;
	r->method = ds_param(r, "REQUEST_METHOD");
	r->uri = uri;
	if (!loopback(ds_param(r, "REMOTE_ADDR"))) {
		ds_respond_error(r, 403, "metrics are for loopback clients");
		return 1;
	}
	if (r->method == NULL || (strcmp(r->method, "GET") != 0 &&
	    strcmp(r->method, "HEAD") != 0)) {
		ds_add_header(r, "Allow", "GET, HEAD");
		ds_respond_error(r, 405, "method not allowed");
		return 1;
	}
	if ((text = ds_metrics_text(r->store, &len)) == NULL) {
		ds_respond_error(r, 503, "out of memory");
		return 1;
	}
	ds_add_header(r, "Cache-Control", "no-store");
	ds_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
	    len);
	free(text);
	return 1;
}
