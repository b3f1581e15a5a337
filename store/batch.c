/*
 * batch.c: one batch of appends to one stream (PROTOCOL 5.2, 5.2.1, 5.3),
 * from the segment lock to the commit.
 *
 * Appends to one stream are serialised by an exclusive flock() on the
 * stream's segment file (every call opens its own descriptor, so the lock
 * works between threads as well as processes, and the kernel drops it when
 * a process dies). Under that lock the batch validates each append in
 * arrival order against the committed record and producer state as the
 * appends before it leave them, writes the accepted bytes past the
 * committed tail with one pwrite() and makes them durable: a small batch
 * whose bytes fit in the segment's room commits a copy of them with its
 * metadata (journal.c); a larger one has the range written out and a
 * flush shared with other streams' batches (see segment.c); one that
 * grows the file, an fdatasync(). It hands the new tail and producer
 * states (and the journal's copy) to the shared commit (commit.c), which
 * lets go of the lock once they are committed. append.c forms the
 * batches.
 */
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
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

/* How a batch's bytes went out, for write_data() and its undoing. */
struct seg_write {
	uint64_t	size0;		/* the file's length before */
	int		grew;		/* the file is longer than size0 */
	int		journal;	/* in room, not synced: commit a copy */
	int		flush;		/* in room: needs the shared flush... */
	uint64_t	flush_mark;	/* ...of a flush begun after this */
};

/*
 * Cuts a segment back to the length it had before a batch that will not
 * be committed made it longer, so that a refused append leaves nothing
 * behind: not even unreachable bytes holding space on a full disk. Bytes
 * written inside the room need no undoing: they are past the tail.
 */
static void
unwrite(int fd, const struct seg_write *w)
{
	if (w->grew && ftruncate(fd, (off_t)w->size0) == -1)
		ds_log("ftruncate: %s", strerror(errno));
}

/*
 * Whether the file system has room for the journal to grow by: its entries
 * take LMDB pages until a checkpoint frees them, and an LMDB file that
 * cannot grow refuses every commit but deletes (ds_meta_reserve()). Near
 * full, the bytes of a room take the flush path instead, which needs no
 * new block at all.
 */
static int
journal_room(int fd)
{
	struct statvfs sf;

	return fstatvfs(fd, &sf) == 0 &&
	    (uint64_t)sf.f_bavail * (uint64_t)sf.f_frsize >= DS_JOURNAL_FREE;
}

/*
 * Writes bytes at own, the segment's committed length (see "Room" in
 * segment.c). Inside the room, at most DS_JOURNAL_MAX bytes are left
 * unsynced and w->journal asks the commit to carry a copy (journal.c),
 * when journal says it may take them; else they are written out and
 * w->flush asks the shared commit for the device flush that makes them
 * durable. Past the room, the file is zero-filled up to the room of the
 * new tail and fdatasync()ed whole, which also makes durable anything a
 * crashed append left past the tail. On failure the file is as long as it
 * was.
 */
static enum ds_err
write_data(struct ds_store *s, int fd, uint64_t own, const void *body,
    size_t len, int journal, struct seg_write *w)
{
	struct stat st;
	uint64_t end = own + len, room = ds_seg_room(end);
	int err, in_room;

	memset(w, 0, sizeof(*w));
	if (fstat(fd, &st) == -1) {
		err = errno;
		ds_log("fstat: %s", strerror(err));
		return ds_sys_err(err);
	}
	w->size0 = (uint64_t)st.st_size;
	w->grew = end > w->size0;
	if (ds_seg_write(fd, own, body, len) == -1)
		goto fail;
	/*
	 * Only a file that spans its room has it: one written before rooms
	 * (a server started without ds-admin recover), or one whose
	 * zero-fill recovery could not finish, would grow its length, and
	 * maybe its blocks, under the shared flush, which commits neither.
	 * The growth path below gives it its room.
	 */
	in_room = end <= ds_seg_room(own) && w->size0 >= ds_seg_room(own);
	if (in_room && journal && len <= s->journal_max && journal_room(fd)) {
		w->journal = 1;
		return DS_OK;
	}
	if (s->range_sync && in_room) {
		if (ds_seg_write_out(fd, own, len) == -1) {
			ds_log("sync_file_range: %s", strerror(errno));
			goto fail;
		}
		w->flush = 1;
		w->flush_mark = ds_lanes_flush_mark(s);
		return DS_OK;
	}
	if (room > w->size0) {
		w->grew = 1;
		if (ds_seg_zero(fd, end > w->size0 ? end : w->size0,
		    room) == -1)
			goto fail;
	}
	if (ds_stats_fdatasync(fd) == -1) {
		ds_log("fdatasync: %s", strerror(errno));
		goto fail;
	}
	return DS_OK;
fail:
	err = errno;
	unwrite(fd, w);
	return ds_sys_err(err);
}

/* One producer's state as the batch leaves it. */
struct pslot {
	char			 key[8 + DS_PRODUCER_MAX];
	size_t			 keylen;
	struct ds_pstate	 ps;
	int			 have;		/* there is a state */
	int			 dirty;		/* changed by the batch */
};

/*
 * Finds the batch's slot for the producer of req, reading its committed
 * state in txn the first time. Returns NULL with *e set on failure.
 */
static struct pslot *
pslot_get(struct ds_store *s, MDB_txn *txn, uint64_t id,
    const struct ds_producer *p, struct pslot *slots, int *nslots,
    enum ds_err *e)
{
	struct pslot *sl;
	char key[8 + DS_PRODUCER_MAX];
	size_t keylen;
	MDB_val k, v;
	int i, rc;

	keylen = ds_producer_key(id, p->id, p->idlen, key);
	for (i = 0; i < *nslots; i++)
		if (slots[i].keylen == keylen &&
		    memcmp(slots[i].key, key, keylen) == 0)
			return &slots[i];
	sl = &slots[(*nslots)++];
	memset(sl, 0, sizeof(*sl));
	memcpy(sl->key, key, keylen);
	sl->keylen = keylen;
	k.mv_data = sl->key;
	k.mv_size = keylen;
	rc = mdb_get(txn, s->producers, &k, &v);
	if (rc == 0 && v.mv_size == sizeof(sl->ps)) {
		memcpy(&sl->ps, v.mv_data, sizeof(sl->ps));
		sl->have = 1;
	} else if (rc != 0 && rc != MDB_NOTFOUND) {
		*e = ds_mdb_err(__func__, "mdb_get producer", rc);
		return NULL;
	}
	return sl;
}

/*
 * The batch failed with e and nothing of it is stored: every append gets
 * e, but for those validated against the committed state alone (a refusal
 * or a duplicate of a committed append is true whatever became of the
 * batch).
 */
static void
fail_batch(struct pending *b, enum ds_err e)
{
	for (; b; b = b->next)
		if (!b->validated || b->accepted || b->provisional) {
			b->e = e;
			b->accepted = 0;
			b->res->duplicate = 0;
		}
}

/* A stream's batch, written and synced, as it goes to the shared commit. */
struct batch_commit {
	const char		*path;
	uint64_t		 id;
	uint64_t		 tail0;		/* the batch's committed state */
	uint32_t		 closed0;
	const struct ds_rec	*rec;		/* as the batch leaves it */
	const struct pslot	*slots;
	int			 nslots;
	int			 moved;		/* the tail moved under the lock */
	int			 fd;		/* the segment, locked */
	const void		*jdata;		/* bytes for the journal, or NULL */
	size_t			 jlen;
	uint64_t		 jat;		/* ...at this segment position */
};

/*
 * The batch is committed: the next batch of the stream, in any process,
 * may validate against it now. Releases the segment lock.
 */
static void
batch_visible(void *arg)
{
	struct batch_commit *bc = arg;

	close(bc->fd);
	bc->fd = -1;
}

/*
 * Puts a stream's batch into txn (ds_commit()): its record, the producer
 * states it changed and, when not synced in its segment, its bytes.
 * Returns DS_OK or an error.
 */
static enum ds_err
apply_batch(struct ds_store *s, MDB_txn *txn, void *arg)
{
	struct batch_commit *bc = arg;
	const struct ds_rec *r = bc->rec;
	const struct pslot *sl;
	struct ds_rec c;
	MDB_val k, v;
	enum ds_err e;
	int rc;

	bc->moved = 0;	/* applied again when a shared commit begins again */
	/*
	 * A DELETE (or an expiry) does not take the segment lock: check the
	 * id again, and whether the stream was deleted meanwhile but kept
	 * for its forks. Only the closed flag is the batch's to set.
	 */
	if ((e = ds_rec_get(s, txn, bc->path, &c)) == DS_OK &&
	    c.info.id != bc->id)
		return DS_EREPLACED;
	if (e != DS_OK)
		return e;
	if (c.info.flags & DS_F_DELETED)
		return DS_EGONE;
	if (c.info.tail != bc->tail0 ||
	    (c.info.flags & DS_F_CLOSED) != bc->closed0) {
		/* Only appends move these, and the batch holds the lock. */
		ds_log("append to %s: committed tail moved under the segment "
		    "lock (%" PRIu64 " -> %" PRIu64 ")", bc->path, bc->tail0,
		    c.info.tail);
		bc->moved = 1;
		return DS_EIO;
	}
	/* Whatever else changed in the record (TTL access, forks) stays. */
	c.info.tail = r->info.tail;
	c.info.flags = (c.info.flags & ~(uint32_t)DS_F_CLOSED) |
	    (r->info.flags & DS_F_CLOSED);
	c.info.access_ms = r->info.access_ms;
	memcpy(c.seq, r->seq, r->seqlen);
	c.seqlen = r->seqlen;
	memcpy(c.closer, r->closer, r->closerlen);
	c.closerlen = r->closerlen;
	c.closer_epoch = r->closer_epoch;
	c.closer_seq = r->closer_seq;
	if ((e = ds_index_point(s, txn, &c, r->info.access_ms)) != DS_OK ||
	    (e = ds_rec_put(s, txn, bc->path, &c)) != DS_OK)
		return e;
	if (bc->jdata && (e = ds_journal_put(s, txn, bc->id, bc->jat,
	    bc->jdata, bc->jlen)) != DS_OK)
		return e;
	for (sl = bc->slots; sl < bc->slots + bc->nslots; sl++) {
		if (!sl->dirty)
			continue;
		k.mv_data = (void *)sl->key;
		k.mv_size = sl->keylen;
		v.mv_data = (void *)&sl->ps;
		v.mv_size = sizeof(sl->ps);
		if ((rc = mdb_put(txn, s->producers, &k, &v, 0)) != 0)
			return ds_mdb_err(__func__, "mdb_put producer", rc);
	}
	return DS_OK;
}

/*
 * Opens the segment of stream id, found missing at path, into *fd. The
 * stream was deleted (DS_ENOTFOUND or DS_EGONE, or DS_EREPLACED when
 * another stream has the path now), or it has no byte yet and so no file: then the file
 * is made, and *created says whether by this call. Whatever happens to the
 * stream after this look, the check under the segment lock catches.
 */
static enum ds_err
open_unborn(struct ds_store *s, const char *path, uint64_t id, int64_t now,
    int *fd, int *created)
{
	struct ds_rec r;
	enum ds_err e;

	e = ds_lookup(s, path, now, &r);
	if (e != DS_OK && e != DS_EGONE)
		return e;
	if (r.info.id != id)
		return DS_EREPLACED;
	if (e == DS_EGONE)
		return e;	/* soft-deleted, kept for its forks */
	if (r.info.tail != r.info.base) {
		ds_log("%s: segment missing", path);
		return DS_EIO;
	}
	if ((*fd = ds_seg_open_new(s, id, created)) == -1)
		return ds_sys_err(errno);
	return DS_OK;
}

/*
 * Runs one batch of appends to stream id at path (see the top). Every
 * pending gets its result in ->e and ->res. An append validated against
 * what an earlier one of the batch left (a producer retry answered as a
 * duplicate of it, say) shares the batch's fate when the write or the
 * commit fails.
 */
void
ds_batch_run(struct ds_store *s, const char *path, uint64_t id,
    struct pending *batch)
{
	struct pslot slots[BATCH_MAX];
	struct pending *b;
	struct batch_commit bc;
	struct seg_write w = { 0 };
	struct ds_commit cm;
	struct ds_rec r;
	const struct ds_producer *p;
	MDB_txn *txn;
	struct pslot *sl = NULL;
	struct ds_pstate none;
	enum ds_err e = DS_OK;
	uint64_t tail0 = 0, own = 0, len = 0;
	uint32_t closed0 = 0;
	char *buf = NULL;
	const void *data = NULL;
	int fd, nslots = 0, naccepted = 0, written = 0, committed = 0;
	int created = 0, journal = 0;
	MDB_stat ms;

	if ((fd = ds_seg_open(s, id, O_RDWR)) == -1) {
		e = errno == ENOENT ? open_unborn(s, path, id, batch->now, &fd,
		    &created) : DS_EIO;
		if (e != DS_OK) {
			fail_batch(batch, e);
			return;
		}
	}
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
	if (e == DS_OK && (r.info.flags & DS_F_DELETED))
		e = DS_EGONE;
	if (e != DS_OK)
		goto read_done;
	tail0 = r.info.tail;
	closed0 = r.info.flags & DS_F_CLOSED;
	/*
	 * A journal that checkpoints cannot empty (a segment that fails to
	 * sync keeps its entries) stops taking bytes at DS_JOURNAL_CAP
	 * entries: every batch then syncs its own, as before the journal.
	 */
	journal = mdb_stat(txn, s->journal, &ms) == 0 &&
	    ms.ms_entries < DS_JOURNAL_CAP;
	memset(&none, 0, sizeof(none));
	for (b = batch; b; b = b->next) {
		p = b->req->producer;
		sl = NULL;
		if (p && (sl = pslot_get(s, txn, id, p, slots, &nslots,
		    &e)) == NULL)
			goto read_done;
		b->provisional = naccepted > 0;
		b->e = validate(&r, sl ? &sl->ps : &none, sl && sl->have,
		    b->req, b->res);
		b->validated = 1;
		if (b->e != DS_OK || b->res->duplicate)
			continue;
		b->accepted = 1;
		naccepted++;
		len += b->req->len;
		r.info.tail += b->req->len;
		r.info.access_ms = b->now;
		if (b->req->seq) {
			memcpy(r.seq, b->req->seq, b->req->seqlen);
			r.seqlen = b->req->seqlen;
		}
		if (b->req->close) {
			r.info.flags |= DS_F_CLOSED;
			if (p) {
				memcpy(r.closer, p->id, p->idlen);
				r.closerlen = p->idlen;
				r.closer_epoch = p->epoch;
				r.closer_seq = p->seq;
			}
		}
		if (sl) {
			sl->ps.epoch = p->epoch;
			sl->ps.seq = p->seq;
			sl->ps.access_ms = b->now;
			sl->have = sl->dirty = 1;
		}
		b->res->tail = r.info.tail;
		b->res->closed = (r.info.flags & DS_F_CLOSED) != 0;
	}
read_done:
	/* A read snapshot is ended, never aborted: it is the thread's. */
	ds_rd_end(txn);
	if (e != DS_OK || naccepted == 0)
		goto out;

	/* One write and one sync for all the accepted bytes. */
	own = tail0 - r.info.base;
	if (len > 0) {
		if (naccepted == 1) {
			for (b = batch; !b->accepted; b = b->next)
				;
			data = b->req->body;
		} else {
			if ((buf = malloc(len)) == NULL) {
				e = DS_ENOMEM;
				goto out;
			}
			len = 0;
			for (b = batch; b; b = b->next)
				if (b->accepted && b->req->len > 0) {
					memcpy(buf + len, b->req->body,
					    b->req->len);
					len += b->req->len;
				}
			data = buf;
		}
		if ((e = write_data(s, fd, own, data, len, journal, &w)) !=
		    DS_OK)
			goto out;
		written = 1;	/* from here, undone unless committed */
		/* The stream's first bytes: its file may be new (see above). */
		if (own == 0 && ds_seg_sync_dir(s, id) == -1) {
			e = ds_sys_err(errno);
			goto out;
		}
	}

	memset(&bc, 0, sizeof(bc));
	bc.path = path;
	bc.id = id;
	bc.tail0 = tail0;
	bc.closed0 = closed0;
	bc.rec = &r;
	bc.slots = slots;
	bc.nslots = nslots;
	bc.fd = fd;
	if (written && w.journal) {
		bc.jdata = data;
		bc.jlen = len;
		bc.jat = own;
	}
	memset(&cm, 0, sizeof(cm));
	cm.apply = apply_batch;
	cm.visible = batch_visible;
	cm.arg = &bc;
	cm.flush = written && w.flush;
	cm.flush_mark = w.flush_mark;
	ds_commit(s, &cm);
	e = cm.e;
	committed = cm.committed;
	if (e == DS_OK)
		ds_stats_batch((unsigned)naccepted, len);
	if (bc.moved)
		written = 0;	/* not ours to cut */
	fd = bc.fd;	/* -1: committed, and the lock released */
out:
	if (written && !committed)
		unwrite(fd, &w);
	/* A file made for a stream deleted meanwhile: nobody else will. */
	if (created && (e == DS_ENOTFOUND || e == DS_EREPLACED ||
	    e == DS_EGONE))
		ds_seg_unlink(s, id);
	if (e != DS_OK)
		fail_batch(batch, e);
	free(buf);
	if (fd != -1)
		close(fd);	/* releases the lock */
}

