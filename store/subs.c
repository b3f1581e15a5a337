/*
 * subs.c: subscriptions as the store keeps them (PROTOCOL 6): records,
 * create, read, delete, and the server's secrets. Links and globs are in
 * sublinks.c, the wake state machine in subs_wake.c.
 *
 * Layout in LMDB:
 *   subs      id -> a fixed header (struct sub_hdr) and length-prefixed
 *             strings. A deleted subscription's record goes; records
 *             that earlier versions kept as tombstones (DS_SUB_F_DELETED)
 *             read as absent and are removed by a create of their id.
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

/* Reads subscription id into *sub (old tombstones included). */
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
		if ((e = ds_link_at_tail(s, txn, out->sid, streams[i],
		    DS_LINK_EXPLICIT)) != DS_OK)
			goto out;
	if (out->pattern[0] && (e = ds_links_backfill(s, txn, out)) != DS_OK)
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
enum ds_err
ds_sub_begin_live(struct ds_store *s, const char *id, MDB_txn **txn,
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
	MDB_val k;
	enum ds_err e;
	int rc;

	if ((e = ds_sub_begin_live(s, id, &txn, &sub)) != DS_OK)
		return e;
	if ((e = ds_links_drop(s, txn, sub.sid)) != DS_OK)
		goto out;
	/*
	 * No tombstone: sids are never reused (the "sid" secret), so a token
	 * or a wake of this subscription cannot match one created again
	 * under its id, and the records of subscriptions long gone would
	 * only grow the scans of every delivery pass.
	 */
	k.mv_data = (void *)id;
	k.mv_size = strlen(id);
	if ((rc = mdb_del(txn, s->subs, &k, NULL)) != 0) {
		e = ds_mdb_err(__func__, "mdb_del", rc);
		goto out;
	}
	return ds_txn_commit_sync(s, txn);
out:
	mdb_txn_abort(txn);
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

enum ds_err
ds_store_secret_get(struct ds_store *s, const char *name, void *buf,
    size_t *len)
{
	MDB_txn *txn;
	MDB_val k, v;
	enum ds_err e = DS_OK;
	int rc;

	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	rc = mdb_get(txn, s->secrets, &k, &v);
	if (rc == MDB_NOTFOUND)
		e = DS_ENOTFOUND;
	else if (rc != 0)
		e = ds_mdb_err(__func__, "mdb_get", rc);
	else if (v.mv_size > *len)
		e = DS_ETOOBIG;
	else {
		memcpy(buf, v.mv_data, v.mv_size);
		*len = v.mv_size;
	}
	ds_rd_end(txn);
	return e;
}

enum ds_err
ds_store_secret_set(struct ds_store *s, const char *name, const void *val,
    size_t len)
{
	MDB_txn *txn;
	MDB_val k, v;
	enum ds_err e;
	int rc;

	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	v.mv_data = (void *)val;
	v.mv_size = len;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((rc = mdb_put(txn, s->secrets, &k, &v, 0)) != 0) {
		mdb_txn_abort(txn);
		return ds_mdb_err(__func__, "mdb_put", rc);
	}
	return ds_txn_commit_sync(s, txn);
}
