/*
 * sublinks.c: a subscription's links to streams (PROTOCOL 6.1, 6.2, 6.4):
 * globs, links at a stream's tail, explicit links added and removed, and
 * the link made in the transaction that creates a matching stream. The
 * layout is described at the top of subs.c.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"


/*
 * Does the glob segment g (glen bytes) match the path segment p (plen)?
 * '*' matches any run of bytes within the segment.
 */
static int
seg_match(const char *g, size_t glen, const char *p, size_t plen)
{
	size_t i;

	if (glen == 0)
		return plen == 0;
	if (*g == '*') {
		for (i = 0; i <= plen; i++)
			if (seg_match(g + 1, glen - 1, p + i, plen - i))
				return 1;
		return 0;
	}
	return plen > 0 && *g == *p && seg_match(g + 1, glen - 1, p + 1,
	    plen - 1);
}

int
ds_glob_match(const char *g, const char *p)
{
	const char *gs = strchr(g, '/'), *ps;
	size_t glen = gs ? (size_t)(gs - g) : strlen(g);

	if (glen == 2 && g[0] == '*' && g[1] == '*') {
		if (gs == NULL)
			return 1;
		/* Zero segments, or one more each time. */
		for (ps = p; ; ps++) {
			if (ds_glob_match(gs + 1, ps))
				return 1;
			if ((ps = strchr(ps, '/')) == NULL)
				return 0;
		}
	}
	ps = strchr(p, '/');
	if (!seg_match(g, glen, p, ps ? (size_t)(ps - p) : strlen(p)))
		return 0;
	if (gs == NULL || ps == NULL)
		return gs == NULL && ps == NULL;
	return ds_glob_match(gs + 1, ps + 1);
}

static size_t
link_key(uint64_t sid, const char *path, char *buf)
{
	size_t n = strlen(path);

	ds_be64_put(buf, sid);
	memcpy(buf + 8, path, n);
	return 8 + n;
}

/* The id and tail of the stream at path; 0 and 0 when there is none. */
enum ds_err
ds_stream_tail(struct ds_store *s, MDB_txn *txn, const char *path,
    uint64_t *id, uint64_t *tail)
{
	struct ds_rec r;
	enum ds_err e;

	*id = *tail = 0;
	e = ds_rec_get(s, txn, path, &r);
	if (e == DS_ENOTFOUND)
		return DS_OK;
	if (e != DS_OK)
		return e;
	if (!(r.info.flags & DS_F_DELETED)) {
		*id = r.info.id;
		*tail = r.info.tail;
	}
	return DS_OK;
}

static enum ds_err
link_get(struct ds_store *s, MDB_txn *txn, uint64_t sid, const char *path,
    struct ds_link_rec *lr)
{
	char kb[8 + DS_PATH_MAX];
	MDB_val k, v;
	int rc;

	k.mv_data = kb;
	k.mv_size = link_key(sid, path, kb);
	if ((rc = mdb_get(txn, s->sublinks, &k, &v)) == MDB_NOTFOUND)
		return DS_ENOTFOUND;
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_get", rc);
	if (v.mv_size != sizeof(*lr))
		return DS_ECORRUPT;
	memcpy(lr, v.mv_data, sizeof(*lr));
	return DS_OK;
}

enum ds_err
ds_sub_link_put(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    const char *path, const struct ds_link_rec *lr)
{
	char kb[8 + DS_PATH_MAX];
	MDB_val k, v;
	int rc;

	k.mv_data = kb;
	k.mv_size = link_key(sid, path, kb);
	v.mv_data = (void *)lr;
	v.mv_size = sizeof(*lr);
	if ((rc = mdb_put(txn, s->sublinks, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put", rc);
	return DS_OK;
}

static enum ds_err
link_del(struct ds_store *s, MDB_txn *txn, uint64_t sid, const char *path)
{
	char kb[8 + DS_PATH_MAX];
	MDB_val k;
	int rc;

	k.mv_data = kb;
	k.mv_size = link_key(sid, path, kb);
	rc = mdb_del(txn, s->sublinks, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "mdb_del", rc);
	return DS_OK;
}

/*
 * Calls fn for every link of sid, in path order, until fn returns other
 * than DS_OK (DS_EOFFSET: stop, and return DS_OK).
 */
static enum ds_err
links_each(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    enum ds_err (*fn)(void *, const char *, size_t, const struct ds_link_rec *),
    void *arg)
{
	struct ds_link_rec lr;
	MDB_cursor *c;
	MDB_val k, v;
	char kb[8];
	enum ds_err e = DS_OK;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->sublinks, &c)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	k.mv_data = kb;
	k.mv_size = link_key(sid, "", kb);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 8 || memcmp(k.mv_data, kb, 8) != 0)
			break;
		if (k.mv_size - 8 > DS_PATH_MAX || v.mv_size != sizeof(lr)) {
			e = DS_ECORRUPT;
			break;
		}
		memcpy(&lr, v.mv_data, sizeof(lr));
		if ((e = fn(arg, (char *)k.mv_data + 8, k.mv_size - 8, &lr)) !=
		    DS_OK)
			break;
	}
	if (e == DS_OK && rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "mdb_cursor_get", rc);
	mdb_cursor_close(c);
	return e == DS_EOFFSET ? DS_OK : e;
}

struct links_acc {
	struct ds_store	*s;
	MDB_txn		*txn;
	struct ds_sub_link *a;
	size_t		 n, cap;
};

static enum ds_err
links_add(void *arg, const char *path, size_t plen,
    const struct ds_link_rec *lr)
{
	struct links_acc *acc = arg;
	struct ds_sub_link *na, *l;
	uint64_t id, tail;
	enum ds_err e;

	if (acc->n == acc->cap) {
		acc->cap = acc->cap ? acc->cap * 2 : 8;
		if ((na = realloc(acc->a, acc->cap * sizeof(*na))) == NULL)
			return DS_ENOMEM;
		acc->a = na;
	}
	l = &acc->a[acc->n];
	memcpy(l->path, path, plen);
	l->path[plen] = '\0';
	if ((e = ds_stream_tail(acc->s, acc->txn, l->path, &id, &tail)) !=
	    DS_OK)
		return e;
	l->kind = lr->kind;
	l->tail = tail;
	l->acked = lr->id == id && lr->acked <= tail ? lr->acked : 0;
	acc->n++;
	return DS_OK;
}

/*
 * Reads every link of sid with its stream's tail. A link whose stream was
 * deleted and created again since it was acked counts from 0 (the store
 * links a created stream at 0 itself; see ds_sub_on_create()).
 */
enum ds_err
ds_sub_links(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    struct ds_sub_link **out, size_t *nout)
{
	struct links_acc acc = { s, txn, NULL, 0, 0 };
	enum ds_err e;

	*out = NULL;
	*nout = 0;
	if ((e = links_each(s, txn, sid, links_add, &acc)) != DS_OK) {
		free(acc.a);
		return e;
	}
	*out = acc.a;
	*nout = acc.n;
	return DS_OK;
}

int
ds_sub_pending(const struct ds_sub_link *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (l[i].tail > l[i].acked)
			return 1;
	return 0;
}

/* Removes every link of sid. */
enum ds_err
ds_links_drop(struct ds_store *s, MDB_txn *txn, uint64_t sid)
{
	char kb[8];

	link_key(sid, "", kb);
	return ds_del_range(txn, s->sublinks, kb, sizeof(kb), NULL, 0);
}

/* Links path to sid at its tail, or adds kind to the link there. */
enum ds_err
ds_link_at_tail(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    const char *path, uint32_t kind)
{
	struct ds_link_rec lr;
	enum ds_err e;

	e = link_get(s, txn, sid, path, &lr);
	if (e == DS_OK) {
		if ((lr.kind & kind) == kind)
			return DS_OK;
		lr.kind |= kind;
	} else if (e == DS_ENOTFOUND) {
		memset(&lr, 0, sizeof(lr));
		lr.kind = kind;
		if ((e = ds_stream_tail(s, txn, path, &lr.id, &lr.acked)) !=
		    DS_OK)
			return e;
	} else
		return e;
	return ds_sub_link_put(s, txn, sid, path, &lr);
}

/* Glob links to every live stream the pattern matches (PROTOCOL 6.2). */
enum ds_err
ds_links_backfill(struct ds_store *s, MDB_txn *txn, const struct ds_sub *sub)
{
	char path[DS_PATH_MAX + 1];
	struct ds_rec r;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	enum ds_err e = DS_OK;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->streams, &c)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size > DS_PATH_MAX)
			continue;
		memcpy(path, k.mv_data, k.mv_size);
		path[k.mv_size] = '\0';
		if (!ds_glob_match(sub->pattern, path))
			continue;
		if (ds_rec_decode(&v, &r) == -1 || (r.info.flags & DS_F_DELETED))
			continue;
		if ((e = ds_link_at_tail(s, txn, sub->sid, path, DS_LINK_GLOB)) !=
		    DS_OK)
			break;
	}
	mdb_cursor_close(c);
	if (e == DS_OK && rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "mdb_cursor_get", rc);
	return e;
}

struct explicit_count {
	size_t	n, max;
};

static enum ds_err
count_one(void *arg, const char *path, size_t plen,
    const struct ds_link_rec *lr)
{
	struct explicit_count *ec = arg;

	(void)path;
	(void)plen;
	if (lr->kind & DS_LINK_EXPLICIT)
		ec->n++;
	return ec->n < ec->max ? DS_OK : DS_EOFFSET;
}

/* Counts the explicit links of sid into *n, stopping at max. */
static enum ds_err
count_explicit(struct ds_store *s, MDB_txn *txn, uint64_t sid, size_t max,
    size_t *n)
{
	struct explicit_count ec = { 0, max };
	enum ds_err e;

	e = links_each(s, txn, sid, count_one, &ec);
	*n = ec.n;
	return e;
}

/*
 * Links paths explicitly, all or none: DS_ELINKS when the subscription
 * would hold more than DS_SUB_LINKS_MAX of them (a delivery step reads
 * every link of a subscription).
 */
enum ds_err
ds_sub_link_add(struct ds_store *s, const char *id,
    const char *const *paths, size_t n)
{
	struct ds_link_rec lr;
	struct ds_sub sub;
	MDB_txn *txn;
	enum ds_err e;
	size_t i, have;

	if ((e = ds_sub_begin_live(s, id, &txn, &sub)) != DS_OK)
		return e;
	if ((e = count_explicit(s, txn, sub.sid, DS_SUB_LINKS_MAX, &have)) !=
	    DS_OK)
		goto fail;
	for (i = 0; i < n; i++) {
		e = link_get(s, txn, sub.sid, paths[i], &lr);
		if (e == DS_OK && (lr.kind & DS_LINK_EXPLICIT))
			continue;
		if (e != DS_OK && e != DS_ENOTFOUND)
			goto fail;
		if (have >= DS_SUB_LINKS_MAX) {
			e = DS_ELINKS;
			goto fail;
		}
		if ((e = ds_link_at_tail(s, txn, sub.sid, paths[i],
		    DS_LINK_EXPLICIT)) != DS_OK)
			goto fail;
		have++;
	}
	return ds_txn_commit_sync(s, txn);
fail:
	mdb_txn_abort(txn);
	return e;
}

enum ds_err
ds_sub_link_remove(struct ds_store *s, const char *id, const char *path)
{
	struct ds_link_rec lr;
	struct ds_sub sub;
	MDB_txn *txn;
	enum ds_err e;

	if ((e = ds_sub_begin_live(s, id, &txn, &sub)) != DS_OK)
		return e;
	e = link_get(s, txn, sub.sid, path, &lr);
	if (e == DS_ENOTFOUND || (e == DS_OK &&
	    !(lr.kind & DS_LINK_EXPLICIT))) {
		mdb_txn_abort(txn);
		return DS_OK;
	}
	if (e != DS_OK)
		goto out;
	lr.kind &= ~DS_LINK_EXPLICIT;
	if (sub.pattern[0] && ds_glob_match(sub.pattern, path))
		lr.kind |= DS_LINK_GLOB;
	if (lr.kind == 0)
		e = link_del(s, txn, sub.sid, path);
	else
		e = ds_sub_link_put(s, txn, sub.sid, path, &lr);
	if (e != DS_OK)
		goto out;
	return ds_txn_commit_sync(s, txn);
out:
	mdb_txn_abort(txn);
	return e;
}

/*
 * Called in the transaction that creates the stream at path (id): links
 * it, at position 0, to every subscription whose pattern matches or that
 * links the path explicitly, so that the create's own bytes are pending
 * for them before anyone can see the stream (PROTOCOL 6.2).
 */
enum ds_err
ds_sub_on_create(struct ds_store *s, MDB_txn *txn, const char *path,
    uint64_t id)
{
	struct ds_sub *sub;
	struct ds_link_rec lr;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	char sid[DS_SUBID_MAX + 1];
	enum ds_err e = DS_OK;
	int rc;

	if ((sub = malloc(sizeof(*sub))) == NULL)
		return DS_ENOMEM;
	if ((rc = mdb_cursor_open(txn, s->subs, &c)) != 0) {
		free(sub);
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	}
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size > DS_SUBID_MAX)
			continue;
		memcpy(sid, k.mv_data, k.mv_size);
		sid[k.mv_size] = '\0';
		/* A record that does not decode (logged) blocks no create. */
		if ((e = ds_sub_load(s, txn, sid, sub)) == DS_ECORRUPT) {
			e = DS_OK;
			continue;
		}
		if (e != DS_OK)
			break;
		if (sub->flags & DS_SUB_F_DELETED)
			continue;
		e = link_get(s, txn, sub->sid, path, &lr);
		if (e == DS_ENOTFOUND) {
			if (!sub->pattern[0] ||
			    !ds_glob_match(sub->pattern, path)) {
				e = DS_OK;
				continue;
			}
			lr.kind = DS_LINK_GLOB;
		} else if (e != DS_OK)
			break;
		lr.id = id;
		lr.acked = 0;
		lr.pad = 0;
		if ((e = ds_sub_link_put(s, txn, sub->sid, path, &lr)) !=
		    DS_OK)
			break;
	}
	mdb_cursor_close(c);
	free(sub);
	if (e == DS_OK && rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "mdb_cursor_get", rc);
	return e;
}

