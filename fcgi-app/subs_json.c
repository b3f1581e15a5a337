/*
 * subs_json.c: JSON documents of the subscription API that more than one
 * file writes (links with offsets, errors), and the check of a stream path
 * given in a document.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fcgi-app/parse.h"
#include "fcgi-app/subs.h"

/*
 * Answers {"error":{"code","message"}} (PROTOCOL 7.1's error shape, used by
 * every __ds route). Returns -1 (answered).
 */
int
ds_sub_error(struct ds_req *r, int status, const char *code, const char *msg)
{
	json_t *doc;

	doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
	    msg);
	if (doc == NULL)
		return ds_respond_error(r, 503, "out of memory");
	return ds_json_answer(r, status, doc);
}

/* The one place where store errors of the __ds routes become statuses. */
int
ds_sub_store_error(struct ds_req *r, enum ds_err e)
{
	switch (e) {
	case DS_ENOTFOUND:
		return ds_sub_error(r, 404, "SUBSCRIPTION_NOT_FOUND",
		    "no such subscription");
	case DS_EFENCED:
		return ds_sub_error(r, 409, "FENCED", ds_strerror(e));
	case DS_ENOWORK:
		return ds_sub_error(r, 409, "NO_PENDING_WORK", ds_strerror(e));
	case DS_ESTALE_TOKEN:
		return ds_sub_error(r, 401, "TOKEN_INVALID", ds_strerror(e));
	case DS_ESUBTYPE:
	case DS_ENOTLINKED:
	case DS_ETOOBIG:
	case DS_ELINKS:
		return ds_sub_error(r, 400, "INVALID_REQUEST", ds_strerror(e));
	case DS_EACKOFFSET:
		return ds_sub_error(r, 409, "INVALID_OFFSET", ds_strerror(e));
	case DS_EFULL:
	case DS_ENOSPC:
		return ds_sub_error(r, 507, "INSUFFICIENT_STORAGE",
		    ds_strerror(e));
	default:
		return ds_sub_error(r, 503, "UNAVAILABLE", ds_strerror(e));
	}
}

/* Answers doc (taken: it is freed) as compact JSON. Returns -1. */
int
ds_json_answer(struct ds_req *r, int status, json_t *doc)
{
	char *s;

	s = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (s == NULL)
		return ds_respond_error(r, 503, "out of memory");
	ds_add_header(r, "Cache-Control", "no-store");
	ds_respond(r, status, "application/json", s, strlen(s));
	free(s);
	return -1;
}

/*
 * The links as PROTOCOL 6.3 shows them, and with wake set as a wake's
 * snapshot (7.1, 7.2): tail_offset and has_pending too. NULL: no memory.
 */
json_t *
ds_links_json(const struct ds_sub_link *l, size_t n, int wake)
{
	char acked[DS_OFFSET_LEN + 1], tail[DS_OFFSET_LEN + 1];
	json_t *a, *o;
	size_t i;

	if ((a = json_array()) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		ds_offset_format(l[i].acked, acked);
		o = json_pack("{s:s,s:s,s:s}", "path", l[i].path, "link_type",
		    (l[i].kind & DS_LINK_EXPLICIT) ? "explicit" : "glob",
		    "acked_offset", acked);
		if (o && wake) {
			ds_offset_format(l[i].tail, tail);
			if (json_object_set_new(o, "tail_offset",
			    json_string(tail)) == -1 ||
			    json_object_set_new(o, "has_pending",
			    json_boolean(l[i].tail > l[i].acked)) == -1) {
				json_decref(o);
				o = NULL;
			}
		}
		if (o == NULL || json_array_append_new(a, o) == -1) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/*
 * Is p, from a JSON document, a stream path this server could have: what
 * the URL form decodes to (no empty or dot segments, no control bytes, no
 * '%'), not under the reserved __ds? Returns nonzero if so.
 */
int
ds_stream_path_ok(const char *p)
{
	char out[DS_PATH_MAX + 1];
	size_t n, len = strlen(p);

	if (len == 0 || len > DS_PATH_MAX || strchr(p, '%') ||
	    strchr(p, '?') || strchr(p, '#'))
		return 0;
	if (ds_path_decode(p, len, out, sizeof(out), &n) == -1 ||
	    n != len || memcmp(out, p, len) != 0)
		return 0;
	return !(strncasecmp(p, "__ds", 4) == 0 &&
	    (p[4] == '/' || p[4] == '\0'));
}
