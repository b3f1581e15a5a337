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
	DS_ESOURCE_GONE,	/* create: the fork's source is soft-deleted
				   (DS_EGONE is for the path itself) */
	DS_ETRIMMED,		/* read or fork: the position is below the
				   earliest retained one (retention) */
	/* Subscriptions (subs.c): */
	DS_EFENCED,		/* generation or wake id is not the current */
	DS_ECLAIMED,		/* another worker holds the lease */
	DS_ENOWORK,		/* claim: nothing is pending */
	DS_ESUBTYPE,		/* the operation is for the other type */
	DS_ESTALE_TOKEN,	/* the token names another subscription, or
				   an older one of that id */
	DS_ENOTLINKED,		/* ack: the stream is not linked */
	DS_EACKOFFSET,		/* ack: offset past the stream's tail */
	DS_ELINKS		/* the subscription has DS_SUB_LINKS_MAX
				   explicit streams already */
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

/*
 * A hash of a stream id for tables keyed by it. Ids are not uniform: their
 * low-order bits hold the time they were made in (see new_id() in
 * lifecycle.c), so "id % n" puts the streams of a year in one bucket.
 */
static inline uint32_t
ds_id_hash(uint64_t id)
{
	/* MurmurHash3's finaliser: every bit of id moves every bit out. */
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	id *= 0xc4ceb9fe1a85ec53ull;
	id ^= id >> 33;
	return (uint32_t)id;
}

/* A snapshot of one stream's metadata, copied out of the store. */
struct ds_stream_info {
	uint64_t	id;		/* internal id, never reused (see
					   ds_id_hash()) */
	uint64_t	base;		/* first position in our own segment */
	uint64_t	tail;		/* committed tail position */
	uint64_t	ttl_s;		/* with DS_F_TTL */
	int64_t		expires_ms;	/* with DS_F_EXPIRES, ms since epoch */
	int64_t		access_ms;	/* last read or write, ms since epoch */
	uint32_t	flags;		/* DS_F_* */
	uint64_t	src_id;		/* fork: the source's id, else 0 */
	uint64_t	first;		/* earliest retained position: reads
					   below it answer DS_ETRIMMED (set by
					   ds_store_stat() and ds_store_read()) */
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
	int		 pool;		/* one of a server's processes: shares
					   its syncs with the others from the
					   first commit (else from the first
					   append, so that a tool run as
					   another user leaves no file behind) */
};

struct ds_store;

/*
 * Opens (creating if needed) the store in cfg->dir. Clears reader slots
 * left by dead processes and allocates the LMDB lock file's blocks while
 * there is room (DS_ENOSPC when not even the first ones fit). Writes the
 * bytes of the journal back into their segments (store/journal.c: what a
 * machine's crash may have taken from them); checks and repairs nothing
 * else: that is ds_store_recover()'s. On success *out owns
 * the store until ds_store_close(), which must come after every thread is
 * done with it.
 */
DS_EXPORT enum ds_err ds_store_open(const struct ds_store_cfg *cfg,
	    struct ds_store **out);
DS_EXPORT void ds_store_close(struct ds_store *);

/*
 * Makes the bytes of the appends committed so far durable in their
 * segments and drops them from the journal (store/journal.c). A server's
 * processes (ds_store_cfg.pool) do it on their own every 200 ms; tools
 * and tests call it. Returns DS_OK, DS_EIO when the segments of some
 * streams could not be written and synced (their entries are kept for
 * the next), or the error that stopped it.
 */
DS_EXPORT enum ds_err ds_store_checkpoint(struct ds_store *);

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
/* The same for the paths that start with prefix. info->first is the
 * earliest retained position, as ds_store_stat() gives it. */
DS_EXPORT enum ds_err ds_store_foreach_prefix(struct ds_store *,
	    const char *prefix, int (*fn)(const char *path,
	    const struct ds_stream_info *, void *arg), void *arg);

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
	uint64_t	 fork_at;	/* ...its position (DS_POS_FIRST: the
					   source's earliest retained one) */
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
#define DS_POS_FIRST (UINT64_MAX - 1) /* ...at the earliest retained byte */

/*
 * Reads up to max bytes from position from (DS_POS_NOW: the tail,
 * DS_POS_FIRST: the earliest retained position, info->first). With
 * DS_F_MSG the chunk ends on a record end (a record longer than max is
 * returned whole). *info is the snapshot the read used; *data (malloc'd,
 * caller frees; NULL when *len is 0) holds [from, from + *len).
 * DS_EOFFSET: from is past the tail or inside a record; DS_ETRIMMED: from
 * is below info->first. Renews a sliding TTL (a read counts as access,
 * PROTOCOL 5.1).
 */
DS_EXPORT enum ds_err ds_store_read(struct ds_store *, const char *path,
	    uint64_t from, size_t max, int64_t now_ms,
	    struct ds_stream_info *info, char **data, size_t *len);

/*
 * Where a read's bytes lie: ranges of segment files, in stream order, each
 * file opened for the caller (one per fork chain level at most).
 */
struct ds_span {
	int		fd;		/* a segment, O_RDONLY */
	uint64_t	at;		/* file offset of the first byte */
	size_t		len;
};
struct ds_spans {
	struct ds_span	sp[DS_CHAIN_MAX];
	int		n;		/* 0: the bytes came as a copy */
	uint64_t	from;		/* the position of the first byte */
};

/*
 * ds_store_read() that may leave the bytes in place: when sp is not NULL,
 * the stream is a byte stream (no DS_F_MSG) and the read comes to at least
 * min bytes, *sp says where they lie and *data is NULL (*len is still the
 * length). The bytes are the stream's only while retention has not trimmed
 * past sp->from: retention may punch them out at any time after that
 * (retain.c). So a caller that sends them confirms with ds_store_recheck()
 * only after every byte it sent has left the file for good, and before it
 * ends the answer. ds_spans_close() closes the files.
 */
DS_EXPORT enum ds_err ds_store_read_spans(struct ds_store *, const char *path,
	    uint64_t from, size_t max, size_t min, int64_t now_ms,
	    struct ds_stream_info *info, char **data, size_t *len,
	    struct ds_spans *sp);
DS_EXPORT void ds_spans_close(struct ds_spans *);
/* Copies len bytes of span sp from skip bytes in. Returns 0, or -1. */
DS_EXPORT int ds_span_read(const struct ds_span *sp, size_t skip, void *buf,
	    size_t len);

/*
 * Was position from of stream id (at path) still retained just now?
 * DS_OK, DS_ETRIMMED, or DS_ENOTFOUND when path is gone or another stream.
 */
DS_EXPORT enum ds_err ds_store_recheck(struct ds_store *, const char *path,
	    int64_t now_ms, uint64_t id, uint64_t from);

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
 * Subscriptions (PROTOCOL 6, 7): durable cursors over sets of streams.
 * The store keeps each subscription's configuration, its links (stream
 * path -> acknowledged position), and its wake state (generation, current
 * wake, lease, retry schedule), and changes them only in write
 * transactions, so that any number of processes agree on who delivers a
 * wake. Validation of what a client sent is the caller's; the store checks
 * only what needs the current state (fencing, leases, tails).
 */
#define DS_SUBID_MAX	128	/* subscription id bytes */
#define DS_HOLDER_MAX	128	/* pull-wake worker name bytes */
#define DS_URL_MAX	2048	/* webhook URL, base URL bytes */
#define DS_DESC_MAX	1024	/* description bytes */
#define DS_WAKEID_LEN	24	/* "w_" and 22 characters */
#define DS_SUB_STREAMS_MAX 256	/* explicit streams in one request */
#define DS_SUB_LINKS_MAX 10000	/* explicit streams of one subscription */

enum ds_sub_type { DS_SUB_WEBHOOK = 1, DS_SUB_PULL = 2 };

/* Link kinds, a bit set: a stream may be linked both ways (PROTOCOL 6.1). */
#define DS_LINK_GLOB	 0x1u
#define DS_LINK_EXPLICIT 0x2u

/* Subscription flags. */
#define DS_SUB_F_DELETED 0x1u	/* an earlier version's tombstone: the
					   id answers 404 (deletes now remove
					   the record) */
#define DS_SUB_F_FAILED	 0x2u	/* the last delivery failed: retry due */

struct ds_sub {
	uint64_t	sid;		/* internal, never reused: tokens and
					   links name it, not the id */
	uint32_t	type;		/* enum ds_sub_type */
	uint32_t	flags;		/* DS_SUB_F_* */
	uint64_t	lease_ttl_ms;
	int64_t		created_ms;
	unsigned char	hash[32];	/* of the normalised configuration */
	/* Wake state (PROTOCOL 7.3): */
	uint64_t	generation;	/* of the last wake issued */
	char		wake_id[DS_WAKEID_LEN + 1]; /* "" : no wake */
	int64_t		lease_until;	/* ms; 0: no lease */
	char		holder[DS_HOLDER_MAX + 1]; /* pull-wake: claimed by */
	uint64_t	sender;		/* webhook: process sending it */
	int64_t		send_until;	/* ...until then, at most */
	uint32_t	attempts;	/* failed deliveries in a row */
	int64_t		next_attempt_ms; /* no wake before then */
	uint32_t	event_due;	/* pull-wake: wake event not written */
	/* Configuration: */
	char		pattern[DS_PATH_MAX + 1];	/* "" : none */
	char		url[DS_URL_MAX + 1];		/* webhook */
	char		wake_stream[DS_PATH_MAX + 1];	/* pull-wake */
	char		description[DS_DESC_MAX + 1];	/* "" : none */
	int		has_description;
	char		base_url[DS_URL_MAX + 1];	/* stream root URL for
							   callback_url */
};

/* A link as read: the stream's current tail comes with it. */
struct ds_sub_link {
	char		path[DS_PATH_MAX + 1];
	uint32_t	kind;		/* DS_LINK_* */
	uint64_t	acked;		/* position acknowledged */
	uint64_t	tail;		/* the stream's tail (0: no stream) */
};

/* An acknowledgement: stream path and position. */
struct ds_sub_ack {
	const char	*path;
	uint64_t	 pos;
};

/*
 * Does path match the glob (PROTOCOL 6.2)? "*" matches one path segment,
 * "**" zero or more, any other byte itself.
 */
DS_EXPORT int ds_glob_match(const char *glob, const char *path);

/*
 * Creates subscription id (sub: configuration, hash, lease, base_url,
 * created_ms; the rest is ignored) with explicit links to streams[0..n)
 * and glob links to every existing stream the pattern matches, each at
 * the stream's current tail (PROTOCOL 6.2). DS_OK: created, *out is it.
 * DS_EEXIST: a live subscription has that id, *out is it (the caller
 * compares hashes). A tombstone is replaced.
 */
DS_EXPORT enum ds_err ds_sub_create(struct ds_store *, const char *id,
	    const struct ds_sub *sub, const char *const *streams, size_t n,
	    struct ds_sub *out);

/*
 * Reads subscription id with its links (*links malloc'd, *nlinks of
 * them, in path order; the caller frees; links may be NULL to skip them).
 * DS_ENOTFOUND for none or a tombstone.
 */
DS_EXPORT enum ds_err ds_sub_get(struct ds_store *, const char *id,
	    struct ds_sub *out, struct ds_sub_link **links, size_t *nlinks);

/* Tombstones subscription id (PROTOCOL 6.3): links and wake go. */
DS_EXPORT enum ds_err ds_sub_delete(struct ds_store *, const char *id);

/*
 * Explicit links (PROTOCOL 6.4): adds paths[0..n) at their tails (a link
 * already there keeps its position), or removes the explicit link of one
 * path (a glob link stays while the pattern matches). Both idempotent.
 */
DS_EXPORT enum ds_err ds_sub_link_add(struct ds_store *, const char *id,
	    const char *const *paths, size_t n);
DS_EXPORT enum ds_err ds_sub_link_remove(struct ds_store *, const char *id,
	    const char *path);

/*
 * Calls fn for every live subscription id (a snapshot), stopping when fn
 * returns nonzero.
 */
DS_EXPORT enum ds_err ds_sub_foreach(struct ds_store *,
	    int (*fn)(const char *id, const struct ds_sub *, void *), void *);

/*
 * The delivery step (PROTOCOL 7, 7.3), run by any process at any time:
 * clears a wake whose lease (and send window) ran out, then, when the
 * subscription is idle, has pending work and no retry is due later,
 * issues a new wake: generation + 1, a fresh wake_id. A webhook wake is
 * the caller's to send (sender = me, lease and send window from now,
 * send_ms long); a pull-wake wake has its event due. DS_OK with *issued
 * set: *out and *links (malloc'd, caller frees) are the wake's snapshot.
 * *issued 0: nothing to do now; *due_ms says when to look again (0:
 * only after a change).
 */
DS_EXPORT enum ds_err ds_sub_step(struct ds_store *, const char *id,
	    int64_t now_ms, uint64_t me, int64_t send_ms, int *issued,
	    int64_t *due_ms, struct ds_sub *out, struct ds_sub_link **links,
	    size_t *nlinks);

/*
 * What became of a webhook wake the caller sent (generation gen):
 * outcome 0 failed (retry after retry_ms, status failed), 1 answered
 * (the lease runs lease_ttl_ms from now), 2 answered done (the snapshot's
 * tails links[0..n) are acked and the wake ends). Nothing changes if the
 * wake is no longer current. *pending: work is left for another wake.
 */
DS_EXPORT enum ds_err ds_sub_sent(struct ds_store *, const char *id,
	    uint64_t gen, const char *wake_id, int outcome, int64_t retry_ms,
	    const struct ds_sub_link *links, size_t n, int64_t now_ms,
	    int *pending);

/* Pull-wake: the wake event of generation gen is written. */
DS_EXPORT enum ds_err ds_sub_event_written(struct ds_store *, const char *id,
	    uint64_t gen);

/*
 * Pull-wake claim (PROTOCOL 7.2): a lease for worker on the current wake,
 * or on a new one when work is pending and none is out. DS_ECLAIMED:
 * *out->holder has it. DS_ENOWORK: nothing pending. DS_ESUBTYPE: not a
 * pull-wake subscription. On DS_OK *out and *links as ds_sub_get().
 */
DS_EXPORT enum ds_err ds_sub_claim(struct ds_store *, const char *id,
	    const char *worker, int64_t now_ms, struct ds_sub *out,
	    struct ds_sub_link **links, size_t *nlinks);

/*
 * Callback, ack or release of wake (gen, wake_id) of subscription id whose
 * token names sid and tgen (PROTOCOL 7.1-7.3). Checks, in order: the
 * subscription (DS_ENOTFOUND), its sid (DS_ESTALE_TOKEN), its type
 * (DS_ESUBTYPE: pull is 1 for ack/release), fencing (DS_EFENCED: token
 * and request generation and wake id must be the current wake's), then
 * every ack (DS_ENOTLINKED, DS_EACKOFFSET) before applying any. done or
 * release ends the wake; else the lease is extended. release applies no
 * acks. *pending: work is left (next_wake).
 */
struct ds_sub_fence {
	uint64_t	 sid, tgen;	/* from the token */
	uint64_t	 gen;		/* from the request */
	const char	*wake_id;
	int		 pull;		/* ack/release (1) or callback (0) */
	int		 done;
	int		 release;
};
DS_EXPORT enum ds_err ds_sub_ack(struct ds_store *, const char *id,
	    const struct ds_sub_fence *, const struct ds_sub_ack *acks,
	    size_t n, int64_t now_ms, int *pending);

/*
 * A secret the store keeps for the server (token key, signing key): the
 * stored bytes of name, or cand's, stored now, when there are none, so
 * that every process ends up with the same. *len in: buf size and cand's
 * length; out: the stored length.
 */
DS_EXPORT enum ds_err ds_store_secret(struct ds_store *, const char *name,
	    const void *cand, void *buf, size_t *len);

/*
 * Reads secret name into buf (*len in: its size; out: the length;
 * DS_ETOOBIG when it does not fit, DS_ENOTFOUND when there is none), or
 * replaces it with val (committed and synced).
 */
DS_EXPORT enum ds_err ds_store_secret_get(struct ds_store *, const char *name,
	    void *buf, size_t *len);
DS_EXPORT enum ds_err ds_store_secret_set(struct ds_store *, const char *name,
	    const void *val, size_t len);

/*
 * Retention (retain.c). A stream's data can be trimmed from its start in
 * whole append units while it goes on: positions do not change, reads
 * below the earliest retained position answer DS_ETRIMMED, and the bytes'
 * disk space is freed by punching holes in the segment. The store keeps a
 * sparse index of append boundaries and their times (a point at least
 * every DS_INDEX_BYTES bytes or DS_INDEX_MS ms of appends); a trim always
 * ends on one of these points. A fork reads its source's data as the
 * source keeps it: what the source's retention drops is gone for its
 * forks too.
 */
#define DS_INDEX_BYTES	(64 * 1024)
#define DS_INDEX_MS	1000

struct ds_retention {
	uint64_t	 max_bytes;	/* keep at most this many bytes (0: any) */
	int64_t		 max_age_ms;	/* drop data older than this (0: keep) */
	uint64_t	 before;	/* one-off: trim up to this position (0:
					   none) */
};

/*
 * Moves the earliest retained position of the stream at path as far as
 * the policy allows: to the furthest index point that the size limit, the
 * age limit or before asks for, never backwards. *first gets the earliest
 * retained position of the stream's own data after the call (a fork's
 * reads may start lower, in its source: see ds_store_stat()). Trims only
 * data of the stream's own. The commit is not synced (a pass
 * trims many streams; ds_store_punch() syncs before it punches), and the
 * freed bytes are not punched out yet.
 */
DS_EXPORT enum ds_err ds_store_trim(struct ds_store *, const char *path,
	    const struct ds_retention *, int64_t now_ms, uint64_t *first);

/*
 * Frees the disk space of the stream's trimmed bytes: all of them, except
 * after its first trim, which waits grace_ms for readers that looked
 * before it (later readers check the earliest position again after they
 * read). Idempotent; ds_store_recover() punches everything trimmed.
 */
DS_EXPORT enum ds_err ds_store_punch(struct ds_store *, const char *path,
	    int64_t now_ms, int64_t grace_ms);

/*
 * Counters the store keeps for metrics, in memory the caller provides (a
 * shared mapping, say, that several processes count into). Every field only
 * grows; the store adds to them with relaxed atomic operations
 * (__atomic_fetch_add), so readers load them the same way. Histogram
 * buckets are not cumulative: *_le[i] counts observations above bound i-1
 * and at most bound i; the last bucket takes everything above.
 */
#define DS_SYNC_DATA	0	/* a segment's fdatasync, or the shared flush */
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
