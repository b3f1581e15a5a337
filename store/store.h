/*
 * store.h: the durable stream store. No HTTP and no FastCGI in here.
 *
 * A store is a directory holding one LMDB environment (meta/: stream
 * records, producer state, id index) and one segment file per stream
 * (segments/xx/<id>.seg) with the stream's own bytes. Any number of
 * processes and threads may open the same directory at once.
 *
 * Positions are logical byte positions in a stream's offset space. A stream
 * owns the positions [base, tail); for a plain stream base is 0. A fork's
 * positions below base are read from the stream it was forked from, and
 * below that one's base from its source, and so on (PROTOCOL 4.2; see
 * ds_store_create()).
 *
 * Durability contract: when ds_store_create() or ds_store_append() returns
 * DS_OK, the bytes have been fdatasync'ed and the metadata (tail, closed
 * flag, Stream-Seq, producer state) is committed and synced, in that order.
 * Data and producer state land together: a crash before the metadata commit
 * leaves bytes past the committed tail, which readers never see and the next
 * append to that stream or ds_store_recover() truncates. Opening a store
 * recovers nothing: run ds_store_recover() once at start-up for that.
 *
 * All functions are thread-safe. Strings passed in are borrowed for the
 * call only. Every function but ds_strerror() and ds_store_close() returns
 * an enum ds_err.
 */
#ifndef DS_STORE_H
#define DS_STORE_H

#include <stddef.h>
#include <stdint.h>

#define DS_EXPORT __attribute__((visibility("default")))

enum ds_err {
	DS_OK = 0,
	DS_ENOTFOUND,		/* no such stream (or it expired) */
	DS_EGONE,		/* soft-deleted: kept only for its forks */
	DS_EEXIST,		/* create: a stream is already there */
	DS_ECLOSED,		/* append: the stream is closed */
	DS_ECTYPE,		/* append: content type differs */
	DS_ESEQ,		/* append: Stream-Seq not above the last one */
	DS_EPRODUCER_STALE,	/* append: epoch below the producer's */
	DS_EPRODUCER_GAP,	/* append: seq skips ahead */
	DS_EPRODUCER_BADSEQ,	/* append: new epoch must start at seq 0 */
	DS_EOFFSET,		/* read: offset beyond the tail or not on a
				   message boundary */
	DS_ETOOBIG,		/* a key or value exceeds a store limit */
	DS_EFULL,		/* the metadata map is full */
	DS_EIO,			/* a system call failed (logged) */
	DS_ENOMEM,
	DS_ECORRUPT,		/* a record could not be decoded (logged) */
	DS_EREPLACED,		/* the stream the caller checked was deleted
				   and the path now names another one */
	DS_EDEPTH,		/* create: the fork chain would be deeper
				   than DS_CHAIN_MAX levels */
	DS_ENOSPC,		/* the file system is full: nothing stored */
	DS_ESOURCE_GONE		/* create: the fork's source is soft-deleted
				   (DS_EGONE is for the path itself) */
};

DS_EXPORT const char *ds_strerror(enum ds_err);

/* Limits that keep every key under LMDB's 511 bytes. */
#define DS_PATH_MAX	480	/* stream path bytes */
#define DS_CTYPE_MAX	255	/* content type bytes */
#define DS_SEQ_MAX	255	/* Stream-Seq bytes */
#define DS_PRODUCER_MAX	255	/* Producer-Id bytes */

/* Stream flags. */
#define DS_F_CLOSED	0x01u	/* no more appends (PROTOCOL 4.1) */
#define DS_F_TTL	0x02u	/* sliding TTL in ttl_s */
#define DS_F_EXPIRES	0x04u	/* absolute expiry in expires_ms */
#define DS_F_MSG	0x08u	/* message framing: each record ends in '\n'
				   (JSON mode); reads cut on record ends */
#define DS_F_DELETED	0x10u	/* soft-deleted */

/* A snapshot of one stream's metadata, copied out of the store. */
struct ds_stream_info {
	uint64_t	id;		/* internal id, never reused */
	uint64_t	base;		/* first position in our own segment */
	uint64_t	tail;		/* committed tail position */
	uint64_t	ttl_s;		/* with DS_F_TTL */
	int64_t		expires_ms;	/* with DS_F_EXPIRES, ms since epoch */
	int64_t		access_ms;	/* last read or write, ms since epoch */
	uint32_t	flags;		/* DS_F_* */
	uint64_t	src_id;		/* fork: the source's id, else 0 */
	char		ctype[DS_CTYPE_MAX + 1]; /* as given at creation */
};

/*
 * Levels of the deepest fork chain: a plain stream is one level, so a
 * stream can be forked, and its forks forked again, DS_CHAIN_MAX - 1 deep.
 * Creating a deeper fork answers DS_EDEPTH.
 */
#define DS_CHAIN_MAX	32

struct ds_store_cfg {
	const char	*dir;		/* data directory */
	size_t		 map_size;	/* LMDB map size; 0: 8 GiB */
	unsigned int	 max_readers;	/* LMDB reader slots; 0: 4096 */
};

struct ds_store;

/*
 * Opens (creating if needed) the store in cfg->dir. Clears reader slots
 * left by dead processes and allocates the LMDB lock file's blocks while
 * there is room (DS_ENOSPC when not even the first ones fit). Checks and
 * repairs no stream: that is ds_store_recover()'s. On success *out owns
 * the store until ds_store_close(), which must come after every thread is
 * done with it.
 */
DS_EXPORT enum ds_err ds_store_open(const struct ds_store_cfg *cfg,
	    struct ds_store **out);
DS_EXPORT void ds_store_close(struct ds_store *);

/*
 * Start-up recovery, run once before a pool starts: truncates bytes past
 * each stream's committed tail and removes segment files that no record
 * names (left by a crash between a delete's commit and its unlink, or a
 * create that never committed) once they are older than min_age_s.
 * *truncated and *removed count what it did (either may be NULL).
 */
DS_EXPORT enum ds_err ds_store_recover(struct ds_store *, unsigned min_age_s,
	    unsigned *truncated, unsigned *removed);

/*
 * Checks the store's invariants: every record decodes and has its id entry
 * and a segment file holding all its committed bytes; a message stream's
 * bytes are whole records, each accepted by msg_ok (when not NULL: the
 * HTTP side passes its JSON validator); every fork's source exists and
 * its chain is at most DS_CHAIN_MAX levels deep; every stream's reference
 * count equals the number of forks naming it; soft-deleted streams have
 * forks. Each problem is logged; *problems counts them and *streams counts
 * the records seen. It reads every message stream whole.
 */
DS_EXPORT enum ds_err ds_store_verify(struct ds_store *,
	    int (*msg_ok)(const char *rec, size_t len), unsigned *streams,
	    unsigned *problems);

/*
 * Calls fn for every stream path in the store (soft-deleted ones included),
 * in path order, from one consistent snapshot. Stops early when fn returns
 * nonzero.
 */
DS_EXPORT enum ds_err ds_store_foreach(struct ds_store *,
	    int (*fn)(const char *path, const struct ds_stream_info *,
	    void *arg), void *arg);

/*
 * Reads a stream's metadata. Expired streams (PROTOCOL 5.1 TTL/Expires-At)
 * are deleted and answer DS_ENOTFOUND, or DS_EGONE when forks still read
 * them (they are soft-deleted, as is a deleted stream with forks). Does
 * not renew the TTL (HEAD).
 */
DS_EXPORT enum ds_err ds_store_stat(struct ds_store *, const char *path,
	    int64_t now_ms, struct ds_stream_info *out);

struct ds_create {
	const char	*ctype;		/* content type; NULL: the source's
					   for a fork, else octet-stream */
	uint32_t	 flags;		/* DS_F_CLOSED, DS_F_TTL, DS_F_EXPIRES,
					   DS_F_MSG */
	uint64_t	 ttl_s;
	int64_t		 expires_ms;
	const void	*body;		/* initial bytes (already framed) */
	size_t		 len;
	/* Forks (PROTOCOL 4.2): */
	const char	*src_path;	/* Stream-Forked-From, or NULL */
	uint64_t	 src_want;	/* the source's id as the caller saw
					   it (0: whichever is at src_path) */
	int		 has_fork_at;	/* Stream-Fork-Offset given */
	uint64_t	 fork_at;	/* ...its position */
	uint64_t	 sub;		/* Stream-Fork-Sub-Offset (0: none) */
	/* Filled in for forks by ds_store_create(): */
	uint64_t	 src_id;	/* the source's id */
	uint64_t	 base;		/* where the fork's own data starts */
};

/*
 * Creates the stream at path. DS_OK: created, *out describes it. DS_EEXIST:
 * a live stream is already there, *out describes it so the caller can tell
 * an idempotent re-create from a conflict (PROTOCOL 5.1). DS_EGONE: a
 * soft-deleted stream holds the path (or an expired one that forks still
 * read).
 *
 * With src_path the stream is a fork: it reads as the source's data up to
 * base, then its own. The source must exist (DS_ENOTFOUND) and not be
 * soft-deleted or expired while forks read it (DS_ESOURCE_GONE); the
 * fork point must lie within the source and, for message streams, on a
 * record end (DS_EOFFSET). For a fork, req is completed with what the fork
 * inherits (message framing, TTL or Expires-At when it asks for neither,
 * per the PROTOCOL 4.2 table) and with src_id and base, so a caller
 * comparing against an existing stream compares like with like; a NULL
 * ctype stays NULL (the created stream's is in *out). With src_want set,
 * a source that is no longer that stream answers DS_EREPLACED: the caller
 * framed the body by the source it checked and must check again.
 * DS_EDEPTH: the source is already DS_CHAIN_MAX levels deep.
 * Copying nothing, a fork pins its source chain by reference count.
 */
DS_EXPORT enum ds_err ds_store_create(struct ds_store *, const char *path,
	    struct ds_create *req, int64_t now_ms,
	    struct ds_stream_info *out);

struct ds_producer {
	const char	*id;		/* Producer-Id, not NUL-terminated */
	size_t		 idlen;
	uint64_t	 epoch;		/* Producer-Epoch */
	uint64_t	 seq;		/* Producer-Seq */
};

struct ds_append {
	uint64_t	 id;		/* the stream the caller checked and
					   framed the body for (0: whichever
					   is at path) */
	const void	*body;		/* bytes to append (already framed) */
	size_t		 len;		/* 0: close-only */
	int		 close;		/* Stream-Closed: true */
	int		 ctype_ok;	/* caller found the content type equal */
	const char	*seq;		/* Stream-Seq or NULL */
	size_t		 seqlen;
	const struct ds_producer *producer; /* or NULL */
};

struct ds_append_res {
	uint64_t	id;		/* the stream appended to */
	uint64_t	tail;		/* tail after the call */
	int		closed;		/* stream closed after the call */
	int		duplicate;	/* producer retry: nothing written */
	uint64_t	epoch;		/* producer: current epoch */
	uint64_t	seq;		/* producer: highest accepted seq, or
					   the expected one on DS_EPRODUCER_GAP */
};

/*
 * Appends to the stream at path (PROTOCOL 5.2, 5.2.1, 5.3). Checks, in
 * order: stale producer epoch, closed (a retry of the closing producer
 * request is a duplicate), content type, producer epoch/seq, Stream-Seq.
 * Appends of one stream are serialised; appends of different streams run
 * in parallel and share syncs. *res is filled on DS_OK and, where it
 * carries information, on errors (tail for DS_ECLOSED, epoch for
 * DS_EPRODUCER_STALE, expected seq for DS_EPRODUCER_GAP).
 *
 * With req->id set, the append lands only in that stream: if the path was
 * deleted and created again since the caller looked (and framed the body
 * by the old stream's type), it answers DS_EREPLACED, storing nothing; a
 * path with no stream at all answers DS_ENOTFOUND, as if the append came
 * after the DELETE. The check is made under the segment lock and again in
 * the committing transaction.
 */
DS_EXPORT enum ds_err ds_store_append(struct ds_store *, const char *path,
	    const struct ds_append *req, int64_t now_ms,
	    struct ds_append_res *res);

#define DS_POS_NOW UINT64_MAX	/* ds_store_read(): start at the tail */

/*
 * Reads up to max bytes from position from (DS_POS_NOW: the tail). With
 * DS_F_MSG the chunk ends on a record end (a record longer than max is
 * returned whole). *info is the snapshot the read used; *data (malloc'd,
 * caller frees; NULL when *len is 0) holds [from, from + *len).
 * DS_EOFFSET: from is past the tail or inside a record. Renews a sliding
 * TTL (a read counts as access, PROTOCOL 5.1).
 */
DS_EXPORT enum ds_err ds_store_read(struct ds_store *, const char *path,
	    uint64_t from, size_t max, int64_t now_ms,
	    struct ds_stream_info *info, char **data, size_t *len);

/* Renews the sliding TTL of the stream (no-op without DS_F_TTL). */
DS_EXPORT enum ds_err ds_store_touch(struct ds_store *, const char *path,
	    int64_t now_ms);

/*
 * Deletes the stream (PROTOCOL 5.4, 4.2). A stream that live forks still
 * read from is soft-deleted: its path answers DS_EGONE and cannot be reused,
 * its data stays. Deleting the last fork of a soft-deleted stream removes
 * that stream too, and so on up the chain, in the same transaction. An
 * expired stream is dropped all the same but answers DS_ENOTFOUND; a
 * soft-deleted one answers DS_EGONE.
 */
DS_EXPORT enum ds_err ds_store_delete(struct ds_store *, const char *path);

/*
 * Counters the store keeps for metrics, in memory the caller provides (a
 * shared mapping, say, that several processes count into). Every field only
 * grows; the store adds to them with relaxed atomic operations
 * (__atomic_fetch_add), so readers load them the same way. Histogram
 * buckets are not cumulative: *_le[i] counts observations above bound i-1
 * and at most bound i; the last bucket takes everything above.
 */
#define DS_SYNC_DATA	0	/* fdatasync of a segment after an append */
#define DS_SYNC_META	1	/* sync of the LMDB environment */
#define DS_SYNC_KINDS	2
#define DS_FSYNC_BOUNDS_US 100, 250, 500, 1000, 2500, 5000, 10000, 25000, \
	50000, 100000, 250000, 1000000	/* fsync latency bounds, in us */
#define DS_FSYNC_BUCKETS 13	/* the bounds above, then +Inf */
#define DS_BATCH_BOUNDS	1, 2, 4, 8, 16, 32	/* appends in a batch */
#define DS_BATCH_BUCKETS 7	/* the bounds above, then +Inf */

struct ds_store_stats {
	uint64_t	appends;	/* appends stored (retries excluded) */
	uint64_t	bytes_appended;	/* their bytes, as stored */
	uint64_t	batches;	/* batches written and committed */
	uint64_t	batch_le[DS_BATCH_BUCKETS]; /* batches by appends */
	uint64_t	creates;	/* streams and forks created */
	uint64_t	deletes;	/* streams deleted by request */
	uint64_t	expiries;	/* streams dropped at their TTL or
					   Expires-At */
	uint64_t	syncs[DS_SYNC_KINDS];	/* fsyncs by DS_SYNC_* */
	uint64_t	sync_us[DS_SYNC_KINDS];	/* their time, in us */
	uint64_t	sync_le[DS_SYNC_KINDS][DS_FSYNC_BUCKETS];
};

/*
 * Makes every store of this process count into *st from now on (NULL:
 * stop counting). Call it before the threads that use the store start.
 */
DS_EXPORT void ds_store_stats_attach(struct ds_store_stats *st);

/*
 * The LMDB map: its size and the bytes of it in use (pages up to the last
 * one used, free pages inside that range included).
 */
DS_EXPORT enum ds_err ds_store_space(struct ds_store *, uint64_t *map_bytes,
	    uint64_t *used_bytes);

/*
 * Is the store in dir open in another process (a running server)? Tests
 * the lock that LMDB holds on meta/lock.mdb while a process has the
 * environment open, without opening it. DS_OK with *pid the holder's
 * process id, or 0 when none holds it (or there is no store yet).
 */
DS_EXPORT enum ds_err ds_store_in_use(const char *dir, long *pid);

#endif /* DS_STORE_H */
