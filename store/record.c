/*
 * record.c: the stream record's encoding in LMDB.
 */
#include <stdint.h>

#include "store/store_int.h"

#define REC_VERSION 1

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

/*
 * Encodes r into buf. Returns the length, or 0 when it does not fit (the
 * string limits in store.h make that impossible for DS_REC_BUFSZ).
 */
size_t
ds_rec_encode(const struct ds_rec *r, char *buf, size_t bufsz)
{
	struct rec_fixed f;
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
	n = sizeof(f) + ctlen + r->seqlen + r->closerlen;
	if (n > bufsz || ctlen > DS_CTYPE_MAX || r->seqlen > DS_SEQ_MAX ||
	    r->closerlen > DS_PRODUCER_MAX)
		return 0;
	memcpy(buf, &f, sizeof(f));
	memcpy(buf + sizeof(f), r->info.ctype, ctlen);
	memcpy(buf + sizeof(f) + ctlen, r->seq, r->seqlen);
	memcpy(buf + sizeof(f) + ctlen + r->seqlen, r->closer, r->closerlen);
	return n;
}

/* Decodes v into r. Returns 0, or -1 for a malformed record. */
int
ds_rec_decode(const MDB_val *v, struct ds_rec *r)
{
	struct rec_fixed f;
	const char *p = v->mv_data;

	if (v->mv_size < sizeof(f))
		return -1;
	memcpy(&f, p, sizeof(f));
	if (f.version != REC_VERSION || f.ctypelen > DS_CTYPE_MAX ||
	    f.seqlen > DS_SEQ_MAX || f.closerlen > DS_PRODUCER_MAX ||
	    v->mv_size != sizeof(f) + f.ctypelen + f.seqlen + f.closerlen)
		return -1;
	memset(r, 0, sizeof(*r));
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
	p += sizeof(f);
	memcpy(r->info.ctype, p, f.ctypelen);
	p += f.ctypelen;
	memcpy(r->seq, p, f.seqlen);
	r->seqlen = f.seqlen;
	p += f.seqlen;
	memcpy(r->closer, p, f.closerlen);
	r->closerlen = f.closerlen;
	return 0;
}
