/*
 * append.c: appends (PROTOCOL 5.2, 5.2.1, 5.3): validation against the
 * committed record and producer state, writing and syncing the bytes, and
 * committing the new tail.
 *
 * Concurrency. Appends to one stream are serialised by an exclusive flock()
 * on the stream's segment file (every call opens its own descriptor, so the
 * lock works between threads as well as processes, and the kernel drops it
 * when a process dies). Under that lock an append validates against the
 * committed record, writes its bytes past the committed tail, fdatasync()s
 * the segment, then commits the new tail and producer state in one short
 * LMDB write transaction, synced by the group commit (see env.c).
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <unistd.h>

#include "store/store_int.h"

/*
 * Validates an append against the committed record and producer state
 * (PROTOCOL 5.2 error precedence, 5.2.1 validation logic). Returns DS_OK
 * when the append should be written, or an error; a duplicate is DS_OK with
 * res->duplicate set.
 */
static enum ds_err
validate(const struct ds_rec *r, const struct ds_pstate *ps, int have_ps,
    const struct ds_append *req, struct ds_append_res *res)
{
	const struct ds_producer *p = req->producer;
	size_t n;
	int c;

	res->tail = r->info.tail;
	res->closed = (r->info.flags & DS_F_CLOSED) != 0;
	if (p && have_ps && p->epoch < ps->epoch) {
		res->epoch = ps->epoch;
		return DS_EPRODUCER_STALE;
	}
	if (res->closed) {
		if (p && r->closerlen == p->idlen &&
		    memcmp(r->closer, p->id, p->idlen) == 0 &&
		    r->closer_epoch == p->epoch && r->closer_seq == p->seq) {
			res->duplicate = 1;
			res->epoch = p->epoch;
			res->seq = p->seq;
			return DS_OK;
		}
		if (req->len == 0 && req->close) {
			res->duplicate = 1;
			if (p) {
				res->epoch = have_ps ? ps->epoch : p->epoch;
				res->seq = have_ps ? ps->seq : p->seq;
			}
			return DS_OK;
		}
		return DS_ECLOSED;
	}
	if (req->len > 0 && !req->ctype_ok)
		return DS_ECTYPE;
	if (p) {
		res->epoch = p->epoch;
		if (!have_ps || p->epoch > ps->epoch) {
			if (p->seq != 0) {
				if (have_ps)
					return DS_EPRODUCER_BADSEQ;
				res->seq = 0;
				return DS_EPRODUCER_GAP;
			}
		} else if (p->seq <= ps->seq) {
			res->duplicate = 1;
			res->seq = ps->seq;
			return DS_OK;
		} else if (p->seq != ps->seq + 1) {
			res->seq = ps->seq + 1;
			return DS_EPRODUCER_GAP;
		}
		res->seq = p->seq;
	}
	if (req->seq && r->seqlen > 0) {
		n = req->seqlen < r->seqlen ? req->seqlen : r->seqlen;
		c = memcmp(req->seq, r->seq, n);
		if (c < 0 || (c == 0 && req->seqlen <= r->seqlen))
			return DS_ESEQ;
	}
	return DS_OK;
}

/*
 * Cuts a segment back to its committed length own after an append that
 * will not be committed, so that a refused append leaves nothing behind:
 * not even unreachable bytes holding space on a full disk.
 */
static void
unwrite(int fd, uint64_t own)
{
	if (ftruncate(fd, (off_t)own) == -1)
		ds_log("ftruncate: %s", strerror(errno));
}

/*
 * Writes the append's bytes at the committed tail and syncs them. Bytes a
 * crashed append left past the tail are cut off first (as
 * ds_store_recover() does for every stream at start-up). On failure
 * nothing is left past the tail.
 */
static enum ds_err
write_data(int fd, const struct ds_rec *r, const void *body, size_t len)
{
	uint64_t own = r->info.tail - r->info.base;
	struct stat st;
	int err;

	if (fstat(fd, &st) == -1) {
		err = errno;
		ds_log("fstat: %s", strerror(err));
		return ds_sys_err(err);
	}
	if ((uint64_t)st.st_size > own && ftruncate(fd, (off_t)own) == -1) {
		err = errno;
		ds_log("ftruncate: %s", strerror(err));
		return ds_sys_err(err);
	}
	if (ds_seg_write(fd, own, body, len) == -1) {
		err = errno;
		unwrite(fd, own);
		return ds_sys_err(err);
	}
	if (fdatasync(fd) == -1) {
		err = errno;
		ds_log("fdatasync: %s", strerror(err));
		unwrite(fd, own);
		return ds_sys_err(err);
	}
	return DS_OK;
}

enum ds_err
ds_store_append(struct ds_store *s, const char *path,
    const struct ds_append *req, int64_t now, struct ds_append_res *res)
{
	const struct ds_producer *p = req->producer;
	struct ds_rec r;
	struct ds_pstate ps;
	char pkey[8 + DS_PRODUCER_MAX];
	MDB_txn *txn = NULL;
	MDB_val k, v;
	enum ds_err e;
	uint64_t id, tail, own = 0;
	uint32_t closed;
	int fd = -1, rc, have_ps = 0, written = 0, committed = 0;

	memset(res, 0, sizeof(*res));
	if ((req->seq && req->seqlen > DS_SEQ_MAX) ||
	    (p && (p->idlen == 0 || p->idlen > DS_PRODUCER_MAX)))
		return DS_ETOOBIG;
	if ((e = ds_lookup(s, path, now, &r)) != DS_OK)
		return e;
	if (req->id && r.info.id != req->id)
		return DS_EREPLACED;
	id = r.info.id;
	res->id = id;
	if ((fd = ds_seg_open(s, id, O_RDWR)) == -1)
		return errno == ENOENT ? DS_EREPLACED : DS_EIO;
	if (ds_seg_lock(fd) == -1) {
		e = DS_EIO;
		goto out;
	}

	/*
	 * Under the lock: the committed state nobody else can change. The
	 * path may name another stream by now (a DELETE and a PUT do not
	 * take this lock); its framing is not ours to use.
	 */
	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		goto out;
	if ((e = ds_rec_get(s, txn, path, &r)) == DS_OK && r.info.id != id)
		e = DS_EREPLACED;
	if (e == DS_OK && p) {
		k.mv_data = pkey;
		k.mv_size = ds_producer_key(id, p->id, p->idlen, pkey);
		rc = mdb_get(txn, s->producers, &k, &v);
		if (rc == 0 && v.mv_size == sizeof(ps)) {
			memcpy(&ps, v.mv_data, sizeof(ps));
			have_ps = 1;
		} else if (rc != 0 && rc != MDB_NOTFOUND)
			e = ds_mdb_err(__func__, "mdb_get producer", rc);
	}
	ds_rd_end(txn);
	txn = NULL;
	if (e != DS_OK)
		goto out;
	if (r.info.flags & DS_F_DELETED) {
		e = DS_EGONE;
		goto out;
	}
	if ((e = validate(&r, &ps, have_ps, req, res)) != DS_OK ||
	    res->duplicate)
		goto out;

	own = r.info.tail - r.info.base;
	if (req->len > 0) {
		if ((e = write_data(fd, &r, req->body, req->len)) != DS_OK)
			goto out;
		written = 1;	/* from here, undone unless committed */
	}

	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto out;
	if ((e = ds_meta_reserve(s)) != DS_OK)
		goto out;
	/* A DELETE does not take the segment lock: check the id again. */
	tail = r.info.tail;
	closed = r.info.flags & DS_F_CLOSED;
	if ((e = ds_rec_get(s, txn, path, &r)) == DS_OK && r.info.id != id)
		e = DS_EREPLACED;
	else if (e == DS_OK && (r.info.tail != tail ||
	    (r.info.flags & DS_F_CLOSED) != closed)) {
		/* Only appends move these, and we hold the lock. */
		ds_log("append to %s: committed tail moved under the segment "
		    "lock (%" PRIu64 " -> %" PRIu64 ")", path, tail,
		    r.info.tail);
		e = DS_EIO;
		written = 0;	/* not ours to cut */
	}
	if (e != DS_OK)
		goto out;
	r.info.tail += req->len;
	r.info.access_ms = now;
	if (req->seq) {
		memcpy(r.seq, req->seq, req->seqlen);
		r.seqlen = req->seqlen;
	}
	if (req->close) {
		r.info.flags |= DS_F_CLOSED;
		if (p) {
			memcpy(r.closer, p->id, p->idlen);
			r.closerlen = p->idlen;
			r.closer_epoch = p->epoch;
			r.closer_seq = p->seq;
		}
	}
	if ((e = ds_rec_put(s, txn, path, &r)) != DS_OK)
		goto out;
	if (p) {
		ps.epoch = p->epoch;
		ps.seq = p->seq;
		ps.access_ms = now;
		k.mv_data = pkey;
		k.mv_size = ds_producer_key(id, p->id, p->idlen, pkey);
		v.mv_data = &ps;
		v.mv_size = sizeof(ps);
		if ((rc = mdb_put(txn, s->producers, &k, &v, 0)) != 0) {
			e = ds_mdb_err(__func__, "mdb_put producer", rc);
			goto out;
		}
	}
	e = ds_txn_commit_sync(s, txn, &committed);
	txn = NULL;
	if (e == DS_OK) {
		res->tail = r.info.tail;
		res->closed = (r.info.flags & DS_F_CLOSED) != 0;
	}
out:
	if (txn)
		mdb_txn_abort(txn);
	if (written && !committed)
		unwrite(fd, own);
	if (e == DS_ECLOSED || e == DS_ECTYPE || e == DS_ESEQ)
		res->tail = r.info.tail;
	close(fd);	/* releases the lock */
	return e;
}
