/*
 * lifecycle.c: a stream's life (PROTOCOL 5.1, 5.4, 4.2): creating streams
 * and forks, looking a stream up (an expired one is dropped on sight), and
 * deleting, where a stream that live forks still read is only
 * soft-deleted and goes with its last fork.
 */
#include <sys/random.h>

#include <stdint.h>
#include <time.h>

#include "store/store_int.h"

/* Is the stream past its sliding TTL or its Expires-At (PROTOCOL 5.1)? */
int
ds_expired(const struct ds_stream_info *i, int64_t now)
{
	if ((i->flags & DS_F_TTL) &&
	    now >= i->access_ms + (int64_t)i->ttl_s * 1000)
		return 1;
	if ((i->flags & DS_F_EXPIRES) && now >= i->expires_ms)
		return 1;
	return 0;
}

/* Segments to unlink once the transaction that dropped them commits. */
struct doomed {
	uint64_t	ids[DS_CHAIN_MAX + 1];
	int		n;
};

/*
 * Drops the stream r at path within txn (PROTOCOL 4.2 lifecycle): with live
 * forks it is only marked soft-deleted; otherwise its record goes, and its
 * source loses a reference, which may drop a soft-deleted source in turn,
 * up the chain. Refcounts, flags and records change in this one
 * transaction, so a crash leaves either all of it or none; segment files
 * are unlinked after the commit (a crash in between leaves orphans that
 * ds_store_recover() removes).
 */
static enum ds_err
drop_stream(struct ds_store *s, MDB_txn *txn, const char *path,
    struct ds_rec *r, struct doomed *d)
{
	char spath[DS_PATH_MAX + 1];
	struct ds_rec src;
	uint64_t src_id;
	enum ds_err e;

	if (r->refs > 0) {
		r->info.flags |= DS_F_DELETED;
		return ds_rec_put(s, txn, path, r);
	}
	if ((e = ds_rec_remove(s, txn, path, r->info.id)) != DS_OK)
		return e;
	d->ids[d->n++] = r->info.id;
	for (src_id = r->info.src_id; src_id != 0; src_id = src.info.src_id) {
		if ((e = ds_rec_get_id(s, txn, src_id, spath, &src)) != DS_OK)
			return e;
		if (src.refs > 0)
			src.refs--;
		if (src.refs > 0 || !(src.info.flags & DS_F_DELETED))
			return ds_rec_put(s, txn, spath, &src);
		if ((e = ds_rec_remove(s, txn, spath, src_id)) != DS_OK)
			return e;
		if (d->n <= DS_CHAIN_MAX)
			d->ids[d->n++] = src_id;
	}
	return DS_OK;
}

static void
unlink_doomed(struct ds_store *s, const struct doomed *d)
{
	int i;

	for (i = 0; i < d->n; i++)
		ds_seg_unlink(s, d->ids[i]);
}

/*
 * Drops the stream at path if it is still the expired stream id. Called
 * when a lookup finds a stream past its TTL or Expires-At. An expired
 * stream with live forks is soft-deleted, like a deleted one.
 */
static void
expire(struct ds_store *s, const char *path, uint64_t id, int64_t now)
{
	struct ds_rec r;
	struct doomed d = { .n = 0 };
	MDB_txn *txn;

	if (ds_txn_begin(s, 0, &txn) != DS_OK)
		return;
	if (ds_rec_get(s, txn, path, &r) != DS_OK || r.info.id != id ||
	    !ds_expired(&r.info, now) || (r.info.flags & DS_F_DELETED) ||
	    drop_stream(s, txn, path, &r, &d) != DS_OK) {
		mdb_txn_abort(txn);
		return;
	}
	if (ds_txn_commit_sync(s, txn) == DS_OK) {
		ds_stats_count(DS_STAT_EXPIRE);
		unlink_doomed(s, &d);
	}
}

/*
 * Looks a live stream up in a read transaction of its own. Expired streams
 * are removed and reported as not found.
 */
enum ds_err
ds_lookup(struct ds_store *s, const char *path, int64_t now, struct ds_rec *r)
{
	MDB_txn *txn;
	enum ds_err e;

	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	e = ds_rec_get(s, txn, path, r);
	ds_rd_end(txn);
	if (e != DS_OK)
		return e;
	if (r->info.flags & DS_F_DELETED)
		return DS_EGONE;
	if (ds_expired(&r->info, now)) {
		expire(s, path, r->info.id, now);
		return r->refs > 0 ? DS_EGONE : DS_ENOTFOUND;
	}
	return DS_OK;
}

/*
 * A new stream id, never 0 (0 means "no source" in src_id). The ids
 * database is keyed by the id's bytes as they lie in memory, compared as
 * bytes: the first three are the time in milliseconds, modulo 2^24 (4.7
 * hours), most significant byte first, so the ids a commit's creates take
 * in one millisecond go to one leaf page of that tree and not each to a
 * page of its own. The other five bytes are random, the integer's top
 * byte among them, which spreads segment files over the fan-out
 * directories (segment.c). Ids of one millisecond are as unlikely to
 * collide as 40 random bits make them (and a collision is caught, and the
 * create tries another id: create_once()); ids of different milliseconds
 * of one 4.7-hour turn cannot. Hash ids with ds_id_hash(), never by their
 * low-order bits, which the time fills. Nothing depends on the layout but
 * the locality: ids made before it were wholly random.
 */
static uint64_t
new_id(void)
{
	struct timespec ts;
	unsigned char b[8];
	uint64_t id, t;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	do {
		while (getrandom(b + 3, 5, 0) != 5)
			;
		b[0] = (unsigned char)(t >> 16);
		b[1] = (unsigned char)(t >> 8);
		b[2] = (unsigned char)t;
		memcpy(&id, b, sizeof(id));
	} while (id == 0);
	return id;
}

/*
 * Resolves a fork request against its source (see ds_store_create()) and
 * completes req with what the fork inherits.
 */
static enum ds_err
prepare_fork(struct ds_store *s, struct ds_create *req, int64_t now,
    struct ds_rec *r)
{
	struct ds_rec src;
	struct ds_chain c;
	enum ds_err e;

	if ((e = ds_lookup(s, req->src_path, now, &src)) != DS_OK)
		return e == DS_EGONE ? DS_ESOURCE_GONE : e;
	if (req->src_want && src.info.id != req->src_want)
		return DS_EREPLACED;
	if ((e = ds_chain_build(s, NULL, &src, src.info.tail, &c)) != DS_OK)
		return e;
	if (c.n >= DS_CHAIN_MAX)
		return DS_EDEPTH;
	if ((e = ds_resolve_fork_point(s, &c, src.info.tail,
	    (src.info.flags & DS_F_MSG) != 0, !req->has_fork_at ?
	    src.info.tail : req->fork_at == DS_POS_FIRST ? ds_chain_first(&c) :
	    req->fork_at, req->sub, &req->base)) != DS_OK)
		return e;
	req->src_id = src.info.id;
	/* Copied, never pointed at: src dies with this frame. */
	memcpy(r->info.ctype, src.info.ctype, sizeof(r->info.ctype));
	req->flags = (req->flags & ~DS_F_MSG) | (src.info.flags & DS_F_MSG);
	if (!(req->flags & (DS_F_TTL | DS_F_EXPIRES))) {
		req->flags |= src.info.flags & (DS_F_TTL | DS_F_EXPIRES);
		req->ttl_s = src.info.ttl_s;
		req->expires_ms = src.info.expires_ms;
	}
	return DS_OK;
}

/*
 * Checks a create request and builds in *r the record it asks for,
 * resolving a fork against its source. DS_EEXIST or DS_EGONE, with *out
 * describing the stream there, when the path is taken already.
 */
static enum ds_err
create_rec(struct ds_store *s, const char *path, struct ds_create *req,
    int64_t now, struct ds_rec *r, struct ds_stream_info *out)
{
	struct ds_rec old;
	enum ds_err e;

	if (strlen(path) == 0 || strlen(path) > DS_PATH_MAX ||
	    (req->ctype && strlen(req->ctype) > DS_CTYPE_MAX))
		return DS_ETOOBIG;
	memset(r, 0, sizeof(*r));
	req->src_id = 0;
	req->base = 0;
	if (req->src_path && (e = prepare_fork(s, req, now, r)) != DS_OK)
		return e;
	if (req->ctype)
		snprintf(r->info.ctype, sizeof(r->info.ctype), "%s",
		    req->ctype);
	else if (!req->src_path)
		snprintf(r->info.ctype, sizeof(r->info.ctype), "%s",
		    "application/octet-stream");
	e = ds_lookup(s, path, now, &old);
	if (e == DS_OK || e == DS_EGONE) {
		*out = old.info;
		return e == DS_OK ? DS_EEXIST : DS_EGONE;
	}
	if (e != DS_ENOTFOUND)
		return e;

	r->info.flags = req->flags & (DS_F_CLOSED | DS_F_TTL | DS_F_EXPIRES |
	    DS_F_MSG);
	r->info.ttl_s = req->ttl_s;
	r->info.expires_ms = req->expires_ms;
	r->info.access_ms = now;
	r->info.src_id = req->src_id;
	r->info.base = req->base;
	r->info.tail = req->base + req->len;
	r->created_ms = now;
	return DS_OK;
}

/*
 * Pins a fork's source within txn by one more reference, unless it went
 * away since prepare_fork(): the fork point was resolved in that stream's
 * data.
 */
static enum ds_err
pin_source(struct ds_store *s, MDB_txn *txn, const struct ds_create *req)
{
	struct ds_rec src;
	enum ds_err e;

	if ((e = ds_rec_get(s, txn, req->src_path, &src)) != DS_OK)
		return e;
	if (src.info.id != req->src_id)
		return DS_EREPLACED;
	if (src.info.flags & DS_F_DELETED)
		return DS_ESOURCE_GONE;
	src.refs++;
	return ds_rec_put(s, txn, req->src_path, &src);
}

/* A create as it goes to the shared commit (ds_commit()). */
struct create_commit {
	const char		*path;
	const struct ds_create	*req;
	int64_t			 now;
	struct ds_rec		*r;		/* the new record, id set */
	struct ds_stream_info	*out;		/* the stream in the way */
	struct doomed		 d;		/* expired streams dropped */
	int			 again;		/* the new id collided */
};

/*
 * Puts a create into txn: drops an expired stream in the way, pins the
 * fork source, claims the id and writes the record. Returns DS_OK or an
 * error (DS_EEXIST, DS_EGONE: *out is the stream in the way).
 */
static enum ds_err
apply_create(struct ds_store *s, MDB_txn *txn, void *arg)
{
	struct create_commit *cc = arg;
	struct ds_rec old;
	MDB_val k, v;
	enum ds_err e;
	uint64_t id = cc->r->info.id;
	int rc;

	cc->d.n = 0;	/* applied again when a shared commit begins again */
	cc->again = 0;
	e = ds_rec_get(s, txn, cc->path, &old);
	if (e == DS_OK && ((old.info.flags & DS_F_DELETED) ||
	    !ds_expired(&old.info, cc->now))) {
		*cc->out = old.info;
		return (old.info.flags & DS_F_DELETED) ? DS_EGONE : DS_EEXIST;
	}
	if (e == DS_OK) {
		/* An expired stream: drop it first (may cascade). */
		if ((e = drop_stream(s, txn, cc->path, &old, &cc->d)) != DS_OK)
			return e;
		if (old.refs > 0)
			return DS_EGONE;	/* expired, still read by forks */
	} else if (e != DS_ENOTFOUND)
		return e;
	if (cc->req->src_path && (e = pin_source(s, txn, cc->req)) != DS_OK)
		return e;
	k.mv_data = &id;
	k.mv_size = sizeof(id);
	v.mv_data = (void *)cc->path;
	v.mv_size = strlen(cc->path);
	rc = mdb_put(txn, s->ids, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		cc->again = 1;
		return DS_EEXIST;
	}
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_put id", rc);
	if ((e = ds_rec_put(s, txn, cc->path, cc->r)) != DS_OK)
		return e;
	/* Subscriptions see the create's bytes as pending (PROTOCOL 6.2). */
	return ds_sub_on_create(s, txn, cc->path, id);
}

/* Sets *taken when a stream has id (in the ids database). */
static enum ds_err
id_taken(struct ds_store *s, uint64_t id, int *taken)
{
	MDB_txn *txn;
	MDB_val k, v;
	enum ds_err e;
	int rc;

	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	k.mv_data = &id;
	k.mv_size = sizeof(id);
	rc = mdb_get(txn, s->ids, &k, &v);
	ds_rd_end(txn);
	*taken = rc == 0;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "mdb_get id", rc);
	return DS_OK;
}

/*
 * One attempt at storing the stream r at path under a new id: the
 * segment file with the body (none without a body: see segment.c), then,
 * in the shared commit, a transaction that checks the path again (someone
 * may have created it since create_rec() looked), drops an expired stream
 * there, pins a fork's source and adds the id entry and the record
 * (apply_create()). Sets *again, leaving nothing behind, when the id is
 * taken already. Until the commit, the segment file is unlinked on the way
 * out; after it, the record names the file, even when the sync fails.
 */
static enum ds_err
create_once(struct ds_store *s, const char *path, const struct ds_create *req,
    int64_t now, struct ds_rec *r, struct ds_stream_info *out, int *again)
{
	struct create_commit cc;
	struct ds_commit cm;
	uint64_t id = new_id();
	enum ds_err e;

	*again = 0;
	if (req->len > 0) {
		/*
		 * The id of a stream created empty has no file: the new one
		 * must not be made for it, where that stream's first append
		 * would find it, and be unlinked with its bytes when this
		 * commit finds the id taken.
		 */
		if ((e = id_taken(s, id, again)) != DS_OK || *again)
			return e;
		if (ds_seg_create(s, id, req->body, req->len) == -1) {
			/* Another create's file: its id, taken meanwhile. */
			*again = errno == EEXIST;
			return ds_sys_err(errno);
		}
	}
	r->info.id = id;
	memset(&cc, 0, sizeof(cc));
	cc.path = path;
	cc.req = req;
	cc.now = now;
	cc.r = r;
	cc.out = out;
	memset(&cm, 0, sizeof(cm));
	cm.apply = apply_create;
	cm.arg = &cc;
	ds_commit(s, &cm);
	*again = cc.again;
	if (cm.e == DS_OK) {
		unlink_doomed(s, &cc.d);
		*out = r->info;
	}
	if (!cm.committed && req->len > 0)
		ds_seg_unlink(s, id);
	return cm.e;
}

enum ds_err
ds_store_create(struct ds_store *s, const char *path, struct ds_create *req,
    int64_t now, struct ds_stream_info *out)
{
	struct ds_rec r;
	enum ds_err e;
	int again;

	memset(out, 0, sizeof(*out));
	if ((e = create_rec(s, path, req, now, &r, out)) != DS_OK)
		return e;
	do
		e = create_once(s, path, req, now, &r, out, &again);
	while (again);
	if (e == DS_OK)
		ds_stats_count(DS_STAT_CREATE);
	return e;
}

enum ds_err
ds_store_delete(struct ds_store *s, const char *path)
{
	struct ds_rec r;
	struct doomed d = { .n = 0 };
	MDB_txn *txn;
	enum ds_err e, e2;
	int64_t now;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((e = ds_rec_get(s, txn, path, &r)) != DS_OK)
		goto abort;
	if (r.info.flags & DS_F_DELETED) {
		e = DS_EGONE;
		goto abort;
	}
	/* An expired stream is dropped all the same, but was not there. */
	if (ds_expired(&r.info, now))
		e = DS_ENOTFOUND;
	if ((e2 = drop_stream(s, txn, path, &r, &d)) != DS_OK) {
		e = e2;
		goto abort;
	}
	/* No ds_meta_reserve(): a delete may use the reserve (it frees). */
	if ((e2 = ds_txn_commit_sync(s, txn)) != DS_OK)
		return e2;
	unlink_doomed(s, &d);
	ds_stats_count(e == DS_OK ? DS_STAT_DELETE : DS_STAT_EXPIRE);
	return e;
abort:
	mdb_txn_abort(txn);
	return e;
}
