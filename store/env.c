/*
 * env.c: the store's environment: opening and closing it, LMDB
 * transactions, per-thread read snapshots, the metadata reserve and the
 * lock file's blocks; and the error strings and logging every file uses.
 *
 * Syncs. The environment runs with MDB_NOSYNC so that LMDB's single writer
 * lock is never held across a sync; a writer calls mdb_env_sync() after
 * its commit instead (ds_txn_commit_sync(), or commit.c's shared commit
 * for appends and creates), and concurrent writers share the flushes (the
 * kernel returns at once when the pages are already clean). No lock is
 * held across any fsync that another stream has to wait for.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/store_int.h"

static const char *const errtab[] = {
	[DS_OK] = "success",
	[DS_ENOTFOUND] = "stream not found",
	[DS_EGONE] = "stream is deleted",
	[DS_EEXIST] = "stream already exists",
	[DS_ECLOSED] = "stream is closed",
	[DS_ECTYPE] = "content type does not match the stream",
	[DS_ESEQ] = "Stream-Seq is not above the last one",
	[DS_EPRODUCER_STALE] = "stale producer epoch",
	[DS_EPRODUCER_GAP] = "producer sequence gap",
	[DS_EPRODUCER_BADSEQ] = "a new producer epoch must start at seq 0",
	[DS_EOFFSET] = "offset is beyond the tail or not on a boundary",
	[DS_ETOOBIG] = "value exceeds a store limit",
	[DS_EFULL] = "metadata map is full",
	[DS_EIO] = "I/O error",
	[DS_ENOMEM] = "out of memory",
	[DS_ECORRUPT] = "corrupt stream record",
	[DS_EREPLACED] = "stream was deleted and created again",
	[DS_EDEPTH] = "fork chain would be too deep",
	[DS_ENOSPC] = "no space left on the data volume",
	[DS_ESOURCE_GONE] = "the source stream is deleted",
	[DS_EFENCED] = "the wake generation is stale",
	[DS_ECLAIMED] = "another worker holds the lease",
	[DS_ENOWORK] = "the subscription has no pending work",
	[DS_ESUBTYPE] = "not for this type of subscription",
	[DS_ESTALE_TOKEN] = "the token is for another subscription, or for an "
	    "older one of this id",
	[DS_ENOTLINKED] = "the stream is not linked to the subscription",
	[DS_EACKOFFSET] = "the offset is past the stream's tail",
	[DS_ELINKS] = "a subscription links at most 10000 streams by name",
	[DS_ETRIMMED] = "offset is before the earliest retained position",
};

const char *
ds_strerror(enum ds_err e)
{
	if ((size_t)e >= sizeof(errtab) / sizeof(errtab[0]) || !errtab[e])
		return "unknown error";
	return errtab[e];
}

void
ds_logf(const char *fn, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ds-store[%ld]: %s: %s\n", (long)getpid(), fn, buf);
}

/*
 * Maps a failed system call's errno to ours: a full file system is the
 * operator's to fix (507), anything else an I/O error (500).
 */
enum ds_err
ds_sys_err(int err)
{
	return err == ENOSPC || err == EDQUOT ? DS_ENOSPC : DS_EIO;
}

/* Maps an LMDB return code to ours, logging the unexpected ones. */
enum ds_err
ds_mdb_err(const char *fn, const char *what, int rc)
{
	if (rc == ENOMEM)
		return DS_ENOMEM;
	ds_logf(fn, "%s: %s", what, mdb_strerror(rc));
	if (rc == MDB_MAP_FULL)
		return DS_EFULL;
	return ds_sys_err(rc);
}

/*
 * Begins a transaction. Another process may have grown the map; adopt its
 * size and try again.
 */
enum ds_err
ds_txn_begin(struct ds_store *s, unsigned flags, MDB_txn **txn)
{
	int rc;

	rc = mdb_txn_begin(s->env, NULL, flags, txn);
	if (rc == MDB_MAP_RESIZED) {
		if ((rc = mdb_env_set_mapsize(s->env, 0)) == 0)
			rc = mdb_txn_begin(s->env, NULL, flags, txn);
	}
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_txn_begin", rc);
	return DS_OK;
}

/*
 * Commits a write transaction and flushes it (see the top of the file). A
 * failed sync after the commit leaves it visible: the error is then
 * DS_EIO, never DS_ENOSPC ("nothing was stored"). Appends and creates
 * commit through commit.c instead, which does the same for many at once.
 */
enum ds_err
ds_txn_commit_sync(struct ds_store *s, MDB_txn *txn)
{
	int rc;

	if ((rc = mdb_txn_commit(txn)) != 0)
		return ds_mdb_err(__func__, "mdb_txn_commit", rc);
	if ((rc = ds_stats_env_sync(s->env)) != 0) {
		ds_mdb_err(__func__, "mdb_env_sync", rc);
		return DS_EIO;
	}
	return DS_OK;
}

/*
 * Read transactions. With MDB_NOTLS every mdb_txn_begin() takes a reader
 * slot under the environment's process-shared mutex; a thousand readers
 * woken at once would queue on it. Each thread therefore keeps one read
 * transaction, reset between uses and renewed (no mutex) for the next.
 * Threads must be done with the store before ds_store_close().
 */
struct rd_cache {
	MDB_txn		*txn;
	const struct ds_store *s;
};

static pthread_key_t	rd_key;
static pthread_once_t	rd_once = PTHREAD_ONCE_INIT;

static void
rd_free(void *p)
{
	struct rd_cache *c = p;

	if (c->txn)
		mdb_txn_abort(c->txn);
	free(c);
}

static void
rd_init(void)
{
	if (pthread_key_create(&rd_key, rd_free) != 0)
		abort();
}

static enum ds_err
rd_snapshot(struct ds_store *s, MDB_txn **txn)
{
	struct rd_cache *c;

	pthread_once(&rd_once, rd_init);
	if ((c = pthread_getspecific(rd_key)) == NULL) {
		if ((c = calloc(1, sizeof(*c))) == NULL ||
		    pthread_setspecific(rd_key, c) != 0) {
			free(c);
			return ds_txn_begin(s, MDB_RDONLY, txn);
		}
	}
	if (c->txn && c->s == s && mdb_txn_renew(c->txn) == 0) {
		*txn = c->txn;
		c->txn = NULL;	/* in use: a nested begin makes its own */
		return DS_OK;
	}
	if (c->txn && c->s == s)
		mdb_txn_abort(c->txn);
	c->txn = NULL;
	return ds_txn_begin(s, MDB_RDONLY, txn);
}

void
ds_rd_end(MDB_txn *txn)
{
	struct rd_cache *c = pthread_getspecific(rd_key);
	MDB_env *env = mdb_txn_env(txn);

	if (c && c->txn == NULL) {
		mdb_txn_reset(txn);
		c->txn = txn;
		c->s = mdb_env_get_userctx(env);
	} else
		mdb_txn_abort(txn);
}

/*
 * Begins a read transaction that sees every commit whose meta page was
 * written before the call. A read snapshot starts at the txnid the last
 * writer published in the lock file, which it does just after writing the
 * meta page. A writer SIGKILLed between the two leaves a commit that is on
 * disk but invisible to readers until the next write transaction repairs
 * the lock file (LMDB does that when it takes over the dead writer's
 * mutex). An append deciding on such a snapshot would write below the true
 * tail, over acknowledged data. So compare with the newest meta page and,
 * when the snapshot is older, begin and abort a write transaction to make
 * LMDB repair the txnid, then take a new snapshot. A live writer inside
 * the same window only costs a short wait for its mutex.
 */
enum ds_err
ds_rd_begin(struct ds_store *s, MDB_txn **txn)
{
	MDB_envinfo ei;
	MDB_txn *w;
	enum ds_err e;

	if (mdb_env_info(s->env, &ei) != 0)
		ei.me_last_txnid = 0;
	if ((e = rd_snapshot(s, txn)) != DS_OK ||
	    mdb_txn_id(*txn) >= ei.me_last_txnid)
		return e;
	ds_rd_end(*txn);
	*txn = NULL;
	if ((e = ds_txn_begin(s, 0, &w)) != DS_OK)
		return e;
	mdb_txn_abort(w);
	return rd_snapshot(s, txn);
}

/* Drops this thread's cached read transaction of s (before closing s). */
static void
rd_forget(const struct ds_store *s)
{
	struct rd_cache *c;

	pthread_once(&rd_once, rd_init);
	if ((c = pthread_getspecific(rd_key)) && c->txn && c->s == s) {
		mdb_txn_abort(c->txn);
		c->txn = NULL;
	}
}

/*
 * Keeps DS_META_RESERVE pages of the LMDB data file allocated past its last
 * used page: fallocate(FALLOC_FL_KEEP_SIZE) takes the blocks without
 * changing the file size, and LMDB's later pwrite()s that grow the file land
 * in them. Creates, appends and touches call this inside their write
 * transaction (under LMDB's writer lock, so the check and the commit see the
 * same last page) and are refused with DS_ENOSPC when the reserve cannot be
 * kept. Deletes do not call it: on a full disk they commit into the reserve
 * (a delete always needs a few new pages: copies of the leaves it changes
 * and of the free list, and pages freed by the last transactions are not
 * reusable yet), and the space they free refills it. s->reserved only ever
 * grows (LMDB never shrinks data.mdb), so most calls make no system call.
 */
enum ds_err
ds_meta_reserve(struct ds_store *s)
{
	MDB_envinfo ei;
	uint64_t want, have, extra;
	int fd, rc;

	if (__atomic_load_n(&s->no_reserve, __ATOMIC_RELAXED))
		return DS_OK;
	if ((rc = mdb_env_info(s->env, &ei)) != 0)
		return ds_mdb_err(__func__, "mdb_env_info", rc);
	want = (uint64_t)ei.me_last_pgno + 1 + DS_META_RESERVE;
	have = __atomic_load_n(&s->reserved, __ATOMIC_RELAXED);
	if (have >= want)
		return DS_OK;
	if ((rc = mdb_env_get_fd(s->env, &fd)) != 0)
		return ds_mdb_err(__func__, "mdb_env_get_fd", rc);
	/* A quarter more than needed, so the next commits make no call. */
	extra = DS_META_RESERVE / 4;
	for (;;) {
		if (fallocate(fd, FALLOC_FL_KEEP_SIZE,
		    (off_t)(ei.me_last_pgno + 1) * s->psize,
		    (off_t)(DS_META_RESERVE + extra) * s->psize) == 0) {
			__atomic_store_n(&s->reserved, want + extra,
			    __ATOMIC_RELAXED);
			return DS_OK;
		}
		if (errno == EINTR)
			continue;
		if (ds_sys_err(errno) == DS_ENOSPC && extra > 0) {
			extra = 0;
			continue;
		}
		break;
	}
	if (errno == EOPNOTSUPP) {
		ds_log("fallocate on the LMDB data file: %s; deletes on a "
		    "full disk may fail", strerror(errno));
		__atomic_store_n(&s->no_reserve, 1, __ATOMIC_RELAXED);
		return DS_OK;
	}
	ds_log("fallocate %u reserve pages of the LMDB data file: %s",
	    DS_META_RESERVE, strerror(errno));
	return ds_sys_err(errno);
}

/*
 * Allocates the LMDB lock file's blocks before LMDB maps it. LMDB sizes
 * lock.mdb with ftruncate() (a sparse file) and maps it shared; a reader
 * slot on a page nobody touched before is allocated by that first write,
 * and on a full file system the first touch is SIGBUS, which kills the
 * worker. So the blocks are taken here, while there is room (scripts/run
 * opens the store with --check before the pool starts), with
 * FALLOC_FL_KEEP_SIZE so that LMDB still sizes the file itself (LMDB 0.9:
 * 64-byte reader slots after a 128-byte header; a page covers the header).
 * This must run before mdb_env_open(): closing a descriptor of lock.mdb
 * drops every POSIX lock the process holds on it, LMDB's included. Blocks
 * already allocated need no room, so a worker restarted on a full disk
 * opens the store all the same. A lock file left sparse (by an older
 * version or LMDB's tools) or removed, on a disk that is full now: the
 * store still opens when the header and the first slots fit, with a
 * warning, so that the operator can free space through the API; when not
 * even they fit, LMDB's own first write would be SIGBUS: DS_ENOSPC.
 */
static enum ds_err
lock_prealloc(const char *meta, unsigned max_readers)
{
	char path[4096];
	struct stat st;
	off_t len, min = 64 * 1024;	/* header and ~1,000 slots */
	int fd, rc, saved;

	if (snprintf(path, sizeof(path), "%s/lock.mdb", meta) >=
	    (int)sizeof(path))
		return DS_EIO;
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		saved = errno;
		ds_log("open %s: %s", path, strerror(saved));
		return ds_sys_err(saved);
	}
	len = (off_t)max_readers * 64 + 4096;
	if (fstat(fd, &st) == 0 && st.st_size > len)
		len = st.st_size;
	while ((rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, len)) == -1 &&
	    errno == EINTR)
		;
	/* Then what fits of the first 64 KiB, down to the header's page. */
	for (; rc == -1 && ds_sys_err(errno) == DS_ENOSPC && min >= 4096;
	    min /= 4) {
		while ((rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, min)) ==
		    -1 && errno == EINTR)
			;
		if (rc == 0)
			ds_log("%s: the disk is full: only %lld of %lld bytes "
			    "of reader slots are allocated; free space soon "
			    "(workers whose threads need a slot past them "
			    "die)", path, (long long)min, (long long)len);
	}
	saved = errno;
	close(fd);
	if (rc == 0 || saved == EOPNOTSUPP)
		return DS_OK;
	ds_log("fallocate %s (%lld bytes): %s", path, (long long)len,
	    strerror(saved));
	return ds_sys_err(saved);
}

enum ds_err
ds_store_open(const struct ds_store_cfg *cfg, struct ds_store **out)
{
	struct ds_store *s;
	char meta[4096];
	MDB_stat ms;
	MDB_txn *txn = NULL;
	enum ds_err e = DS_EIO;
	int rc, dead;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return DS_ENOMEM;
	s->segdirfd = -1;
	s->flushfd = -1;
	s->ckfd = -1;
	s->journal_max = DS_JOURNAL_MAX;
	s->ckpt_max = DS_CKPT_MAX;
	pthread_mutex_init(&s->aq_mu, NULL);
	pthread_mutex_init(&s->ck_mu, NULL);
	pthread_mutex_init(&s->flush_mu, NULL);
	pthread_mutex_init(&s->cq_mu, NULL);
	s->cq_tailp = &s->cq;
	if (snprintf(meta, sizeof(meta), "%s/meta", cfg->dir) >=
	    (int)sizeof(meta) ||
	    asprintf(&s->segdir, "%s/segments", cfg->dir) == -1) {
		s->segdir = NULL;
		goto out;
	}
	if ((mkdir(cfg->dir, 0750) == -1 && errno != EEXIST) ||
	    (mkdir(meta, 0750) == -1 && errno != EEXIST) ||
	    (mkdir(s->segdir, 0750) == -1 && errno != EEXIST)) {
		ds_log("mkdir under %s: %s", cfg->dir, strerror(errno));
		goto out;
	}
	s->segdirfd = open(s->segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->segdirfd == -1) {
		ds_log("open %s: %s", s->segdir, strerror(errno));
		goto out;
	}
	s->ckfd = open(meta, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->ckfd == -1) {
		ds_log("open %s: %s", meta, strerror(errno));
		goto out;
	}
	s->range_sync = ds_seg_flush_open(s);
	if ((rc = mdb_env_create(&s->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(s->env, 10)) != 0 ||
	    (rc = mdb_env_set_maxreaders(s->env,
	    cfg->max_readers ? cfg->max_readers : 4096)) != 0 ||
	    (rc = mdb_env_set_mapsize(s->env,
	    cfg->map_size ? cfg->map_size : (size_t)8 << 30)) != 0) {
		e = ds_mdb_err(__func__, "mdb_env setup", rc);
		goto out;
	}
	mdb_env_set_userctx(s->env, s);
	if ((e = lock_prealloc(meta, cfg->max_readers ? cfg->max_readers :
	    4096)) != DS_OK)
		goto out;
	rc = mdb_env_open(s->env, meta,
	    MDB_NOSYNC | MDB_NOTLS | MDB_NORDAHEAD, 0640);
	if (rc != 0) {
		e = ds_mdb_err(__func__, meta, rc);
		goto out;
	}
	/* Reader slots of processes that died (SIGKILL) would pin pages. */
	if ((rc = mdb_reader_check(s->env, &dead)) != 0) {
		e = ds_mdb_err(__func__, "mdb_reader_check", rc);
		goto out;
	}
	if ((rc = mdb_env_stat(s->env, &ms)) != 0) {
		e = ds_mdb_err(__func__, "mdb_env_stat", rc);
		goto out;
	}
	s->psize = ms.ms_psize;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto out;
	if ((rc = mdb_dbi_open(txn, "streams", MDB_CREATE, &s->streams)) ||
	    (rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &s->ids)) ||
	    (rc = mdb_dbi_open(txn, "producers", MDB_CREATE,
	    &s->producers)) ||
	    (rc = mdb_dbi_open(txn, "subs", MDB_CREATE, &s->subs)) ||
	    (rc = mdb_dbi_open(txn, "sublinks", MDB_CREATE, &s->sublinks)) ||
	    (rc = mdb_dbi_open(txn, "secrets", MDB_CREATE, &s->secrets)) ||
	    (rc = mdb_dbi_open(txn, "times", MDB_CREATE, &s->times)) ||
	    (rc = mdb_dbi_open(txn, "journal", MDB_CREATE, &s->journal))) {
		e = ds_mdb_err(__func__, "mdb_dbi_open", rc);
		mdb_txn_abort(txn);
		goto out;
	}
	if ((e = ds_txn_commit_sync(s, txn)) != DS_OK)
		goto out;
	s->sync_flush = ds_seg_sync_flush(s);
	if (ds_lanes_open(s, cfg->dir, cfg->pool) == -1) {
		e = DS_ENOMEM;
		goto out;
	}
	/* Segment pages a machine's crash lost, before anyone reads them. */
	if ((e = ds_journal_replay(s)) != DS_OK)
		goto out;
	if (cfg->pool && ds_journal_start(s) == -1) {
		ds_log("checkpoint thread: %s", strerror(errno));
		e = DS_ENOMEM;
		goto out;
	}
	*out = s;
	return DS_OK;
out:
	ds_store_close(s);
	return e;
}

void
ds_store_close(struct ds_store *s)
{
	if (s == NULL)
		return;
	ds_journal_stop(s);
	ds_lanes_close(s);
	if (s->env) {
		rd_forget(s);
		mdb_env_close(s->env);
	}
	if (s->segdirfd != -1)
		close(s->segdirfd);
	if (s->flushfd != -1)
		close(s->flushfd);
	if (s->ckfd != -1)
		close(s->ckfd);
	pthread_mutex_destroy(&s->aq_mu);
	pthread_mutex_destroy(&s->ck_mu);
	pthread_mutex_destroy(&s->flush_mu);
	pthread_mutex_destroy(&s->cq_mu);
	free(s->segdir);
	free(s);
}
