/*
 * subs.c: subscriptions as the store keeps them (PROTOCOL 6): records,
 * links, globs, the link made when a matching stream is created, and the
 * server's secrets. The wake state machine is in subs_wake.c.
 *
 * Layout in LMDB:
 *   subs      id -> a fixed header (struct sub_hdr) and length-prefixed
 *             strings; a deleted subscription stays as a tombstone.
 *   sublinks  sid (8 bytes, big-endian, so one subscription's links are
 *             adjacent) + stream path -> struct ds_link_rec.
 *   secrets   name -> bytes: "sid" (the last sid handed out), the token
 *             key and the signing key (see ds_store_secret()).
 * A subscription's sid is never reused, so links and tokens of a deleted
 * subscription never apply to one created again under its id.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* The fixed part of a subscription record, stored as-is. */
struct sub_hdr {
	uint64_t	sid;
	uint32_t	type, flags;
	uint64_t	lease_ttl_ms;
	int64_t		created_ms;
	unsigned char	hash[32];
	uint64_t	generation;
	int64_t		lease_until;
	uint64_t	sender;
	int64_t		send_until;
	uint32_t	attempts;
	uint32_t	event_due;
	int64_t		next_attempt_ms;
	uint32_t	has_description;
	uint32_t	pad;
};

#define SUB_BUFSZ (sizeof(struct sub_hdr) + 7 * 2 + DS_WAKEID_LEN + \
	DS_HOLDER_MAX + 2 * DS_PATH_MAX + 2 * DS_URL_MAX + DS_DESC_MAX)

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

static int
put_str(char *buf, size_t *at, const char *s)
{
	size_t n = strlen(s);
	uint16_t l = (uint16_t)n;

	if (*at + 2 + n > SUB_BUFSZ)
		return -1;
	memcpy(buf + *at, &l, 2);
	memcpy(buf + *at + 2, s, n);
	*at += 2 + n;
	return 0;
}

static int
get_str(const char *buf, size_t len, size_t *at, char *out, size_t outsz)
{
	uint16_t l;

	if (*at + 2 > len)
		return -1;
	memcpy(&l, buf + *at, 2);
	if (*at + 2 + l > len || l >= outsz)
		return -1;
	memcpy(out, buf + *at + 2, l);
	out[l] = '\0';
	*at += 2 + (size_t)l;
	return 0;
}

/* Reads subscription id into *sub (tombstones included). */
enum ds_err
ds_sub_load(struct ds_store *s, MDB_txn *txn, const char *id,
    struct ds_sub *sub)
{
	struct sub_hdr h;
	MDB_val k, v;
	size_t at = sizeof(h);
	int rc;

	k.mv_data = (void *)id;
	k.mv_size = strlen(id);
	if ((rc = mdb_get(txn, s->subs, &k, &v)) == MDB_NOTFOUND)
		return DS_ENOTFOUND;
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_get", rc);
	if (v.mv_size < sizeof(h))
		goto bad;
	memcpy(&h, v.mv_data, sizeof(h));
	memset(sub, 0, sizeof(*sub));
	sub->sid = h.sid;
	sub->type = h.type;
	sub->flags = h.flags;
	sub->lease_ttl_ms = h.lease_ttl_ms;
	sub->created_ms = h.created_ms;
	memcpy(sub->hash, h.hash, sizeof(h.hash));
	sub->generation = h.generation;
	sub->lease_until = h.lease_until;
	sub->sender = h.sender;
	sub->send_until = h.send_until;
	sub->attempts = h.attempts;
	sub->event_due = h.event_due;
	sub->next_attempt_ms = h.next_attempt_ms;
	sub->has_description = (int)h.has_description;
	if (get_str(v.mv_data, v.mv_size, &at, sub->wake_id,
	    sizeof(sub->wake_id)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->holder,
	    sizeof(sub->holder)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->pattern,
	    sizeof(sub->pattern)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->url,
	    sizeof(sub->url)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->wake_stream,
	    sizeof(sub->wake_stream)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->description,
	    sizeof(sub->description)) == -1 ||
	    get_str(v.mv_data, v.mv_size, &at, sub->base_url,
	    sizeof(sub->base_url)) == -1)
		goto bad;
	return DS_OK;
bad:
	ds_log("subscription %s: record does not decode", id);
	return DS_ECORRUPT;
}

enum ds_err
ds_sub_store(struct ds_store *s, MDB_txn *txn, const char *id,
    const struct ds_sub *sub)
{
	struct sub_hdr h;
	char buf[SUB_BUFSZ];
	MDB_val k, v;
	size_t at = sizeof(h);
	int rc;

	memset(&h, 0, sizeof(h));
	h.sid = sub->sid;
	h.type = sub->type;
	h.flags = sub->flags;
	h.lease_ttl_ms = sub->lease_ttl_ms;
	h.created_ms = sub->created_ms;
	memcpy(h.hash, sub->hash, sizeof(h.hash));
	h.generation = sub->generation;
	h.lease_until = sub->lease_until;
	h.sender = sub->sender;
	h.send_until = sub->send_until;
	h.attempts = sub->attempts;
	h.event_due = sub->event_due;
	h.next_attempt_ms = sub->next_attempt_ms;
	h.has_description = (uint32_t)sub->has_description;
	memcpy(buf, &h, sizeof(h));
	if (put_str(buf, &at, sub->wake_id) == -1 ||
	    put_str(buf, &at, sub->holder) == -1 ||
	    put_str(buf, &at, sub->pattern) == -1 ||
	    put_str(buf, &at, sub->url) == -1 ||
	    put_str(buf, &at, sub->wake_stream) == -1 ||
	    put_str(buf, &at, sub->description) == -1 ||
	    put_str(buf, &at, sub->base_url) == -1)
		return DS_ETOOBIG;
	k.mv_data = (void *)id;
	k.mv_size = strlen(id);
	v.mv_data = buf;
	v.mv_size = at;
	if ((rc = mdb_put(txn, s->subs, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put", rc);
	return DS_OK;
}

static size_t
link_key(uint64_t sid, const char *path, char *buf)
{
	size_t n = strlen(path);
	int i;

	for (i = 0; i < 8; i++)
		buf[i] = (char)(sid >> (56 - 8 * i));
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
 * Reads every link of sid with its stream's tail. A link whose stream was
 * deleted and created again since it was acked counts from 0 (the store
 * links a created stream at 0 itself; see ds_sub_on_create()).
 */
enum ds_err
ds_sub_links(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    struct ds_sub_link **out, size_t *nout)
{
	struct ds_sub_link *a = NULL, *na;
	struct ds_link_rec lr;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	char kb[8];
	size_t n = 0, cap = 0;
	uint64_t id, tail;
	enum ds_err e = DS_OK;
	int rc;

	*out = NULL;
	*nout = 0;
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
			goto out;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			if ((na = realloc(a, cap * sizeof(*a))) == NULL) {
				e = DS_ENOMEM;
				goto out;
			}
			a = na;
		}
		memcpy(&lr, v.mv_data, sizeof(lr));
		memcpy(a[n].path, (char *)k.mv_data + 8, k.mv_size - 8);
		a[n].path[k.mv_size - 8] = '\0';
		if ((e = ds_stream_tail(s, txn, a[n].path, &id, &tail)) !=
		    DS_OK)
			goto out;
		a[n].kind = lr.kind;
		a[n].tail = tail;
		a[n].acked = lr.id == id && lr.acked <= tail ? lr.acked : 0;
		n++;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "mdb_cursor_get", rc);
out:
	mdb_cursor_close(c);
	if (e != DS_OK) {
		free(a);
		return e;
	}
	*out = a;
	*nout = n;
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
static enum ds_err
links_drop(struct ds_store *s, MDB_txn *txn, uint64_t sid)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	char kb[8];
	int rc;

	if ((rc = mdb_cursor_open(txn, s->sublinks, &c)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	k.mv_data = kb;
	k.mv_size = link_key(sid, "", kb);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 8 || memcmp(k.mv_data, kb, 8) != 0)
			break;
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "mdb_cursor", rc);
	return DS_OK;
}

/* Links path to sid at its tail, or adds kind to the link there. */
static enum ds_err
link_at_tail(struct ds_store *s, MDB_txn *txn, uint64_t sid,
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
static enum ds_err
backfill(struct ds_store *s, MDB_txn *txn, const struct ds_sub *sub)
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
		if ((e = link_at_tail(s, txn, sub->sid, path, DS_LINK_GLOB)) !=
		    DS_OK)
			break;
	}
	mdb_cursor_close(c);
	if (e == DS_OK && rc != 0 && rc != MDB_NOTFOUND)
		e = ds_mdb_err(__func__, "mdb_cursor_get", rc);
	return e;
}

static enum ds_err
next_sid(struct ds_store *s, MDB_txn *txn, uint64_t *sid)
{
	MDB_val k = { 3, (void *)"sid" }, v;
	uint64_t n = 0;
	int rc;

	rc = mdb_get(txn, s->secrets, &k, &v);
	if (rc == 0 && v.mv_size == sizeof(n))
		memcpy(&n, v.mv_data, sizeof(n));
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "mdb_get", rc);
	*sid = ++n;
	v.mv_data = &n;
	v.mv_size = sizeof(n);
	if ((rc = mdb_put(txn, s->secrets, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put", rc);
	return DS_OK;
}

enum ds_err
ds_sub_create(struct ds_store *s, const char *id, const struct ds_sub *sub,
    const char *const *streams, size_t n, struct ds_sub *out)
{
	MDB_txn *txn;
	enum ds_err e;
	size_t i;

	if (strlen(id) > DS_SUBID_MAX)
		return DS_ETOOBIG;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	e = ds_sub_load(s, txn, id, out);
	if (e == DS_OK && !(out->flags & DS_SUB_F_DELETED)) {
		e = DS_EEXIST;
		goto out;
	}
	if (e != DS_OK && e != DS_ENOTFOUND)
		goto out;
	*out = *sub;
	out->flags = 0;
	out->generation = 0;
	out->wake_id[0] = out->holder[0] = '\0';
	out->lease_until = out->send_until = out->next_attempt_ms = 0;
	out->sender = 0;
	out->attempts = out->event_due = 0;
	if ((e = next_sid(s, txn, &out->sid)) != DS_OK)
		goto out;
	for (i = 0; i < n; i++)
		if ((e = link_at_tail(s, txn, out->sid, streams[i],
		    DS_LINK_EXPLICIT)) != DS_OK)
			goto out;
	if (out->pattern[0] && (e = backfill(s, txn, out)) != DS_OK)
		goto out;
	if ((e = ds_sub_store(s, txn, id, out)) != DS_OK)
		goto out;
	return ds_txn_commit_sync(s, txn);
out:
	mdb_txn_abort(txn);
	return e;
}

enum ds_err
ds_sub_get(struct ds_store *s, const char *id, struct ds_sub *out,
    struct ds_sub_link **links, size_t *nlinks)
{
	MDB_txn *txn;
	enum ds_err e;

	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	e = ds_sub_load(s, txn, id, out);
	if (e == DS_OK && (out->flags & DS_SUB_F_DELETED))
		e = DS_ENOTFOUND;
	if (e == DS_OK && links)
		e = ds_sub_links(s, txn, out->sid, links, nlinks);
	ds_rd_end(txn);
	return e;
}

/*
 * Opens a write transaction on a live subscription id: DS_OK with *txn
 * and *sub, or an error with nothing open.
 */
static enum ds_err
begin_live(struct ds_store *s, const char *id, MDB_txn **txn,
    struct ds_sub *sub)
{
	enum ds_err e;

	if ((e = ds_txn_begin(s, 0, txn)) != DS_OK)
		return e;
	e = ds_sub_load(s, *txn, id, sub);
	if (e == DS_OK && (sub->flags & DS_SUB_F_DELETED))
		e = DS_ENOTFOUND;
	if (e != DS_OK)
		mdb_txn_abort(*txn);
	return e;
}

enum ds_err
ds_sub_delete(struct ds_store *s, const char *id)
{
	struct ds_sub sub;
	MDB_txn *txn;
	enum ds_err e;

	if ((e = begin_live(s, id, &txn, &sub)) != DS_OK)
		return e;
	if ((e = links_drop(s, txn, sub.sid)) != DS_OK)
		goto out;
	sub.flags = DS_SUB_F_DELETED;
	sub.wake_id[0] = sub.holder[0] = '\0';
	sub.lease_until = sub.send_until = 0;
	sub.event_due = 0;
	if ((e = ds_sub_store(s, txn, id, &sub)) != DS_OK)
		goto out;
	return ds_txn_commit_sync(s, txn);
out:
	mdb_txn_abort(txn);
	return e;
}

enum ds_err
ds_sub_link_add(struct ds_store *s, const char *id,
    const char *const *paths, size_t n)
{
	struct ds_sub sub;
	MDB_txn *txn;
	enum ds_err e;
	size_t i;

	if ((e = begin_live(s, id, &txn, &sub)) != DS_OK)
		return e;
	for (i = 0; i < n; i++)
		if ((e = link_at_tail(s, txn, sub.sid, paths[i],
		    DS_LINK_EXPLICIT)) != DS_OK) {
			mdb_txn_abort(txn);
			return e;
		}
	return ds_txn_commit_sync(s, txn);
}

enum ds_err
ds_sub_link_remove(struct ds_store *s, const char *id, const char *path)
{
	struct ds_link_rec lr;
	struct ds_sub sub;
	MDB_txn *txn;
	enum ds_err e;

	if ((e = begin_live(s, id, &txn, &sub)) != DS_OK)
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
		if ((e = ds_sub_load(s, txn, sid, sub)) != DS_OK)
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

enum ds_err
ds_sub_foreach(struct ds_store *s,
    int (*fn)(const char *, const struct ds_sub *, void *), void *arg)
{
	struct ds_sub *sub;
	MDB_txn *txn;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	char *ids = NULL, *nids;
	size_t len = 0, cap = 0, at;
	enum ds_err e;
	int rc;

	/* Ids first, so that fn runs outside the read transaction. */
	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	if ((rc = mdb_cursor_open(txn, s->subs, &c)) != 0) {
		ds_rd_end(txn);
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	}
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size > DS_SUBID_MAX)
			continue;
		if (len + k.mv_size + 1 > cap) {
			cap = cap ? cap * 2 : 4096;
			if ((nids = realloc(ids, cap)) == NULL) {
				rc = ENOMEM;
				break;
			}
			ids = nids;
		}
		memcpy(ids + len, k.mv_data, k.mv_size);
		ids[len + k.mv_size] = '\0';
		len += k.mv_size + 1;
	}
	mdb_cursor_close(c);
	ds_rd_end(txn);
	if (rc != MDB_NOTFOUND) {
		free(ids);
		return rc == ENOMEM ? DS_ENOMEM :
		    ds_mdb_err(__func__, "mdb_cursor_get", rc);
	}
	if ((sub = malloc(sizeof(*sub))) == NULL) {
		free(ids);
		return DS_ENOMEM;
	}
	for (at = 0; at < len; at += strlen(ids + at) + 1) {
		if (ds_sub_get(s, ids + at, sub, NULL, NULL) != DS_OK)
			continue;
		if (fn(ids + at, sub, arg))
			break;
	}
	free(sub);
	free(ids);
	return DS_OK;
}

enum ds_err
ds_store_secret(struct ds_store *s, const char *name, const void *cand,
    void *buf, size_t *len)
{
	MDB_txn *txn;
	MDB_val k, v;
	enum ds_err e;
	int rc;

	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	v.mv_data = (void *)cand;
	v.mv_size = *len;
	rc = mdb_put(txn, s->secrets, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		/* v is the stored value now. */
		if (v.mv_size > *len) {
			mdb_txn_abort(txn);
			return DS_ETOOBIG;
		}
		memcpy(buf, v.mv_data, v.mv_size);
		*len = v.mv_size;
		mdb_txn_abort(txn);
		return DS_OK;
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return ds_mdb_err(__func__, "mdb_put", rc);
	}
	memcpy(buf, cand, *len);
	return ds_txn_commit_sync(s, txn);
}
