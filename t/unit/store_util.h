/*
 * store_util.h: what the store unit tests share: opening a store in a
 * directory, and appending a C string with everything else defaulted
 * (content type matching, time 1000 ms).
 */
#ifndef DS_STORE_UTIL_H
#define DS_STORE_UTIL_H

#include <string.h>

#include "store/store.h"
#include "t/tap.h"

static TAP_UNUSED struct ds_store *
open_store(const char *dir)
{
	struct ds_store_cfg cfg = { .dir = dir };
	struct ds_store *s = NULL;

	if (ds_store_open(&cfg, &s) != DS_OK)
		bail_out("cannot open store in %s", dir);
	return s;
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

#endif /* DS_STORE_UTIL_H */
