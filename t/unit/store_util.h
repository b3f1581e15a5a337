/*
 * store_util.h: what the store unit tests share: a data directory of its
 * own for each test case, opening a store in it, must_ds() for the store
 * calls a case's checks depend on, and appending a C string with
 * everything else defaulted (content type matching, time 1000 ms).
 */
#ifndef DS_STORE_UTIL_H
#define DS_STORE_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "t/tap.h"

/* The current test case's data directory (made by store_begin()). */
static TAP_UNUSED char	store_dir[256];

static TAP_UNUSED enum ds_err store_e_;

/*
 * must() for a store call: a setup step that fails bails out naming the
 * call and the store's error.
 */
#define must_ds(call) \
	(store_e_ = (call), \
	 must(store_e_ == DS_OK, "%s: %s", #call, ds_strerror(store_e_)))

static TAP_UNUSED struct ds_store *
open_store(const char *dir)
{
	struct ds_store_cfg cfg = { .dir = dir };
	struct ds_store *s = NULL;
	enum ds_err e;

	e = ds_store_open(&cfg, &s);
	must(e == DS_OK, "open the store in %s: %s", dir, ds_strerror(e));
	return s;
}

/*
 * Starts a test case in a data directory of its own,
 * /tmp/ds-<prog>-<name>-XXXXXX, and opens a store there, so that no case
 * sees another's leftovers. store_end() closes the store and removes the
 * directory.
 */
static TAP_UNUSED struct ds_store *
store_begin(const char *prog, const char *name)
{
	int n;

	n = snprintf(store_dir, sizeof(store_dir), "/tmp/ds-%s-%s-XXXXXX",
	    prog, name);
	must(n > 0 && (size_t)n < sizeof(store_dir), "%s: name too long",
	    name);
	must(mkdtemp(store_dir) != NULL, "mkdtemp %s", store_dir);
	note("%s: %s", name, store_dir);
	return open_store(store_dir);
}

static TAP_UNUSED void
store_end(struct ds_store *s)
{
	char cmd[sizeof(store_dir) + 16];

	ds_store_close(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store_dir);
	if (system(cmd) != 0)
		diag("could not remove %s", store_dir);
	errno = 0;
}

/* body and seq may be NULL (close-only; no Stream-Seq). */
static TAP_UNUSED enum ds_err
append(struct ds_store *s, const char *path, const char *body, int close,
    const struct ds_producer *p, const char *seq, struct ds_append_res *res)
{
	struct ds_append a;

	memset(&a, 0, sizeof(a));
	a.body = body;
	a.len = body ? strlen(body) : 0;
	a.close = close;
	a.ctype_ok = 1;
	a.producer = p;
	a.seq = seq;
	a.seqlen = seq ? strlen(seq) : 0;
	return ds_store_append(s, path, &a, 1000, res);
}

/* Appends n bytes (records when msg: "[i]" padded to n with a newline). */
static TAP_UNUSED void
append_at(struct ds_store *s, const char *path, size_t n, int msg, int i,
    int64_t now)
{
	struct ds_append a;
	struct ds_append_res res;
	char *body = malloc(n);

	must(body != NULL, "malloc");
	memset(body, 'x', n);
	if (msg) {
		int k = snprintf(body, n, "[%d", i);

		memset(body + k, ' ', n - (size_t)k - 2);
		body[n - 2] = ']';
	}
	body[n - 1] = '\n';
	memset(&a, 0, sizeof(a));
	a.body = body;
	a.len = n;
	a.ctype_ok = 1;
	must_ds(ds_store_append(s, path, &a, now, &res));
	free(body);
}

#endif /* DS_STORE_UTIL_H */
