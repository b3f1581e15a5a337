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
 * turn it is) reads the entries, writes each one's bytes into its segment
 * again (see jstream_write()), makes those segments durable and then
 * deletes the entries, but those of a stream whose segment failed. One
 * process at a time does it (an flock() on the meta directory); a
 * deletion lost in a crash only means those entries are written again.
 *
 * Replay: a machine that went down may have lost segment pages that were
 * never synced. Opening the store does the same with every entry, so
 * their bytes are back before anyone reads. The bytes at a committed
 * position never change, so writing them again while other processes run
 * is harmless; only what the stream still has is written (committed, not
 * trimmed, not deleted).
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

/*
 * The streams one pass handles, by id: an open-addressing table of twice
 * PASS_STREAMS slots. Each holds its segment open for the whole pass.
 */
#define PASS_STREAMS	256		/* segments one pass keeps open */
#define PASS_SLOTS	(2 * PASS_STREAMS)

enum { J_WRITE = 1, J_SKIP, J_FAILED };

struct jstream {
	uint64_t	 id;
	int		 state;		/* 0: free slot, or J_* */
	int		 fd;		/* J_WRITE: the segment */
	uint64_t	 lo, hi;	/* what the stream still has of it */
};

struct jset {
	struct jstream	 slot[PASS_SLOTS];
	int		 n;
};

/*
 * Looks at stream id as txn has it: J_SKIP when it has no segment bytes
 * to keep (deleted since, or never had any: logged if its file is gone),
 * J_FAILED when it cannot be told or its segment not opened, else J_WRITE
 * with its segment open and the range it still has.
 */
static void
jstream_open(struct ds_store *s, MDB_txn *txn, struct jstream *st)
{
	char path[DS_PATH_MAX + 1];
	struct ds_rec r;
	enum ds_err e;

	st->state = J_FAILED;
	st->fd = -1;
	if ((e = ds_rec_find_id(s, txn, st->id, path, &r)) == DS_ENOTFOUND) {
		st->state = J_SKIP;
		return;
	}
	if (e != DS_OK)
		return;		/* logged */
	st->lo = ds_own_first(&r) - r.info.base;
	st->hi = r.info.tail - r.info.base;
	if ((st->fd = ds_seg_open(s, st->id, O_WRONLY)) == -1) {
		if (errno != ENOENT)
			return;	/* logged */
		ds_log("%s: segment gone (the stream deleted since?); its "
		    "journalled bytes are dropped", path);
		st->state = J_SKIP;
		return;
	}
	st->state = J_WRITE;
}

/* The slot of stream id in the pass, or the free slot it would take. */
static struct jstream *
jstream_slot(struct jset *set, uint64_t id)
{
	struct jstream *st;
	unsigned i = (unsigned)ds_id_hash(id) % PASS_SLOTS;

	for (;; i = (i + 1) % PASS_SLOTS) {
		st = &set->slot[i];
		if (st->state == 0 || st->id == id)
			return st;
	}
}

/* The slot of stream id in the pass, or NULL. */
static struct jstream *
jstream_find(struct jset *set, uint64_t id)
{
	struct jstream *st = jstream_slot(set, id);

	return st->state != 0 ? st : NULL;
}

/*
 * The slot of stream id, looked at in txn the first time; NULL when the
 * pass has as many streams as it takes.
 */
static struct jstream *
jstream_get(struct ds_store *s, MDB_txn *txn, struct jset *set, uint64_t id)
{
	struct jstream *st = jstream_slot(set, id);

	if (st->state != 0)
		return st;
	if (set->n == PASS_STREAMS)
		return NULL;
	set->n++;
	st->id = id;
	jstream_open(s, txn, st);
	return st;
}

/*
 * Writes an entry's bytes, at position at of its segment, again: as far
 * as the stream still has them. Written through the pass's own descriptor,
 * an error of their write-out reaches the sync below, even when an earlier
 * write-out of the same pages failed and was reported to another (Linux
 * reports such an error once per open file, and marks the pages clean).
 */
static void
jstream_write(struct jstream *st, uint64_t at, const MDB_val *v)
{
	uint64_t lo = st->lo > at ? st->lo : at;
	uint64_t hi = st->hi < at + v->mv_size ? st->hi : at + v->mv_size;

	if (st->state != J_WRITE || lo >= hi)
		return;
	if (ds_seg_write(st->fd, lo, (const char *)v->mv_data + (lo - at),
	    hi - lo) == -1) {
		ds_log("segment %016" PRIx64 ": write at %" PRIu64 ": %s",
		    st->id, lo, strerror(errno));
		st->state = J_FAILED;
	}
}

/*
 * Makes what the pass wrote durable: at a checkpoint, as the appends'
 * flush path does (batch.c), each segment's pages written out and waited
 * for, then one device flush begun after the last (shared: see
 * ds_lanes_flush()); at a replay, or without room writes here, each
 * segment's fdatasync(), which also makes its size and blocks durable. A
 * stream whose segment fails is J_FAILED; a failed flush fails them all.
 */
static void
jset_sync(struct ds_store *s, struct jset *set, int replay)
{
	struct jstream *st;
	int rc, range = s->range_sync && !replay, any = 0;

	for (st = set->slot; st < set->slot + PASS_SLOTS; st++) {
		if (st->state != J_WRITE)
			continue;
		if (range)
			rc = ds_seg_write_out(st->fd, 0, 0);
		else
			rc = ds_stats_fdatasync(st->fd);
		if (rc == -1) {
			ds_log("sync segment %016" PRIx64 ": %s", st->id,
			    strerror(errno));
			st->state = J_FAILED;
		}
		any = 1;
	}
	if (range && any &&
	    ds_lanes_flush(s, ds_lanes_flush_mark(s)) == -1) {
		ds_log("shared flush: %s", strerror(errno));
		for (st = set->slot; st < set->slot + PASS_SLOTS; st++)
			if (st->state == J_WRITE)
				st->state = J_FAILED;
	}
}

static void
jset_close(struct jset *set)
{
	struct jstream *st;

	for (st = set->slot; st < set->slot + PASS_SLOTS; st++)
		if (st->state != 0 && st->fd != -1)
			close(st->fd);
}

/*
 * Deletes the entries up to key last but those of streams that failed.
 * Its own transaction, not the shared commit: it frees pages and must
 * commit on a full disk, as a delete does (no ds_meta_reserve()).
 */
static enum ds_err
drop(struct ds_store *s, struct jset *set, const char *last)
{
	struct jstream *st;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	enum ds_err e;
	uint64_t id;
	int rc;

	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((rc = mdb_cursor_open(txn, s->journal, &cur)) != 0) {
		mdb_txn_abort(txn);
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	}
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;	/* after a delete, the next entry */
		if (k.mv_size != JKEY_LEN)
			continue;	/* not ours */
		if (memcmp(k.mv_data, last, JKEY_LEN) > 0)
			break;
		memcpy(&id, (const char *)k.mv_data + 8, sizeof(id));
		/* (Every entry up to last was in the pass.) */
		if ((st = jstream_find(set, id)) == NULL ||
		    st->state == J_FAILED)
			continue;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return ds_mdb_err(__func__, "journal", rc);
	}
	return ds_txn_commit_sync(s, txn);
}

/*
 * One checkpoint or replay: the entries committed up to upto_txn, when it
 * began (later ones wait for the next: appends that never stop must not
 * keep it going), and the streams that failed in it, whose entries it
 * passes over (they stay for the next).
 */
struct jrun {
	int		 replay;
	uint64_t	 upto_txn;
	uint64_t	*failed;
	size_t		 nfailed, cap;
	enum ds_err	 drop_e;	/* the entries written back stayed */
	char		 from[JKEY_LEN]; /* the passes so far took up to here */
	int		 have_from;
};

static int
run_failed(const struct jrun *run, uint64_t id)
{
	size_t i;

	for (i = 0; i < run->nfailed; i++)
		if (run->failed[i] == id)
			return 1;
	return 0;
}

static enum ds_err
run_fail(struct jrun *run, uint64_t id)
{
	uint64_t *p;

	if (run->nfailed == run->cap) {
		run->cap = run->cap ? run->cap * 2 : 16;
		if ((p = realloc(run->failed, run->cap * sizeof(*p))) == NULL)
			return DS_ENOMEM;
		run->failed = p;
	}
	run->failed[run->nfailed++] = id;
	return DS_OK;
}

/*
 * One pass over the journal, up to DS_CKPT_MAX entries of at most
 * PASS_STREAMS streams: each entry's bytes written again into its segment
 * (see jstream_write()), the segments synced, then the entries dropped but
 * for the streams that failed, which join run->failed. Returns DS_OK (a
 * stream's failure included) or an error that stops the run; *full says
 * whether the run has more to take.
 */
static enum ds_err
pass(struct ds_store *s, struct jrun *run, int *full)
{
	struct jset *set;
	struct jstream *st;
	char last[JKEY_LEN];
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	enum ds_err e;
	size_t n = 0;
	uint64_t id;
	int rc = 0;

	*full = 0;
	if ((set = calloc(1, sizeof(*set))) == NULL)
		return DS_ENOMEM;
	if ((e = ds_txn_begin(s, MDB_RDONLY, &txn)) != DS_OK)
		goto out;
	if ((rc = mdb_cursor_open(txn, s->journal, &cur)) != 0) {
		mdb_txn_abort(txn);
		e = ds_mdb_err(__func__, "mdb_cursor_open", rc);
		goto out;
	}
	/*
	 * What an earlier pass of the run took and left is a failed
	 * stream's, or written back already (its drop failed).
	 */
	if (run->have_from) {
		k.mv_size = JKEY_LEN;
		k.mv_data = run->from;
		op = MDB_SET_RANGE;
	}
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size != JKEY_LEN)
			continue;	/* not ours: left alone */
		if (run->have_from && memcmp(k.mv_data, run->from,
		    JKEY_LEN) <= 0)
			continue;
		if (ds_be64_get(k.mv_data) > run->upto_txn)
			break;
		memcpy(&id, (const char *)k.mv_data + 8, sizeof(id));
		if (run_failed(run, id))
			continue;
		if ((n > 0 && n >= s->ckpt_max) ||
		    (st = jstream_get(s, txn, set, id)) == NULL) {
			*full = 1;
			break;
		}
		jstream_write(st, ds_be64_get((const char *)k.mv_data + 16), &v);
		memcpy(last, k.mv_data, JKEY_LEN);
		n++;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "journal", rc);
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (e != DS_OK || n == 0)
		goto out;
	jset_sync(s, set, run->replay);
	for (st = set->slot; st < set->slot + PASS_SLOTS; st++)
		if (st->state == J_FAILED && (e = run_fail(run, st->id)) !=
		    DS_OK)
			goto out;
	/* The bytes are durable: a failed drop only leaves them to redo. */
	if ((e = drop(s, set, last)) != DS_OK)
		run->drop_e = e;
	e = DS_OK;
	memcpy(run->from, last, JKEY_LEN);
	run->have_from = 1;
out:
	jset_close(set);
	free(set);
	return e;
}

/*
 * Runs passes until the journal holds nothing up to the run's start but
 * the entries of streams that failed (*nfailed, logged). Returns DS_OK,
 * or the error that stopped it before every stream's bytes were written
 * back and synced; *drop_e is the error of a failed drop, after which
 * they were.
 */
static enum ds_err
run(struct ds_store *s, int replay, size_t *nfailed, enum ds_err *drop_e)
{
	struct jrun r = { .replay = replay, .drop_e = DS_OK };
	MDB_envinfo ei;
	enum ds_err e;
	int rc, full;

	*nfailed = 0;
	*drop_e = DS_OK;
	if ((rc = mdb_env_info(s->env, &ei)) != 0)
		return ds_mdb_err(__func__, "mdb_env_info", rc);
	r.upto_txn = ei.me_last_txnid;
	while (flock(s->ckfd, LOCK_EX) == -1)
		if (errno != EINTR)
			return ds_sys_err(errno);
	while ((e = pass(s, &r, &full)) == DS_OK && full)
		;
	flock(s->ckfd, LOCK_UN);
	if (r.nfailed > 0)
		ds_log("journal: %zu streams' segments could not be written "
		    "and synced; their entries are kept", r.nfailed);
	*nfailed = r.nfailed;
	*drop_e = r.drop_e;
	free(r.failed);
	return e;
}

/*
 * At open (ds_store_open()): every entry written back and synced. A
 * stream that fails keeps its entries (a read of it fails, or may see
 * what the crash left) and the store opens all the same: one bad segment
 * must not keep every other stream from being served; nor must a drop
 * that cannot commit (a full disk). Anything else fails the open: bytes
 * not written back would read as lost.
 */
enum ds_err
ds_journal_replay(struct ds_store *s)
{
	enum ds_err e, drop_e;
	size_t nfailed;

	if ((e = run(s, 1, &nfailed, &drop_e)) != DS_OK)
		ds_log("journal replay: %s", ds_strerror(e));
	return e;
}

DS_EXPORT enum ds_err
ds_store_checkpoint(struct ds_store *s)
{
	enum ds_err e, drop_e;
	size_t nfailed;

	if ((e = run(s, 0, &nfailed, &drop_e)) != DS_OK)
		return e;
	return nfailed > 0 ? DS_EIO : drop_e;
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
