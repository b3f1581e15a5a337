/*
 * record.c: stream records and producer state in LMDB: the record's
 * encoding, and getting, putting and removing records by path or by id.
 */
#include <inttypes.h>
#include <stdint.h>

#include "store/store_int.h"

/*
 * Version 2 adds the retention fields (struct rec_ext) after the fixed
 * part; a version 1 record decodes as a stream never trimmed.
 */
#define REC_VERSION 2

struct rec_fixed {
	uint32_t	version;
	uint32_t	flags;
	uint64_t	id;
	uint64_t	base;
	uint64_t	tail;
	uint64_t	ttl_s;
	int64_t		expires_ms;
	int64_t		access_ms;
	int64_t		created_ms;
	uint64_t	src_id;
	uint64_t	refs;
	uint64_t	closer_epoch;
	uint64_t	closer_seq;
	uint16_t	ctypelen;
	uint16_t	seqlen;
	uint16_t	closerlen;
	uint16_t	pad;
};

struct rec_ext {
	uint64_t	first;
	uint64_t	prev_first;
	int64_t		first_ms;
	uint64_t	first_txn;
	uint64_t	idx_off;
	int64_t		idx_ms;
};

/*
 * Encodes r into buf. Returns the length, or 0 when it does not fit (the
 * string limits in store.h make that impossible for DS_REC_BUFSZ).
 */
size_t
ds_rec_encode(const struct ds_rec *r, char *buf, size_t bufsz)
{
	struct rec_fixed f;
	struct rec_ext x;
	size_t ctlen = strlen(r->info.ctype), n;

	memset(&f, 0, sizeof(f));
	f.version = REC_VERSION;
	f.flags = r->info.flags;
	f.id = r->info.id;
	f.base = r->info.base;
	f.tail = r->info.tail;
	f.ttl_s = r->info.ttl_s;
	f.expires_ms = r->info.expires_ms;
	f.access_ms = r->info.access_ms;
	f.created_ms = r->created_ms;
	f.src_id = r->info.src_id;
	f.refs = r->refs;
	f.closer_epoch = r->closer_epoch;
	f.closer_seq = r->closer_seq;
	f.ctypelen = (uint16_t)ctlen;
	f.seqlen = (uint16_t)r->seqlen;
	f.closerlen = (uint16_t)r->closerlen;
	memset(&x, 0, sizeof(x));
	x.first = r->first;
	x.prev_first = r->prev_first;
	x.first_ms = r->first_ms;
	x.first_txn = r->first_txn;
	x.idx_off = r->idx_off;
	x.idx_ms = r->idx_ms;
	n = sizeof(f) + sizeof(x) + ctlen + r->seqlen + r->closerlen;
	if (n > bufsz || ctlen > DS_CTYPE_MAX || r->seqlen > DS_SEQ_MAX ||
	    r->closerlen > DS_PRODUCER_MAX)
		return 0;
	memcpy(buf, &f, sizeof(f));
	buf += sizeof(f);
	memcpy(buf, &x, sizeof(x));
	buf += sizeof(x);
	memcpy(buf, r->info.ctype, ctlen);
	memcpy(buf + ctlen, r->seq, r->seqlen);
	memcpy(buf + ctlen + r->seqlen, r->closer, r->closerlen);
	return n;
}

/* Decodes v into r. Returns 0, or -1 for a malformed record. */
int
ds_rec_decode(const MDB_val *v, struct ds_rec *r)
{
	struct rec_fixed f;
	struct rec_ext x;
	const char *p = v->mv_data;
	size_t xlen;

	if (v->mv_size < sizeof(f))
		return -1;
	memcpy(&f, p, sizeof(f));
	xlen = f.version == 2 ? sizeof(x) : 0;
	if ((f.version != 1 && f.version != 2) ||
	    f.ctypelen > DS_CTYPE_MAX || f.seqlen > DS_SEQ_MAX ||
	    f.closerlen > DS_PRODUCER_MAX || v->mv_size != sizeof(f) + xlen +
	    f.ctypelen + f.seqlen + f.closerlen)
		return -1;
	memset(&x, 0, sizeof(x));
	memcpy(&x, p + sizeof(f), xlen);
	memset(r, 0, sizeof(*r));
	r->first = x.first;
	r->prev_first = x.prev_first;
	r->first_ms = x.first_ms;
	r->first_txn = x.first_txn;
	r->idx_off = x.idx_off;
	r->idx_ms = x.idx_ms;
	r->info.id = f.id;
	r->info.base = f.base;
	r->info.tail = f.tail;
	r->info.ttl_s = f.ttl_s;
	r->info.expires_ms = f.expires_ms;
	r->info.access_ms = f.access_ms;
	r->info.flags = f.flags;
	r->created_ms = f.created_ms;
	r->info.src_id = f.src_id;
	r->refs = f.refs;
	r->closer_epoch = f.closer_epoch;
	r->closer_seq = f.closer_seq;
	p += sizeof(f) + xlen;
	memcpy(r->info.ctype, p, f.ctypelen);
	p += f.ctypelen;
	memcpy(r->seq, p, f.seqlen);
	r->seqlen = f.seqlen;
	p += f.seqlen;
	memcpy(r->closer, p, f.closerlen);
	r->closerlen = f.closerlen;
	return 0;
}

/*
 * Reads the record at path within txn into r: DS_ENOTFOUND, or
 * DS_ECORRUPT (logged) when it does not decode.
 */
enum ds_err
ds_rec_get(struct ds_store *s, MDB_txn *txn, const char *path, struct ds_rec *r)
{
	MDB_val k, v;
	int rc;

	k.mv_data = (void *)path;
	k.mv_size = strlen(path);
	if (k.mv_size == 0 || k.mv_size > DS_PATH_MAX)
		return DS_ENOTFOUND;
	rc = mdb_get(txn, s->streams, &k, &v);
	if (rc == MDB_NOTFOUND)
		return DS_ENOTFOUND;
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_get", rc);
	if (ds_rec_decode(&v, r) == -1) {
		ds_log("%s: undecodable record", path);
		return DS_ECORRUPT;
	}
	return DS_OK;
}

/*
 * Finds the record of the stream with id into r, and its path: DS_ENOTFOUND
 * when no stream has the id (none, or its path holds another stream's
 * record), DS_ECORRUPT for an id entry too long for a path.
 */
enum ds_err
ds_rec_find_id(struct ds_store *s, MDB_txn *txn, uint64_t id, char *path,
    struct ds_rec *r)
{
	MDB_val k, v;
	enum ds_err e;
	int rc;

	k.mv_data = &id;
	k.mv_size = sizeof(id);
	if ((rc = mdb_get(txn, s->ids, &k, &v)) == MDB_NOTFOUND)
		return DS_ENOTFOUND;
	if (rc != 0)
		return ds_mdb_err(__func__, "mdb_get id", rc);
	if (v.mv_size > DS_PATH_MAX) {
		ds_log("stream %016" PRIx64 ": id entry too long", id);
		return DS_ECORRUPT;
	}
	memcpy(path, v.mv_data, v.mv_size);
	path[v.mv_size] = '\0';
	if ((e = ds_rec_get(s, txn, path, r)) == DS_OK && r->info.id != id)
		e = DS_ENOTFOUND;
	return e;
}

/* Finds a stream's record by id (the source of a fork): it must exist. */
enum ds_err
ds_rec_get_id(struct ds_store *s, MDB_txn *txn, uint64_t id, char *path,
    struct ds_rec *r)
{
	enum ds_err e;

	if ((e = ds_rec_find_id(s, txn, id, path, r)) == DS_ENOTFOUND) {
		ds_log("stream %016" PRIx64 " has no record", id);
		e = DS_ECORRUPT;
	}
	return e;
}

/* Stores r at path within txn; DS_ETOOBIG when it does not encode. */
enum ds_err
ds_rec_put(struct ds_store *s, MDB_txn *txn, const char *path,
    const struct ds_rec *r)
{
	char buf[DS_REC_BUFSZ];
	MDB_val k, v;
	int rc;

	k.mv_data = (void *)path;
	k.mv_size = strlen(path);
	v.mv_data = buf;
	if ((v.mv_size = ds_rec_encode(r, buf, sizeof(buf))) == 0)
		return DS_ETOOBIG;
	if ((rc = mdb_put(txn, s->streams, &k, &v, 0)) != 0)
		return ds_mdb_err(__func__, "mdb_put", rc);
	return DS_OK;
}

/*
 * Deletes the keys of dbi that start with the plen bytes of prefix and,
 * when end is given, sort below its elen bytes.
 */
enum ds_err
ds_del_range(MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t plen,
    const void *end, size_t elen)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	if ((rc = mdb_cursor_open(txn, dbi, &c)) != 0)
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	k.mv_data = (void *)prefix;
	k.mv_size = plen;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size >= plen &&
	    memcmp(k.mv_data, prefix, plen) == 0 && (end == NULL ||
	    (k.mv_size >= elen && memcmp(k.mv_data, end, elen) < 0))) {
		if ((rc = mdb_cursor_del(c, 0)) != 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
		if (rc == MDB_NOTFOUND || rc == EINVAL)
			rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "cursor", rc);
	return DS_OK;
}

/*
 * Deletes the keys of dbi that start with the 8-byte id and, when below is
 * given, whose next 8 bytes (a big-endian position) are below *below.
 */
enum ds_err
ds_del_prefix(MDB_txn *txn, MDB_dbi dbi, uint64_t id, const uint64_t *below)
{
	unsigned char key[16];

	memcpy(key, &id, 8);
	if (below)
		ds_be64_put(key + 8, *below);
	return ds_del_range(txn, dbi, key, 8, below ? key : NULL, 16);
}

/* v as 8 big-endian bytes at p, so that keys sort as the numbers do. */
void
ds_be64_put(void *p, uint64_t v)
{
	unsigned char *b = p;
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* The number ds_be64_put() wrote at p. */
uint64_t
ds_be64_get(const void *p)
{
	const unsigned char *b = p;
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

/*
 * Removes a stream's record, its id entry, its producer states and its
 * index points within txn. The caller commits, then unlinks the segment.
 */
enum ds_err
ds_rec_remove(struct ds_store *s, MDB_txn *txn, const char *path, uint64_t id)
{
	MDB_val k;
	enum ds_err e;
	int rc;

	k.mv_data = (void *)path;
	k.mv_size = strlen(path);
	if ((rc = mdb_del(txn, s->streams, &k, NULL)) != 0)
		return ds_mdb_err(__func__, "mdb_del stream", rc);
	k.mv_data = &id;
	k.mv_size = sizeof(id);
	if ((rc = mdb_del(txn, s->ids, &k, NULL)) != 0 && rc != MDB_NOTFOUND)
		return ds_mdb_err(__func__, "mdb_del id", rc);
	if ((e = ds_del_prefix(txn, s->producers, id, NULL)) != DS_OK)
		return e;
	return ds_del_prefix(txn, s->times, id, NULL);
}

/* Key of a producer's state: the stream id, then the producer id. */
size_t
ds_producer_key(uint64_t id, const char *pid, size_t pidlen, char *buf)
{
	memcpy(buf, &id, 8);
	memcpy(buf + 8, pid, pidlen);
	return 8 + pidlen;
}
