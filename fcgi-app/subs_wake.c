/*
 * subs_wake.c: the routes of a wake (PROTOCOL 7.1-7.3): the webhook
 * callback, and pull-wake claim, ack (heartbeat or done) and release.
 *
 * Tokens come only from the Authorization header (12.9) and are checked
 * before the body: missing, malformed, forged or of the other kind answers
 * 401 TOKEN_INVALID, expired 401 TOKEN_EXPIRED. A valid token of an older
 * generation is fenced by the store (409 FENCED), as is any request for a
 * wake that is over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fcgi-app/parse.h"
#include "fcgi-app/subs.h"

/* Parses the body as an object of only these keys: see body_keys(). */
static int
body_doc(struct ds_req *r, const char *const *keys, size_t nkeys,
    json_t **doc)
{
	const char *k;
	json_t *v;
	size_t i;

	*doc = NULL;
	if (r->bodylen > DS_SUB_BODY_MAX)
		return ds_sub_error(r, 413, "PAYLOAD_TOO_LARGE",
		    "subscription documents are at most 64 KiB");
	*doc = json_loadb(r->body ? r->body : "", r->bodylen,
	    JSON_REJECT_DUPLICATES, NULL);
	if (*doc == NULL || !json_is_object(*doc))
		goto bad;
	json_object_foreach(*doc, k, v) {
		for (i = 0; i < nkeys && strcmp(k, keys[i]); i++)
			continue;
		if (i == nkeys)
			goto bad;
	}
	return 0;
bad:
	json_decref(*doc);
	*doc = NULL;
	return ds_sub_error(r, 400, "INVALID_REQUEST", "the body must be one "
	    "JSON object of the fields this route takes");
}

/* POST .../claim (PROTOCOL 7.2). */
static void
claim(struct ds_req *r, const char *id)
{
	static const char *const keys[] = { "worker" };
	struct ds_sub *sub;
	struct ds_sub_link *l = NULL;
	const char *worker;
	char tok[128];
	json_t *doc, *links, *ans;
	size_t n;
	enum ds_err e;

	if (body_doc(r, keys, 1, &doc) == -1)
		return;
	worker = json_string_value(json_object_get(doc, "worker"));
	if (worker == NULL || *worker == '\0' ||
	    strlen(worker) > DS_HOLDER_MAX) {
		json_decref(doc);
		ds_sub_error(r, 400, "INVALID_REQUEST",
		    "worker must be a name of 1 to 128 bytes");
		return;
	}
	if ((sub = malloc(sizeof(*sub))) == NULL) {
		json_decref(doc);
		ds_sub_store_error(r, DS_ENOMEM);
		return;
	}
	e = ds_sub_claim(r->store, id, worker, r->now, sub, &l, &n);
	json_decref(doc);
	if (e == DS_ECLAIMED) {
		ans = json_pack("{s:{s:s,s:s,s:s,s:I}}", "error", "code",
		    "ALREADY_CLAIMED", "message", "another worker holds the "
		    "lease", "current_holder", sub->holder, "generation",
		    (json_int_t)sub->generation);
		if (ans)
			ds_json_answer(r, 409, ans);
		else
			ds_sub_store_error(r, DS_ENOMEM);
	} else if (e != DS_OK)
		ds_sub_store_error(r, e);
	else {
		ds_token_make(sub->sid, sub->generation, DS_TOKEN_CLAIM, r->now,
		    tok);
		links = ds_links_json(l, n, 1);
		ans = links ? json_pack("{s:s,s:I,s:s,s:o,s:I}", "wake_id",
		    sub->wake_id, "generation", (json_int_t)sub->generation,
		    "token", tok, "streams", links, "lease_ttl_ms",
		    (json_int_t)sub->lease_ttl_ms) : NULL;
		if (ans)
			ds_json_answer(r, 200, ans);
		else
			ds_sub_store_error(r, DS_ENOMEM);
	}
	free(l);
	free(sub);
}

/*
 * Reads the acks of a callback or ack body into a[] (paths borrowed from
 * doc), *n of them. Returns 0, or -1 after answering 400.
 */
static int
read_acks(struct ds_req *r, json_t *acks, struct ds_sub_ack *a, size_t *n)
{
	enum ds_offset_kind kind;
	const char *k, *path, *off;
	json_t *o, *v;
	size_t i;

	*n = 0;
	if (acks == NULL)
		return 0;
	if (!json_is_array(acks) || json_array_size(acks) > DS_SUB_STREAMS_MAX)
		goto bad;
	json_array_foreach(acks, i, o) {
		if (!json_is_object(o))
			goto bad;
		path = off = NULL;
		json_object_foreach(o, k, v) {
			if (strcmp(k, "stream") == 0 || strcmp(k, "path") == 0) {
				if (path)
					goto bad;
				path = json_string_value(v);
			} else if (strcmp(k, "offset") == 0)
				off = json_string_value(v);
			else
				goto bad;
		}
		if (path == NULL || off == NULL || !ds_stream_path_ok(path) ||
		    ds_offset_parse(off, strlen(off), &kind, &a[i].pos) ==
		    -1 || kind != DS_OFFSET_AT)
			goto bad;
		a[i].path = path;
	}
	*n = i;
	return 0;
bad:
	return ds_sub_error(r, 400, "INVALID_REQUEST", "acks must be an array "
	    "of {\"stream\": path, \"offset\": offset}");
}

/* POST .../callback, .../ack, .../release (PROTOCOL 7.1-7.3). */
static void
finish(struct ds_req *r, const char *id, const char *op)
{
	static const char *const keys[] = { "wake_id", "generation", "acks",
	    "done" };
	struct ds_sub_ack a[DS_SUB_STREAMS_MAX];
	struct ds_sub_fence f;
	const char *auth = ds_param(r, "HTTP_AUTHORIZATION");
	json_t *doc = NULL, *gen, *done;
	size_t n = 0;
	enum ds_err e;
	int pending;

	memset(&f, 0, sizeof(f));
	f.pull = strcmp(op, "callback") != 0;
	f.release = strcmp(op, "release") == 0;
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
		ds_sub_error(r, 401, "TOKEN_INVALID",
		    "Authorization: Bearer <token> is required");
		return;
	}
	switch (ds_token_check(auth + 7, f.pull ? DS_TOKEN_CLAIM :
	    DS_TOKEN_CALLBACK, r->now, &f.sid, &f.tgen)) {
	case DS_TOKEN_OK:
		break;
	case DS_TOKEN_OLD:
		ds_sub_error(r, 401, "TOKEN_EXPIRED", "the token has expired");
		return;
	default:
		ds_sub_error(r, 401, "TOKEN_INVALID", "the token is not valid "
		    "for this route");
		return;
	}
	if (body_doc(r, keys, f.release ? 2 : 4, &doc) == -1)
		return;
	gen = json_object_get(doc, "generation");
	done = json_object_get(doc, "done");
	f.wake_id = json_string_value(json_object_get(doc, "wake_id"));
	if (f.wake_id == NULL || !json_is_integer(gen) ||
	    json_integer_value(gen) < 0 || (done && !json_is_boolean(done))) {
		ds_sub_error(r, 400, "INVALID_REQUEST", "wake_id (a string) "
		    "and generation (an integer) are required; done is a "
		    "boolean");
		goto out;
	}
	f.gen = (uint64_t)json_integer_value(gen);
	f.done = json_is_true(done);
	if (read_acks(r, json_object_get(doc, "acks"), a, &n) == -1)
		goto out;
	e = ds_sub_ack(r->store, id, &f, a, n, r->now, &pending);
	if (e != DS_OK) {
		ds_sub_store_error(r, e);
		goto out;
	}
	if (f.done || f.release)
		ds_deliver_kick();
	if (f.release)
		ds_respond(r, 204, NULL, NULL, 0);
	else
		ds_json_answer(r, 200, json_pack("{s:b,s:b}", "ok", 1,
		    "next_wake", pending && (f.done || f.release)));
out:
	json_decref(doc);
}

void
ds_subs_callback(struct ds_req *r, const char *id, const char *op)
{
	if (strcmp(op, "claim") == 0)
		claim(r, id);
	else
		finish(r, id, op);
}
