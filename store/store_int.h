/*
 * store_int.h: what the store's files share and nobody else sees, indexed
 * file by file: each heading names a file, the store.h functions it
 * defines, then what it shares with the others. store.h is the only way in
 * from outside.
 *
 * Error handling: a function that acquires resources (a transaction, a
 * descriptor, a buffer) leaves through one cleanup label, "out", that
 * releases whatever was taken.
 */
#ifndef DS_STORE_INT_H
#define DS_STORE_INT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>

#include <lmdb.h>
#include <pthread.h>

#include "store/store.h"

struct ds_store {
	MDB_env		*env;
	MDB_dbi		 streams;	/* path -> record */
	MDB_dbi		 ids;		/* id (8 bytes) -> path */
	MDB_dbi		 producers;	/* id (8 bytes) + producer id -> state */
	MDB_dbi		 subs;		/* subscription id -> record (subs.c) */
	MDB_dbi		 sublinks;	/* sid (8 bytes BE) + path -> link */
	MDB_dbi		 secrets;	/* name -> bytes; "sid" -> last sid */
	MDB_dbi		 times;		/* id (8) + position (8, big-endian)
					   -> ms: append boundaries (retain.c) */
	MDB_dbi		 journal;	/* txnid (8, big-endian) + id (8) +
					   position (8, big-endian) -> bytes
					   (journal.c) */
	char		*segdir;	/* <dir>/segments */
	int		 segdirfd;	/* open directory, for fsync */
	unsigned	 psize;		/* LMDB page size */
	uint64_t	 reserved;	/* data.mdb pages known allocated */
	int		 no_reserve;	/* fallocate() unsupported here */
	int		 range_sync;	/* room writes (ds_seg_flush_open()) */
	int		 flushfd;	/* ...flushed with this file */
	int		 flush_plain;	/* by an fdatasync() alone */
	int		 seg_nojournal;	/* their ext4 has no journal */
	pthread_mutex_t	 flush_mu;	/* ds_seg_flush(), without a lane file */
	int		 sync_flush;	/* an LMDB sync flushes them too */
	unsigned	 flush_len;	/* else its length, 0 or 1, toggled */
	int64_t		 flush_changed;	/* when it last was (ds_mono_us()) */
	pthread_mutex_t	 aq_mu;		/* guards aq */
	pthread_mutex_t	 cq_mu;		/* guards cq* */
	struct ds_aq	*aq;		/* appends queued by stream (append.c) */
	struct ds_lanes	*lanes;		/* ...and between processes (lane.c) */
	struct ds_commit *cq, **cq_tailp; /* changes waiting (commit.c) */
	int		 cq_busy;	/* one of them is committing */
	_Atomic uint64_t durable_txn;	/* synced up to here (retain.c) */
	size_t		 journal_max;	/* DS_JOURNAL_MAX (tests: 0, none) */
	size_t		 ckpt_max;	/* DS_CKPT_MAX (tests: fewer) */
	int		 ckfd;		/* the meta directory: its flock()
					   orders the checkpoints */
	pthread_mutex_t	 ck_mu;		/* guards ck_stop */
	pthread_cond_t	 ck_cv;
	pthread_t	 ck_thread;	/* a server process's checkpoints */
	int		 ck_running;
	int		 ck_stop;
	int64_t		 ck_last_us;	/* ...the last began (no lane file) */
};

/*
 * Pages of the LMDB data file kept allocated past its last used page, so
 * that a delete on a full disk can commit (see ds_meta_reserve()).
 */
#define DS_META_RESERVE	256

/*
 * The decoded stream record. The fixed part is stored as-is in LMDB (the
 * environment is not portable across architectures anyway), followed by the
 * content type, the last Stream-Seq and the id of the producer whose request
 * closed the stream.
 */
struct ds_rec {
	struct ds_stream_info info;	/* info.src_id: forked from */
	uint64_t	refs;		/* live forks of this stream */
	int64_t		created_ms;
	uint64_t	closer_epoch;	/* closing producer request */
	uint64_t	closer_seq;
	size_t		seqlen;
	size_t		closerlen;	/* 0: not closed by a producer */
	char		seq[DS_SEQ_MAX + 1];
	char		closer[DS_PRODUCER_MAX + 1];
	/* Retention (retain.c); all 0 in a stream never trimmed. */
	uint64_t	first;		/* own data below it is trimmed */
	uint64_t	prev_first;	/* first before the last trim */
	int64_t		first_ms;	/* when the last trim was committed */
	uint64_t	first_txn;	/* ...and in which transaction */
	uint64_t	idx_off;	/* the last index point... */
	int64_t		idx_ms;		/* ...and its time */
};

/* Producer state, stored as-is. */
struct ds_pstate {
	uint64_t	epoch;
	uint64_t	seq;		/* last accepted seq in epoch */
	int64_t		access_ms;
};

/*
 * A fork chain as a read sees it: level 0 is the stream's own range
 * [base, tail), level 1 its source's range up to the fork point, and so on
 * down to a plain stream starting at 0. Source data below a fork point
 * never changes and is never removed while the fork exists, so the chain
 * read in one transaction stays valid after it.
 */
struct ds_level {
	uint64_t	id;
	uint64_t	base;		/* first position in this segment */
	uint64_t	end;		/* positions this level serves end here */
	uint64_t	first;		/* retained from here (retention) */
};

struct ds_chain {
	struct ds_level	lv[DS_CHAIN_MAX];
	int		n;
};

/* env.c: ds_strerror(), ds_store_open(), ds_store_close() */
/* Logs where a failure happens: function, message, errno text. */
#define ds_log(...) ds_logf(__func__, __VA_ARGS__)
void	ds_logf(const char *fn, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
enum ds_err ds_sys_err(int err);
enum ds_err ds_mdb_err(const char *fn, const char *what, int rc);
enum ds_err ds_meta_reserve(struct ds_store *);
enum ds_err ds_txn_begin(struct ds_store *, unsigned flags, MDB_txn **);
enum ds_err ds_txn_commit_sync(struct ds_store *, MDB_txn *);
enum ds_err ds_rd_begin(struct ds_store *, MDB_txn **);
void	ds_rd_end(MDB_txn *);

/* commit.c */
/*
 * A change for the shared commit: apply() puts it into txn (a nested
 * transaction of its own) and returns DS_OK, or an error with the change
 * undone. ds_commit() returns when it is committed and synced, or not:
 * e is the result, committed says whether it is in LMDB whatever e says
 * (a commit whose sync failed). visible(), if set, is called once the
 * change is committed, before the sync: a writer may release a lock there
 * that orders its changes, since whatever follows commits (and syncs)
 * after it.
 */
struct ds_commit {
	enum ds_err	(*apply)(struct ds_store *, MDB_txn *, void *arg);
	void		(*visible)(void *arg);
	void		*arg;
	int		 flush;		/* data written in room (batch.c)... */
	uint64_t	 flush_mark;	/* ...before this ds_lanes_flush_mark() */
	enum ds_err	 e;
	int		 committed;
	uint32_t	 state;		/* DS_C_*, a futex its owner waits on */
	struct ds_commit *next;
};
enum { DS_C_WAIT, DS_C_LEAD, DS_C_DONE };
void	ds_commit(struct ds_store *, struct ds_commit *);

/* record.c */
#define DS_REC_BUFSZ 1024
int	ds_rec_decode(const MDB_val *, struct ds_rec *);
size_t	ds_rec_encode(const struct ds_rec *, char *buf, size_t bufsz);
enum ds_err ds_rec_get(struct ds_store *, MDB_txn *, const char *path,
	    struct ds_rec *);
enum ds_err ds_rec_find_id(struct ds_store *, MDB_txn *, uint64_t id,
	    char *path, struct ds_rec *);
enum ds_err ds_rec_get_id(struct ds_store *, MDB_txn *, uint64_t id,
	    char *path, struct ds_rec *);
enum ds_err ds_rec_put(struct ds_store *, MDB_txn *, const char *path,
	    const struct ds_rec *);
enum ds_err ds_rec_remove(struct ds_store *, MDB_txn *, const char *path,
	    uint64_t id);
enum ds_err ds_del_range(MDB_txn *, MDB_dbi, const void *prefix,
	    size_t plen, const void *end, size_t elen);
enum ds_err ds_del_prefix(MDB_txn *, MDB_dbi, uint64_t id,
	    const uint64_t *below);
size_t	ds_producer_key(uint64_t id, const char *pid, size_t pidlen,
	    char *buf);
void	ds_be64_put(void *p, uint64_t v);
uint64_t ds_be64_get(const void *p);

/* segment.c */
int	ds_seg_path(const struct ds_store *, uint64_t id, char *buf, size_t sz);
int	ds_seg_create(struct ds_store *, uint64_t id, const void *body,
	    size_t len);
int	ds_seg_open(const struct ds_store *, uint64_t id, int flags);
int	ds_seg_open_new(struct ds_store *, uint64_t id, int *created);
int	ds_seg_sync_dir(const struct ds_store *, uint64_t id);
int	ds_seg_lock(int fd);
int	ds_seg_write(int fd, uint64_t at, const void *buf, size_t len);
int	ds_seg_write_out(int fd, uint64_t at, uint64_t len);
int	ds_seg_read(int fd, uint64_t at, void *buf, size_t len);
int	ds_seg_unlink(const struct ds_store *, uint64_t id);
#define DS_SEG_ROOM_STEP	((uint64_t)65536)
uint64_t ds_seg_room(uint64_t own);
int	ds_seg_zero(int fd, uint64_t at, uint64_t len);
int	ds_seg_flush_open(struct ds_store *);
int	ds_seg_sync_flush(struct ds_store *);
int	ds_seg_flush(struct ds_store *);

/* retain.c: ds_store_trim(), ds_store_punch() */
uint64_t ds_own_first(const struct ds_rec *);
enum ds_err ds_index_point(struct ds_store *, MDB_txn *, struct ds_rec *,
	    int64_t now);
enum ds_err ds_punch_all(struct ds_store *, const struct ds_rec *);

/* chain.c */
uint64_t ds_chain_first(const struct ds_chain *);
enum ds_err ds_chain_build(struct ds_store *, MDB_txn *rtxn,
	    const struct ds_rec *, uint64_t end, struct ds_chain *);
enum ds_err ds_chain_boundary(struct ds_store *, const struct ds_chain *,
	    uint64_t p);
enum ds_err ds_resolve_fork_point(struct ds_store *, const struct ds_chain *,
	    uint64_t tail, int msg, uint64_t at, uint64_t sub, uint64_t *out);
enum ds_err ds_chain_spans(struct ds_store *, const struct ds_chain *,
	    uint64_t from, uint64_t end, struct ds_spans *);
enum ds_err ds_read_stitched(struct ds_store *, const struct ds_chain *,
	    uint64_t from, uint64_t tail, size_t max, int msg, char **data,
	    size_t *len);

/* lifecycle.c: ds_store_create(), ds_store_delete() */
int	ds_expired(const struct ds_stream_info *, int64_t now);
enum ds_err ds_lookup(struct ds_store *, const char *path, int64_t now,
	    struct ds_rec *);

/* append.c: ds_store_append() */

/* batch.c */
#define BATCH_MAX	64		/* appends in one batch, at most */
#define BATCH_BYTES	(16u << 20)	/* bytes in one batch, past the first */

/* An append waiting in its stream's queue, then in a batch. */
struct pending {
	const struct ds_append	*req;
	int64_t			 now;
	struct ds_append_res	*res;
	enum ds_err		 e;
	int			 done;
	int			 validated;
	int			 accepted;	/* validated, to be written */
	int			 provisional;	/* validated against state of
						   this batch not yet
						   committed */
	pthread_cond_t		 cv;		/* its owner waits here */
	struct pending		*next;
};

void	ds_batch_run(struct ds_store *, const char *path, uint64_t id,
	    struct pending *batch);

/*
 * lane.c: one stream's small appends batched across processes. Without the
 * lane file (it could not be made) every call answers 0.
 */
int	ds_lanes_open(struct ds_store *, const char *dir, int pool);
void	ds_lanes_close(struct ds_store *);
/* Returns 0 when the append must go the process's own way (append.c). */
int	ds_lane_append(struct ds_store *, const char *path, uint64_t id,
	    const struct ds_append *, int64_t now, struct ds_append_res *,
	    enum ds_err *);
/* ds_seg_flush() and mdb_env_sync() that another process's may serve. */
uint64_t ds_lanes_flush_mark(struct ds_store *);
#define DS_FLUSH_NOMARK	UINT64_MAX	/* written before the lane file was */
int	ds_lanes_flush(struct ds_store *, uint64_t mark);
int	ds_lanes_env_sync(struct ds_store *, uint64_t txnid);
int	ds_lanes_ckpt_due(struct ds_store *, int64_t every_us);
/*
 * A futex word, in memory shared between processes (shared) or not: wait
 * while *w is v (for at most ms milliseconds when ms > 0; a wake, a signal
 * or a spurious return ends it too, so the caller loops), wake one waiter.
 */
void	ds_futex_wait(uint32_t *w, uint32_t v, int ms, int shared);
void	ds_futex_wake(uint32_t *w, int shared);

/*
 * journal.c: ds_store_checkpoint(). Batches of at most DS_JOURNAL_MAX
 * bytes written into their segment's room commit a copy of their bytes
 * (ds_journal_put(), in the batch's transaction) instead of syncing the
 * segment, while the file system has DS_JOURNAL_FREE bytes free and the
 * journal fewer than DS_JOURNAL_CAP entries.
 */
#define DS_JOURNAL_MAX	((size_t)16384)
#define DS_JOURNAL_FREE	((uint64_t)64 << 20)	/* ...while this much is free */
#define DS_JOURNAL_CAP	65536			/* ...and it has fewer entries */
#define DS_CKPT_MAX	8192			/* entries a checkpoint pass takes */
enum ds_err ds_journal_put(struct ds_store *, MDB_txn *, uint64_t id,
	    uint64_t at, const void *data, size_t len);
enum ds_err ds_journal_replay(struct ds_store *);
int	ds_journal_start(struct ds_store *);
void	ds_journal_stop(struct ds_store *);

/* subs.c: ds_sub_create(), ds_sub_get(), ds_sub_delete(), ds_sub_foreach(),
 * ds_store_secret() */
/* A link as stored. */
struct ds_link_rec {
	uint64_t	id;		/* the stream's id when acked was set */
	uint64_t	acked;
	uint32_t	kind;		/* DS_LINK_* */
	uint32_t	pad;
};
enum ds_err ds_sub_load(struct ds_store *, MDB_txn *, const char *id,
	    struct ds_sub *);
enum ds_err ds_sub_store(struct ds_store *, MDB_txn *, const char *id,
	    const struct ds_sub *);
enum ds_err ds_sub_begin_live(struct ds_store *, const char *id,
	    MDB_txn **, struct ds_sub *);

/* sublinks.c: ds_glob_match(), ds_sub_link_add(), ds_sub_link_remove() */
enum ds_err ds_sub_links(struct ds_store *, MDB_txn *, uint64_t sid,
	    struct ds_sub_link **, size_t *);
enum ds_err ds_links_drop(struct ds_store *, MDB_txn *, uint64_t sid);
enum ds_err ds_link_at_tail(struct ds_store *, MDB_txn *, uint64_t sid,
	    const char *path, uint32_t kind);
enum ds_err ds_links_backfill(struct ds_store *, MDB_txn *,
	    const struct ds_sub *);
enum ds_err ds_sub_link_put(struct ds_store *, MDB_txn *, uint64_t sid,
	    const char *path, const struct ds_link_rec *);
int	ds_sub_pending(const struct ds_sub_link *, size_t n);
enum ds_err ds_sub_on_create(struct ds_store *, MDB_txn *, const char *path,
	    uint64_t id);
enum ds_err ds_stream_tail(struct ds_store *, MDB_txn *, const char *path,
	    uint64_t *id, uint64_t *tail);

/* subs_wake.c: ds_sub_step(), ds_sub_sent(), ds_sub_event_written(),
 * ds_sub_claim(), ds_sub_ack() */

/* read.c: ds_store_stat(), ds_store_read(), ds_store_touch() */

/* scan.c: ds_store_recover(), ds_store_verify(), ds_store_foreach() */

/* stats.c: ds_store_stats_attach(), ds_store_space(), ds_store_in_use() */
/* Each counts into the attached struct ds_store_stats, if any. */
enum ds_stat_event { DS_STAT_CREATE, DS_STAT_DELETE, DS_STAT_EXPIRE };
int	ds_stats_fdatasync(int fd);		/* fdatasync(), timed */
int	ds_stats_env_sync(MDB_env *);		/* mdb_env_sync(env, 1), timed */
void	ds_stats_batch(unsigned appends, uint64_t bytes);
void	ds_stats_count(enum ds_stat_event);
int64_t	ds_mono_us(void);			/* CLOCK_MONOTONIC, in us */

#endif /* DS_STORE_INT_H */
