/*
 * subs_api.c: the reserved __ds routes (PROTOCOL 6): routing, subscription
 * create/re-confirm, read, delete, explicit stream links and the JWK Set.
 * The wake routes (callback, claim, ack, release) are in subs_wake.c.
 *
 * Every document is checked whole (types, unknown fields, limits, URL
 * safety) before the store is touched, so bad input gets a 4xx with
 * {"error":{"code","message"}} and changes nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "fcgi-app/parse.h"
#include "fcgi-app/subs.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/* Is id a subscription id we take: 1-128 of [A-Za-z0-9._~:-]? */
static int
sub_id_ok(const char *id)
{
	size_t n = strlen(id);

	return n > 0 && n <= DS_SUBID_MAX &&
	    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._~:-") == n;
}

/*
 * The URL of the stream root as this client reaches it: --public-url, or
 * scheme and Host of the request. Returns 0, or -1 after answering 400.
 */
static int
root_url(struct ds_req *r, char *out, size_t sz)
{
	const char *host = ds_param(r, "HTTP_HOST");
	const char *https = ds_param(r, "HTTPS");
	int n;

	if (r->cfg->public_url)
		n = snprintf(out, sz, "%s", r->cfg->public_url);
	else if (host == NULL || !ds_host_valid(host))
		return ds_sub_error(r, 400, "INVALID_REQUEST", "a valid Host "
		    "header is needed to name callback URLs");
	else
		n = snprintf(out, sz, "%s://%s/v1/stream",
		    https && *https && strcasecmp(https, "off") ? "https" :
		    "http", host);
	if (n < 0 || (size_t)n >= sz)
		return ds_sub_error(r, 400, "INVALID_REQUEST",
		    "Host header too long");
	return 0;
}

/*
 * Parses the body as a JSON object whose keys are all in allowed[]: 0 with
 * *doc (the caller's), or -1 after answering 400 or 413.
 */
static int
body_object(struct ds_req *r, const char *const *allowed, size_t nallowed,
    json_t **doc)
{
	json_error_t err;
	const char *k;
	json_t *v;
	size_t i;
	char msg[160];

	*doc = NULL;
	if (r->bodylen > DS_SUB_BODY_MAX)
		return ds_sub_error(r, 413, "PAYLOAD_TOO_LARGE",
		    "subscription documents are at most 64 KiB");
	*doc = json_loadb(r->body ? r->body : "", r->bodylen,
	    JSON_REJECT_DUPLICATES, &err);
	if (*doc == NULL || !json_is_object(*doc)) {
		json_decref(*doc);
		*doc = NULL;
		return ds_sub_error(r, 400, "INVALID_REQUEST",
		    "the body must be one JSON object");
	}
	json_object_foreach(*doc, k, v) {
		for (i = 0; i < nallowed && strcmp(k, allowed[i]); i++)
			continue;
		if (i == nallowed) {
			snprintf(msg, sizeof(msg), "unknown field \"%.64s\"",
			    k);
			json_decref(*doc);
			*doc = NULL;
			return ds_sub_error(r, 400, "INVALID_REQUEST", msg);
		}
	}
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Reads an array of stream paths (sorted, duplicates dropped) into
 * paths[], *n of them. Returns 0, or -1 after answering 400.
 */
static int
path_list(struct ds_req *r, json_t *a, const char **paths, size_t *n,
    int need_one)
{
	size_t i, j;

	*n = 0;
	if (a == NULL || json_is_null(a))
		return need_one ? ds_sub_error(r, 400, "INVALID_REQUEST",
		    "streams is required") : 0;
	if (!json_is_array(a) || json_array_size(a) > DS_SUB_STREAMS_MAX)
		return ds_sub_error(r, 400, "INVALID_REQUEST", "streams must "
		    "be an array of at most 256 stream paths");
	for (i = 0; i < json_array_size(a); i++) {
		paths[i] = json_string_value(json_array_get(a, i));
		if (paths[i] == NULL || !ds_stream_path_ok(paths[i]))
			return ds_sub_error(r, 400, "INVALID_REQUEST",
			    "streams must hold stream paths such as "
			    "\"events/a\"");
	}
	qsort(paths, i, sizeof(*paths), cmp_str);
	for (j = 0, *n = 0; j < i; j++)
		if (*n == 0 || strcmp(paths[*n - 1], paths[j]) != 0)
			paths[(*n)++] = paths[j];
	if (need_one && *n == 0)
		return ds_sub_error(r, 400, "INVALID_REQUEST",
		    "streams must not be empty");
	return 0;
}

/* An optional string field: 0 with *out (NULL when absent or null). */
static int
opt_string(struct ds_req *r, json_t *doc, const char *key, size_t max,
    const char **out)
{
	json_t *v = json_object_get(doc, key);
	char msg[96];

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v) || json_string_length(v) > max) {
		snprintf(msg, sizeof(msg), "%s must be a string of at most "
		    "%zu bytes", key, max);
		return ds_sub_error(r, 400, "INVALID_REQUEST", msg);
	}
	*out = json_string_value(v);
	return 0;
}

static void
hash_str(crypto_generichash_state *st, const char *s)
{
	uint32_t n = s ? (uint32_t)strlen(s) + 1 : 0;

	crypto_generichash_update(st, (const unsigned char *)&n, sizeof(n));
	if (s)
		crypto_generichash_update(st, (const unsigned char *)s, n - 1);
}

/* The subscription as PROTOCOL 6.3 shows it. NULL: no memory. */
static json_t *
sub_json(const char *id, const struct ds_sub *sub,
    const struct ds_sub_link *l, size_t n, const char *root)
{
	char created[32], jwks[DS_URL_MAX + 32];
	json_t *doc, *links, *hook;

	ds_format_rfc3339(sub->created_ms, created);
	if ((links = ds_links_json(l, n, 0)) == NULL)
		return NULL;
	hook = json_null();
	if (sub->type == DS_SUB_WEBHOOK) {
		snprintf(jwks, sizeof(jwks), "%s/__ds/jwks.json", root);
		hook = json_pack("{s:s,s:{s:s,s:s,s:s}}", "url", sub->url,
		    "signing", "alg", "ed25519", "kid", ds_keys_kid(),
		    "jwks_url", jwks);
	}
	doc = json_pack("{s:s,s:s,s:s,s:o*,s:o,s:o,s:o*,s:I,s:s,s:s,s:o*,"
	    "s:I}", "id", id, "subscription_id", id, "type",
	    sub->type == DS_SUB_WEBHOOK ? "webhook" : "pull-wake",
	    "pattern", sub->pattern[0] ? json_string(sub->pattern) : NULL,
	    "streams", links, "webhook", hook,
	    "wake_stream", sub->type == DS_SUB_PULL ?
	    json_string(sub->wake_stream) : NULL,
	    "lease_ttl_ms", (json_int_t)sub->lease_ttl_ms,
	    "created_at", created,
	    "status", (sub->flags & DS_SUB_F_FAILED) ? "failed" : "active",
	    "description", sub->has_description ?
	    json_string(sub->description) : NULL,
	    "generation", (json_int_t)sub->generation);
	if (doc == NULL)
		return NULL;
	/* json_pack's "o*" leaves out a NULL: the protocol shows null. */
	if (!json_object_get(doc, "pattern"))
		json_object_set_new(doc, "pattern", json_null());
	if (!json_object_get(doc, "wake_stream"))
		json_object_set_new(doc, "wake_stream", json_null());
	if (!json_object_get(doc, "description"))
		json_object_set_new(doc, "description", json_null());
	return doc;
}

/* Answers the subscription id with its links, status st. */
static void
answer_sub(struct ds_req *r, int st, const char *id, const char *root)
{
	struct ds_sub *sub;
	struct ds_sub_link *l = NULL;
	size_t n = 0;
	enum ds_err e;
	json_t *doc;

	if ((sub = malloc(sizeof(*sub))) == NULL) {
		ds_sub_store_error(r, DS_ENOMEM);
		return;
	}
	if ((e = ds_sub_get(r->store, id, sub, &l, &n)) != DS_OK)
		ds_sub_store_error(r, e);
	else if ((doc = sub_json(id, sub, l, n, root)) == NULL)
		ds_sub_store_error(r, DS_ENOMEM);
	else
		ds_json_answer(r, st, doc);
	free(l);
	free(sub);
}

/* Reads the delivery fields of a PUT into sub. 0, or -1 (answered). */
static int
put_delivery(struct ds_req *r, json_t *doc, struct ds_sub *sub)
{
	json_t *hook = json_object_get(doc, "webhook"), *ws;
	const char *url, *why;

	ws = json_object_get(doc, "wake_stream");
	if (sub->type == DS_SUB_PULL) {
		if (hook && !json_is_null(hook))
			return ds_sub_error(r, 400, "INVALID_REQUEST",
			    "webhook is for webhook subscriptions");
		if (!json_is_string(ws) ||
		    !ds_stream_path_ok(json_string_value(ws)))
			return ds_sub_error(r, 400, "INVALID_REQUEST",
			    "pull-wake needs wake_stream, a stream path");
		snprintf(sub->wake_stream, sizeof(sub->wake_stream), "%s",
		    json_string_value(ws));
		return 0;
	}
	if (ws && !json_is_null(ws))
		return ds_sub_error(r, 400, "INVALID_REQUEST",
		    "wake_stream is for pull-wake subscriptions");
	if (!json_is_object(hook) || json_object_size(hook) != 1 ||
	    (url = json_string_value(json_object_get(hook, "url"))) == NULL)
		return ds_sub_error(r, 400, "INVALID_REQUEST",
		    "webhook must be {\"url\": \"https://...\"}");
	if (ds_webhook_url_check(url, r->cfg->webhook_loopback, &why) !=
	    DS_URL_OK)
		return ds_sub_error(r, 400, "WEBHOOK_URL_REJECTED", why);
	snprintf(sub->url, sizeof(sub->url), "%s", url);
	return 0;
}

/* PUT: create or re-confirm (PROTOCOL 6.2). */
static void
sub_put(struct ds_req *r, const char *id)
{
	static const char *const keys[] = { "type", "pattern", "streams",
	    "webhook", "wake_stream", "lease_ttl_ms", "description" };
	crypto_generichash_state st;
	const char *paths[DS_SUB_STREAMS_MAX], *type, *pattern, *desc;
	struct ds_sub *sub = NULL, *old = NULL;
	char root[DS_URL_MAX + 1], ttl[24];
	json_t *doc = NULL, *v;
	size_t n, i;
	enum ds_err e;

	if (body_object(r, keys, nitems(keys), &doc) == -1)
		return;
	if ((sub = calloc(1, sizeof(*sub))) == NULL ||
	    (old = malloc(sizeof(*old))) == NULL) {
		ds_sub_store_error(r, DS_ENOMEM);
		goto out;
	}
	type = json_string_value(json_object_get(doc, "type"));
	if (type && strcmp(type, "webhook") == 0)
		sub->type = DS_SUB_WEBHOOK;
	else if (type && strcmp(type, "pull-wake") == 0)
		sub->type = DS_SUB_PULL;
	else {
		ds_sub_error(r, 400, "INVALID_REQUEST",
		    "type must be \"webhook\" or \"pull-wake\"");
		goto out;
	}
	if (opt_string(r, doc, "pattern", DS_PATH_MAX, &pattern) == -1 ||
	    opt_string(r, doc, "description", DS_DESC_MAX, &desc) == -1 ||
	    path_list(r, json_object_get(doc, "streams"), paths, &n, 0) == -1)
		goto out;
	if (pattern && !ds_stream_path_ok(pattern)) {
		ds_sub_error(r, 400, "INVALID_REQUEST", "pattern must be a "
		    "glob over stream paths such as \"events/*\"");
		goto out;
	}
	if (pattern == NULL && n == 0) {
		ds_sub_error(r, 400, "INVALID_REQUEST",
		    "pattern or streams is required");
		goto out;
	}
	sub->lease_ttl_ms = DS_SUB_TTL_DEFAULT;
	if ((v = json_object_get(doc, "lease_ttl_ms")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1000 ||
		    json_integer_value(v) > 600000) {
			ds_sub_error(r, 400, "INVALID_REQUEST", "lease_ttl_ms "
			    "must be an integer from 1000 to 600000");
			goto out;
		}
		sub->lease_ttl_ms = (uint64_t)json_integer_value(v);
	}
	if (put_delivery(r, doc, sub) == -1 || root_url(r, root,
	    sizeof(root)) == -1)
		goto out;
	snprintf(sub->pattern, sizeof(sub->pattern), "%s", pattern ?
	    pattern : "");
	snprintf(sub->description, sizeof(sub->description), "%s", desc ?
	    desc : "");
	sub->has_description = desc != NULL;
	snprintf(sub->base_url, sizeof(sub->base_url), "%s", root);
	sub->created_ms = r->now;
	/* The normalised configuration's hash (PROTOCOL 6.2). */
	crypto_generichash_init(&st, NULL, 0, sizeof(sub->hash));
	hash_str(&st, type);
	hash_str(&st, pattern);
	for (i = 0; i < n; i++)
		hash_str(&st, paths[i]);
	hash_str(&st, NULL);
	hash_str(&st, sub->type == DS_SUB_WEBHOOK ? sub->url : NULL);
	hash_str(&st, sub->type == DS_SUB_PULL ? sub->wake_stream : NULL);
	snprintf(ttl, sizeof(ttl), "%" PRIu64, sub->lease_ttl_ms);
	hash_str(&st, ttl);
	hash_str(&st, desc);
	crypto_generichash_final(&st, sub->hash, sizeof(sub->hash));
	e = ds_sub_create(r->store, id, sub, paths, n, old);
	if (e == DS_OK) {
		ds_deliver_sub_added();
		answer_sub(r, 201, id, root);
	} else if (e == DS_EEXIST && sodium_memcmp(old->hash, sub->hash,
	    sizeof(sub->hash)) == 0)
		answer_sub(r, 200, id, root);
	else if (e == DS_EEXIST)
		ds_sub_error(r, 409, "SUBSCRIPTION_ALREADY_EXISTS", "a "
		    "subscription with this id has another configuration");
	else
		ds_sub_store_error(r, e);
out:
	json_decref(doc);
	free(sub);
	free(old);
}

/* POST .../streams: explicit links (PROTOCOL 6.4). */
static void
streams_add(struct ds_req *r, const char *id)
{
	static const char *const keys[] = { "streams" };
	const char *paths[DS_SUB_STREAMS_MAX];
	json_t *doc;
	size_t n;
	enum ds_err e;

	if (body_object(r, keys, nitems(keys), &doc) == -1)
		return;
	if (path_list(r, json_object_get(doc, "streams"), paths, &n, 1) == 0) {
		if ((e = ds_sub_link_add(r->store, id, paths, n)) != DS_OK)
			ds_sub_store_error(r, e);
		else
			ds_respond(r, 204, NULL, NULL, 0);
	}
	json_decref(doc);
}

static void
jwks(struct ds_req *r)
{
	char *s;
	size_t len;

	if ((s = ds_keys_jwks(r->now, &len)) == NULL) {
		ds_sub_store_error(r, DS_ENOMEM);
		return;
	}
	ds_add_header(r, "Cache-Control", "public, max-age=300");
	ds_respond(r, 200, "application/jwk-set+json", s, len);
	free(s);
}

/* Answers 405 naming the methods of the route. */
static void
not_allowed(struct ds_req *r, const char *allow)
{
	ds_add_header(r, "Allow", "%s", allow);
	ds_sub_error(r, 405, "METHOD_NOT_ALLOWED", "method not allowed here");
}

static int
is(const struct ds_req *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

/*
 * Routes a __ds request: rest is the raw URI path after "/v1/stream/__ds",
 * restlen bytes of it.
 */
void
ds_subs_handle(struct ds_req *r, const char *rest, size_t restlen)
{
	static const char subs[] = "/subscriptions/";
	char idraw[3 * DS_SUBID_MAX + 1], id[DS_SUBID_MAX + 1];
	char root[DS_URL_MAX + 1], path[DS_PATH_MAX + 1];
	const char *op, *end = rest + restlen;
	size_t n, pn;

	if (restlen == 10 && memcmp(rest, "/jwks.json", 10) == 0) {
		if (is(r, "GET") || is(r, "HEAD"))
			jwks(r);
		else
			not_allowed(r, "GET, HEAD");
		return;
	}
	if (restlen <= sizeof(subs) - 1 ||
	    memcmp(rest, subs, sizeof(subs) - 1) != 0) {
		ds_sub_error(r, 404, "NOT_FOUND", "no such __ds route");
		return;
	}
	rest += sizeof(subs) - 1;
	op = memchr(rest, '/', (size_t)(end - rest));
	if (op == NULL)
		op = end;
	n = (size_t)(op - rest);
	if (n >= sizeof(idraw) ||
	    ds_path_decode(rest, n, id, sizeof(id), &pn) == -1 ||
	    !sub_id_ok(id)) {
		ds_sub_error(r, 400, "INVALID_REQUEST", "subscription ids are "
		    "1 to 128 characters of A-Z a-z 0-9 . _ ~ : -");
		return;
	}
	if ((is(r, "PUT") || is(r, "POST")) && ds_read_body(r) == -1)
		return;
	if (op == end) {
		if (is(r, "PUT"))
			sub_put(r, id);
		else if (is(r, "GET")) {
			if (root_url(r, root, sizeof(root)) == 0)
				answer_sub(r, 200, id, root);
		} else if (is(r, "DELETE")) {
			enum ds_err e = ds_sub_delete(r->store, id);

			if (e != DS_OK)
				ds_sub_store_error(r, e);
			else
				ds_respond(r, 204, NULL, NULL, 0);
		} else
			not_allowed(r, "GET, PUT, DELETE");
		return;
	}
	n = (size_t)(end - op);
	if (n == 8 && memcmp(op, "/streams", 8) == 0) {
		if (is(r, "POST"))
			streams_add(r, id);
		else
			not_allowed(r, "POST");
		return;
	}
	if (n > 9 && memcmp(op, "/streams/", 9) == 0) {
		/* The path is percent-encoded and may hold "%2F" or '/'. */
		if (!is(r, "DELETE"))
			not_allowed(r, "DELETE");
		else if (ds_path_decode(op + 9, n - 9, path, sizeof(path),
		    &pn) == -1 || !ds_stream_path_ok(path))
			ds_sub_error(r, 400, "INVALID_REQUEST",
			    "invalid stream path");
		else {
			enum ds_err e = ds_sub_link_remove(r->store, id, path);

			if (e != DS_OK)
				ds_sub_store_error(r, e);
			else
				ds_respond(r, 204, NULL, NULL, 0);
		}
		return;
	}
	if (n < 16 && memchr(op + 1, '/', n - 1) == NULL) {
		char opname[16];

		memcpy(opname, op + 1, n - 1);
		opname[n - 1] = '\0';
		if (strcmp(opname, "callback") == 0 ||
		    strcmp(opname, "claim") == 0 ||
		    strcmp(opname, "ack") == 0 ||
		    strcmp(opname, "release") == 0) {
			if (!is(r, "POST"))
				not_allowed(r, "POST");
			else
				ds_subs_callback(r, id, opname);
			return;
		}
	}
	ds_sub_error(r, 404, "NOT_FOUND", "no such __ds route");
}
