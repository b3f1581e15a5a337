/*
 * journal.c: the bytes of small appends, committed with their metadata.
 *
 * A batch of appends whose bytes fit in its segment's room (segment.c)
 * and are at most DS_JOURNAL_MAX long writes them into the segment without
 * syncing it, and puts a copy into the journal database in the same LMDB
 * transaction as the stream's new tail (batch.c). The LMDB sync that the
 * commit waits for anyway makes them durable: one write-out of one file
 * for all the batches of a shared commit, where each segment's own
 * write-out would cost a device round trip per stream (and, on a virtual
 * machine, an exit to the host per file). Readers still read the segment:
 * its pages hold the bytes from the pwrite() on, in every process.
 *
 * A key is the committing transaction's id, the stream's id and the
 * position in its segment (8 bytes each, so new entries go to the right
 * of the tree); the value is the bytes.
 *
 * Checkpoints keep the journal short: every CKPT_EVERY_US a thread of one
 * of the server's processes (ds_store_cfg.pool; the lane file says whose
 * turn it is) reads the entries, makes the segment of each stream they
 * name durable and then deletes them. Every entry it read was committed
 * after its bytes were written to the segment, so the segment's sync
 * covers them. One process at a time does it (an flock() on the meta
 * directory); a deletion lost in a crash only means those entries are
 * written again at the next start.
 *
 * Replay: a machine that went down may have lost segment pages that were
 * never synced. Opening the store writes every entry back into its
 * segment (within what the stream has committed and retained, when it
 * still exists), syncs those segments and deletes the entries. The bytes
 * at a committed position never change, so writing them again while other
 * processes run is harmless.
 */
#include <sys/file.h>

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"

#define JKEY_LEN	24
#define CKPT_LOOK_MS	50		/* a process's thread looks... */
#define CKPT_EVERY_US	200000		/* ...whether one is due */
#define CKPT_MAX	8192		/* entries one checkpoint takes */

static void
jkey(char *k, uint64_t txnid, uint64_t id, uint64_t at)
{
	ds_be64_put(k, txnid);
	memcpy(k + 8, &id, sizeof(id));	/* as the ids database has it */
	ds_be64_put(k + 16, at);
}

enum ds_err
ds_journal_put(struct ds_store *s, MDB_txn *txn, uint64_t id, uint64_t at,
    const void *data, size_t len)
{
	char key[JKEY_LEN];
	MDB_val k = { sizeof(key), key }, v = { len, (void *)data };
	int rc;

	jkey(key, mdb_txn_id(txn), id, at);
	if ((rc = mdb_put(txn, s->journal, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put journal", rc);
	return DS_OK;
}

/* The distinct stream ids of a checkpoint or a replay. */
struct idset {
	uint64_t	*id;
	size_t		 n, cap;
};

static int
idset_add(struct idset *set, uint64_t id)
{
	uint64_t *p;
	size_t i;

	/* Entries come in commit order, one stream's usually together. */
	for (i = set->n; i > 0 && set->n - i < 16; i--)
		if (set->id[i - 1] == id)
			return 0;
	if (set->n == set->cap) {
		set->cap = set->cap ? set->cap * 2 : 64;
		if ((p = realloc(set->id, set->cap * sizeof(*p))) == NULL)
			return -1;
		set->id = p;
	}
	set->id[set->n++] = id;
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Makes the segments of the set durable, as the appends' flush path does
 * (batch.c): each one's dirty pages written out and waited for, then one
 * device flush begun after the last (shared: see ds_lanes_flush()); or,
 * without room writes here, each one's fdatasync(). A segment that is
 * gone belonged to a stream deleted since: nothing of it needs keeping.
 * Returns 0, or -1 when one could not be synced.
 */
static int
sync_segments(struct ds_store *s, struct idset *set)
{
	size_t i;
	int fd, rc, ret = 0, any = 0;

	qsort(set->id, set->n, sizeof(*set->id), cmp_u64);
	for (i = 0; i < set->n; i++) {
		if (i > 0 && set->id[i] == set->id[i - 1])
			continue;
		if ((fd = ds_seg_open(s, set->id[i], O_RDONLY)) == -1) {
			if (errno != ENOENT)
				ret = -1;
			continue;
		}
		if (s->range_sync)
			rc = sync_file_range(fd, 0, 0,
			    SYNC_FILE_RANGE_WAIT_BEFORE |
			    SYNC_FILE_RANGE_WRITE |
			    SYNC_FILE_RANGE_WAIT_AFTER);
		else
			rc = ds_stats_fdatasync(fd);
		if (rc == -1) {
			ds_log("sync segment %016" PRIx64 ": %s", set->id[i],
			    strerror(errno));
			ret = -1;
		}
		any = 1;
		close(fd);
	}
	if (ret == 0 && any && s->range_sync &&
	    ds_lanes_flush(s, ds_lanes_flush_mark(s)) == -1) {
		ds_log("shared flush: %s", strerror(errno));
		ret = -1;
	}
	return ret;
}

/* Deletes the entries up to key last (a change for the shared commit). */
static enum ds_err
drop_upto(struct ds_store *s, MDB_txn *txn, void *arg)
{
	const char *last = arg;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->journal, &cur)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if (k.mv_size != JKEY_LEN ||
		    memcmp(k.mv_data, last, JKEY_LEN) > 0)
			break;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "journal", rc);
	return DS_OK;
}

static enum ds_err
drop(struct ds_store *s, const char *last)
{
	struct ds_commit cm;

	memset(&cm, 0, sizeof(cm));
	cm.apply = drop_upto;
	cm.arg = (void *)last;
	ds_commit(s, &cm);
	return cm.e;
}

/*
 * Writes an entry's bytes back into its segment, as far as its stream,
 * in txn, still has them: committed, and retained. Returns 0, or -1 on a
 * write error.
 */
static int
replay_one(struct ds_store *s, MDB_txn *txn, uint64_t id, uint64_t at,
    const MDB_val *v, struct idset *set)
{
	char path[DS_PATH_MAX + 1];
	struct ds_rec r;
	uint64_t lo, hi, end = at + v->mv_size;
	MDB_val ik = { sizeof(id), &id }, iv;
	enum ds_err e;
	int fd, rc, ret = 0;

	/* A stream deleted since needs nothing kept. */
	if ((rc = mdb_get(txn, s->ids, &ik, &iv)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0) {
		ds_mdb_err(__func__, "mdb_get id", rc);
		return -1;
	}
	if (iv.mv_size > DS_PATH_MAX) {
		ds_log("stream %016" PRIx64 ": id entry too long", id);
		return -1;
	}
	memcpy(path, iv.mv_data, iv.mv_size);
	path[iv.mv_size] = '\0';
	if ((e = ds_rec_get(s, txn, path, &r)) == DS_ENOTFOUND ||
	    (e == DS_OK && r.info.id != id))
		return 0;
	if (e != DS_OK)
		return -1;
	lo = ds_own_first(&r) - r.info.base;
	hi = r.info.tail - r.info.base;
	if (lo < at)
		lo = at;
	if (hi > end)
		hi = end;
	if (lo >= hi)
		return 0;
	if ((fd = ds_seg_open(s, id, O_WRONLY)) == -1) {
		if (errno != ENOENT)
			return -1;	/* logged */
		ds_log("%s: segment missing for %" PRIu64 " journalled bytes",
		    path, hi - lo);
		return 0;
	}
	if (ds_seg_write(fd, lo, (const char *)v->mv_data + (lo - at),
	    hi - lo) == -1) {
		ds_log("%s: replay at %" PRIu64 ": %s", path, lo,
		    strerror(errno));
		ret = -1;
	}
	close(fd);
	if (ret == 0 && idset_add(set, id) == -1)
		ret = -1;
	return ret;
}

/*
 * One pass over the journal: up to max entries (0: all), replayed first
 * when replay is set; their segments synced, then the entries dropped.
 * Returns DS_OK (also when there was nothing to do) or an error, with the
 * entries kept; *full says whether it stopped at max.
 */
static enum ds_err
pass(struct ds_store *s, size_t max, int replay, int *full)
{
	struct idset set = { NULL, 0, 0 };
	char last[JKEY_LEN];
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	enum ds_err e;
	size_t n = 0;
	uint64_t id;
	int rc = 0;

	if ((e = ds_txn_begin(s, MDB_RDONLY, &txn)) != DS_OK)
		return e;
	if ((rc = mdb_cursor_open(txn, s->journal, &cur)) != 0) {
		mdb_txn_abort(txn);
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	}
	e = DS_OK;
	while ((max == 0 || n < max) &&
	    (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != JKEY_LEN)
			continue;	/* not ours: left alone */
		memcpy(&id, (const char *)k.mv_data + 8, sizeof(id));
		if (replay ? replay_one(s, txn, id,
		    ds_be64_get((const char *)k.mv_data + 16), &v, &set) :
		    idset_add(&set, id)) {
			e = DS_EIO;
			break;
		}
		memcpy(last, k.mv_data, JKEY_LEN);
		n++;
	}
	if (e == DS_OK && rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "journal", rc);
	*full = max > 0 && n == max;
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (e == DS_OK && n > 0) {
		if (sync_segments(s, &set) == -1)
			e = DS_EIO;
		else
			e = drop(s, last);
	}
	free(set.id);
	return e;
}

enum ds_err
ds_journal_replay(struct ds_store *s)
{
	enum ds_err e;
	int full;

	if ((e = pass(s, 0, 1, &full)) != DS_OK)
		ds_log("journal replay: %s", ds_strerror(e));
	return e;
}

DS_EXPORT enum ds_err
ds_store_checkpoint(struct ds_store *s)
{
	enum ds_err e;
	int full;

	while (flock(s->ckfd, LOCK_EX) == -1)
		if (errno != EINTR)
			return ds_sys_err(errno);
	/* Appends faster than a pass a turn would make it grow for good. */
	while ((e = pass(s, CKPT_MAX, 0, &full)) == DS_OK && full)
		;
	flock(s->ckfd, LOCK_UN);
	return e;
}

/* The checkpoints of a server's process (see the top). */
static void *
ckpt_main(void *arg)
{
	struct ds_store *s = arg;
	struct timespec at;
	enum ds_err e;

	pthread_mutex_lock(&s->ck_mu);
	while (!s->ck_stop) {
		clock_gettime(CLOCK_MONOTONIC, &at);
		at.tv_nsec += CKPT_LOOK_MS * 1000000L;
		if (at.tv_nsec >= 1000000000L) {
			at.tv_sec++;
			at.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->ck_cv, &s->ck_mu, &at);
		if (s->ck_stop)
			break;
		pthread_mutex_unlock(&s->ck_mu);
		/* One process's checkpoint serves all. */
		if (ds_lanes_ckpt_due(s, CKPT_EVERY_US) &&
		    (e = ds_store_checkpoint(s)) != DS_OK)
			ds_log("journal checkpoint: %s", ds_strerror(e));
		pthread_mutex_lock(&s->ck_mu);
	}
	pthread_mutex_unlock(&s->ck_mu);
	return NULL;
}

int
ds_journal_start(struct ds_store *s)
{
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->ck_cv, &ca);
	pthread_condattr_destroy(&ca);
	/* Signals are the server's main thread's to take. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&s->ck_thread, NULL, ckpt_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		pthread_cond_destroy(&s->ck_cv);
		errno = rc;
		return -1;
	}
	s->ck_running = 1;
	return 0;
}

void
ds_journal_stop(struct ds_store *s)
{
	if (!s->ck_running)
		return;
	pthread_mutex_lock(&s->ck_mu);
	s->ck_stop = 1;
	pthread_cond_signal(&s->ck_cv);
	pthread_mutex_unlock(&s->ck_mu);
	pthread_join(s->ck_thread, NULL);
	pthread_cond_destroy(&s->ck_cv);
	s->ck_running = 0;
}
