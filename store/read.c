/*
 * read.c: reading a stream: its metadata (HEAD, PROTOCOL 5.5), its bytes
 * from a position across its fork chain (GET, PROTOCOL 5.6), and the TTL
 * renewal that a read counts as (PROTOCOL 5.1).
 */
#include <stdint.h>
#include <stdlib.h>

#include "store/store_int.h"

/*
 * The record at path and its fork chain, from one read snapshot, with
 * info.first set to the earliest position the chain serves.
 */
static enum ds_err
snapshot(struct ds_store *s, const char *path, int64_t now, struct ds_rec *r,
    struct ds_chain *c)
{
	MDB_txn *txn;
	enum ds_err e;
	int live;

	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	e = ds_rec_get(s, txn, path, r);
	live = e == DS_OK && !(r->info.flags & DS_F_DELETED) &&
	    !ds_expired(&r->info, now);
	if (live)
		e = ds_chain_build(s, txn, r, r->info.tail, c);
	ds_rd_end(txn);
	if (e != DS_OK)
		return e;
	if (!live) {
		/* Gone, or expired: ds_lookup() says which (and drops it). */
		if ((e = ds_lookup(s, path, now, r)) != DS_OK ||
		    (e = ds_chain_build(s, NULL, r, r->info.tail, c)) != DS_OK)
			return e;
	}
	r->info.first = ds_chain_first(c);
	return DS_OK;
}

/*
 * After a read: was from still retained when the read ended? A trim
 * committed meanwhile may have had its bytes punched out under the read
 * (retain.c); then the read answers DS_ETRIMMED. (Every read checks: one
 * that looked before a stream's first trim cannot know it is coming.)
 */
enum ds_err
ds_store_recheck(struct ds_store *s, const char *path, int64_t now,
    uint64_t id, uint64_t from)
{
	struct ds_rec r;
	struct ds_chain c;
	enum ds_err e;

	if ((e = snapshot(s, path, now, &r, &c)) != DS_OK || r.info.id != id)
		return e == DS_OK ? DS_ENOTFOUND : e;
	return from < r.info.first ? DS_ETRIMMED : DS_OK;
}

enum ds_err
ds_store_stat(struct ds_store *s, const char *path, int64_t now,
    struct ds_stream_info *out)
{
	struct ds_rec r;
	struct ds_chain c;
	enum ds_err e;

	if ((e = snapshot(s, path, now, &r, &c)) != DS_OK)
		return e;
	*out = r.info;
	return DS_OK;
}

/* One attempt of ds_store_read_spans() (see below). */
static enum ds_err
read_once(struct ds_store *s, const char *path, uint64_t from, size_t max,
    size_t min, int64_t now, struct ds_stream_info *info, char **data,
    size_t *len, struct ds_spans *sp)
{
	struct ds_rec r;
	struct ds_chain c;
	enum ds_err e, e2;
	uint64_t n;

	*data = NULL;
	*len = 0;
	if (sp)
		sp->n = 0;
	if ((e = snapshot(s, path, now, &r, &c)) != DS_OK)
		return e;
	*info = r.info;
	if (from == DS_POS_NOW)
		from = r.info.tail;
	else if (from == DS_POS_FIRST)
		from = r.info.first;
	if (from > r.info.tail)
		return DS_EOFFSET;
	if (from < r.info.first)
		return DS_ETRIMMED;
	n = r.info.tail - from < max ? r.info.tail - from : max;
	if (sp && !(r.info.flags & DS_F_MSG) && n > 0 && n >= min) {
		/* In place: the caller rechecks once the bytes are sent. */
		if ((e = ds_chain_spans(s, &c, from, from + n, sp)) != DS_OK)
			return e;
		*len = (size_t)n;
		if (r.info.flags & DS_F_TTL)
			ds_store_touch(s, path, now);
		return DS_OK;
	}
	if (from < r.info.tail && max > 0)
		e = ds_read_stitched(s, &c, from, r.info.tail, max,
		    (r.info.flags & DS_F_MSG) != 0, data, len);
	else if ((r.info.flags & DS_F_MSG) && from > r.info.first)
		e = ds_chain_boundary(s, &c, from);
	/*
	 * A trim committed while we read may have had its bytes punched out
	 * under us (a record end read as a zero byte is DS_EOFFSET): check.
	 */
	if ((e == DS_OK || e == DS_EOFFSET) &&
	    (e2 = ds_store_recheck(s, path, now, r.info.id, from)) != DS_OK)
		e = e2;
	if (e != DS_OK) {
		free(*data);
		*data = NULL;
		*len = 0;
	}
	if (e == DS_OK && (r.info.flags & DS_F_TTL))
		ds_store_touch(s, path, now);
	return e;
}

/*
 * A read from the earliest retained position (DS_POS_FIRST) that a trim
 * overtook starts again at the new one: the caller asked for whatever is
 * retained, never for a position that can be gone.
 */
enum ds_err
ds_store_read_spans(struct ds_store *s, const char *path, uint64_t from,
    size_t max, size_t min, int64_t now, struct ds_stream_info *info,
    char **data, size_t *len, struct ds_spans *sp)
{
	enum ds_err e;
	int tries = 0;

	do
		e = read_once(s, path, from, max, min, now, info, data, len,
		    sp);
	while (e == DS_ETRIMMED && from == DS_POS_FIRST && ++tries < 8);
	return e;
}

enum ds_err
ds_store_read(struct ds_store *s, const char *path, uint64_t from,
    size_t max, int64_t now, struct ds_stream_info *info, char **data,
    size_t *len)
{
	return ds_store_read_spans(s, path, from, max, 0, now, info, data,
	    len, NULL);
}

enum ds_err
ds_store_touch(struct ds_store *s, const char *path, int64_t now)
{
	struct ds_rec r;
	MDB_txn *txn;
	enum ds_err e;
	int rc;

	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((e = ds_rec_get(s, txn, path, &r)) != DS_OK ||
	    !(r.info.flags & DS_F_TTL) || r.info.access_ms >= now ||
	    (e = ds_meta_reserve(s)) != DS_OK) {
		mdb_txn_abort(txn);
		return e;
	}
	r.info.access_ms = now;
	if ((e = ds_rec_put(s, txn, path, &r)) != DS_OK) {
		mdb_txn_abort(txn);
		return e;
	}
	/* An access time lost in a crash costs nothing: no sync. */
	if ((rc = mdb_txn_commit(txn)) != 0)
		return ds_mdb_err(__func__, "mdb_txn_commit", rc);
	return DS_OK;
}
