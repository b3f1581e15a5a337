/*
 * retain.c: retention (see store.h). The index of append boundaries, the
 * trim that moves a stream's earliest retained position, and the punch
 * that frees the trimmed bytes' disk space.
 *
 * A trim commits the new earliest position first; from then on no read
 * asks for the bytes below it. Bytes are punched out of the segment file
 * (fallocate(FALLOC_FL_PUNCH_HOLE), which keeps the file's size, so file
 * offsets stay positions) only when no reader can be misled by them:
 * every read checks the earliest position again after it read, and
 * answers DS_ETRIMMED rather than bytes a punch may have zeroed under it;
 * a stream's first trim also waits grace_ms. A crash anywhere leaves the old or the new
 * earliest position committed, and bytes at worst unpunched, which the
 * next punch or ds_store_recover() frees.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "store/store_int.h"

/* The key of index point (id, pos): the id as stored, pos big-endian. */
static void
point_key(uint64_t id, uint64_t pos, unsigned char key[16])
{
	memcpy(key, &id, 8);
	ds_be64_put(key + 8, pos);
}

static uint64_t
point_pos(const MDB_val *k)
{
	return ds_be64_get((const char *)k->mv_data + 8);
}

/* The earliest position of r's own data that is retained. */
uint64_t
ds_own_first(const struct ds_rec *r)
{
	return r->first > r->info.base ? r->first : r->info.base;
}

/*
 * Adds an index point at r's tail, time now, when the last one is far
 * enough behind (DS_INDEX_BYTES or DS_INDEX_MS). The tail is an append
 * boundary: the caller commits whole appends. Updates r.
 */
enum ds_err
ds_index_point(struct ds_store *s, MDB_txn *txn, struct ds_rec *r,
    int64_t now)
{
	unsigned char key[16];
	MDB_val k, v;
	int rc;

	if (r->info.tail <= r->idx_off || (r->info.tail - r->idx_off <
	    DS_INDEX_BYTES && now - r->idx_ms < DS_INDEX_MS))
		return DS_OK;
	point_key(r->info.id, r->info.tail, key);
	k.mv_data = key;
	k.mv_size = sizeof(key);
	v.mv_data = &now;
	v.mv_size = sizeof(now);
	if ((rc = mdb_put(txn, s->times, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put", rc);
	r->idx_off = r->info.tail;
	r->idx_ms = now;
	return DS_OK;
}

/*
 * The furthest index point of stream r the policy asks to trim to, or the
 * current earliest position when none.
 */
static enum ds_err
trim_point(struct ds_store *s, MDB_txn *txn, const struct ds_rec *r,
    const struct ds_retention *p, int64_t now, uint64_t *to)
{
	unsigned char key[16];
	MDB_cursor *c;
	MDB_val k, v;
	uint64_t pos, tail = r->info.tail;
	int64_t ms;
	int rc;

	*to = ds_own_first(r);
	if ((rc = mdb_cursor_open(txn, s->times, &c)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	point_key(r->info.id, *to + 1, key);
	k.mv_data = key;
	k.mv_size = sizeof(key);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16 || memcmp(k.mv_data, &r->info.id, 8) != 0)
			break;
		pos = point_pos(&k);
		if (pos > tail)
			break;
		memcpy(&ms, v.mv_data, sizeof(ms));
		/* Points come in position order: each one asked for wins. */
		if ((p->max_bytes > 0 && tail - *to > p->max_bytes) ||
		    (p->max_age_ms > 0 && ms <= now - p->max_age_ms) ||
		    (p->before > 0 && pos <= p->before))
			*to = pos;
		else
			break;	/* nor will any later point be */
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "cursor", rc);
	return DS_OK;
}

enum ds_err
ds_store_trim(struct ds_store *s, const char *path,
    const struct ds_retention *p, int64_t now, uint64_t *first)
{
	struct ds_rec r;
	MDB_txn *txn;
	enum ds_err e;
	uint64_t to;
	int rc;

	*first = 0;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((e = ds_rec_get(s, txn, path, &r)) != DS_OK)
		goto abort;
	if ((e = trim_point(s, txn, &r, p, now, &to)) != DS_OK)
		goto abort;
	*first = ds_own_first(&r);
	if (to <= *first) {
		mdb_txn_abort(txn);
		return DS_OK;
	}
	r.prev_first = ds_own_first(&r);
	r.first = to;
	r.first_ms = now;
	r.first_txn = mdb_txn_id(txn);
	if ((e = ds_meta_reserve(s)) != DS_OK ||
	    (e = ds_del_prefix(txn, s->times, r.info.id, &to)) != DS_OK ||
	    (e = ds_rec_put(s, txn, path, &r)) != DS_OK)
		goto abort;
	/* No sync: the punch makes it durable first (see durable()). */
	if ((rc = mdb_txn_commit(txn)) != 0)
		return ds_mdb_err(__func__, "mdb_txn_commit", rc);
	*first = to;
	return DS_OK;
abort:
	mdb_txn_abort(txn);
	return e;
}

/*
 * Makes the commit of transaction txnid durable, if no sync of this
 * process has yet. A trim commits without a sync (a pass trims many
 * streams); its bytes are punched only after its new earliest position is
 * on disk, so a power loss can never bring back a position whose bytes
 * are gone. One sync covers every trim committed before it.
 */
static enum ds_err
durable(struct ds_store *s, uint64_t txnid)
{
	MDB_envinfo ei;
	int rc;

	if (txnid <= atomic_load(&s->durable_txn))
		return DS_OK;
	if ((rc = mdb_env_info(s->env, &ei)) != 0)
		return ds_mdb_err(__func__, "mdb_env_info", rc);
	if ((rc = mdb_env_sync(s->env, 1)) != 0)
		return ds_mdb_err(__func__, "mdb_env_sync", rc);
	if (ei.me_last_txnid > atomic_load(&s->durable_txn))
		atomic_store(&s->durable_txn, ei.me_last_txnid);
	return DS_OK;
}

/* Punches [0, len) of the segment of stream id, in whole blocks. */
static enum ds_err
punch(struct ds_store *s, uint64_t id, uint64_t len)
{
	int fd;

	len &= ~(uint64_t)4095;
	if (len == 0)
		return DS_OK;
	if ((fd = ds_seg_open(s, id, O_RDWR)) == -1)
		return errno == ENOENT ? DS_OK : DS_EIO;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
	    (off_t)len) == -1 && errno != EOPNOTSUPP) {
		ds_log("fallocate punch: %s", strerror(errno));
		close(fd);
		return DS_EIO;
	}
	close(fd);
	return DS_OK;
}

enum ds_err
ds_store_punch(struct ds_store *s, const char *path, int64_t now,
    int64_t grace_ms)
{
	struct ds_rec r;
	MDB_txn *txn;
	enum ds_err e;
	uint64_t upto;

	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	e = ds_rec_get(s, txn, path, &r);
	ds_rd_end(txn);
	if (e != DS_OK)
		return e;
	/*
	 * Every reader re-checks the earliest position after it read
	 * (ds_store_read()); a stream's first trim waits grace_ms all the
	 * same, a second line of defence for the trim readers least expect.
	 */
	upto = r.prev_first > r.info.base || now - r.first_ms >= grace_ms ?
	    ds_own_first(&r) : r.prev_first;
	if (upto <= r.info.base)
		return DS_OK;
	if ((e = durable(s, r.first_txn)) != DS_OK)
		return e;
	return punch(s, r.info.id, upto - r.info.base);
}

/* Punches everything trimmed from r (ds_store_recover()). */
enum ds_err
ds_punch_all(struct ds_store *s, const struct ds_rec *r)
{
	uint64_t upto = ds_own_first(r);
	enum ds_err e;

	if (upto <= r->info.base)
		return DS_OK;
	if ((e = durable(s, r->first_txn)) != DS_OK)
		return e;
	return punch(s, r->info.id, upto - r->info.base);
}
