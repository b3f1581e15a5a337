/*
 * chain.c: fork chains (PROTOCOL 4.2). Builds the chain of levels a fork
 * reads through, finds record ends in it, resolves a fork point, and reads
 * across levels, stitching inherited and own data into one answer.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/store_int.h"

/*
 * Builds the chain of r up to end. A plain stream is one level and needs no
 * transaction; a fork reads its sources in the read snapshot rtxn that r
 * came from, or (rtxn NULL) in one of its own.
 */
enum ds_err
ds_chain_build(struct ds_store *s, MDB_txn *rtxn, const struct ds_rec *r,
    uint64_t end, struct ds_chain *c)
{
	char spath[DS_PATH_MAX + 1];
	struct ds_rec cur = *r, src;
	MDB_txn *txn = rtxn;
	enum ds_err e = DS_OK;

	c->n = 1;
	c->lv[0].id = r->info.id;
	c->lv[0].base = r->info.base;
	c->lv[0].end = end;
	c->lv[0].first = ds_own_first(r);
	if (r->info.src_id != 0 && txn == NULL &&
	    (e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	while (cur.info.src_id != 0) {
		if (c->n == DS_CHAIN_MAX) {
			ds_log("stream %016" PRIx64 ": fork chain deeper than "
			    "%d", r->info.id, DS_CHAIN_MAX);
			e = DS_ECORRUPT;
			break;
		}
		if ((e = ds_rec_get_id(s, txn, cur.info.src_id, spath, &src)) !=
		    DS_OK)
			break;
		c->lv[c->n].id = src.info.id;
		c->lv[c->n].base = src.info.base;
		c->lv[c->n].first = ds_own_first(&src);
		/*
		 * A fork of a fork may branch below its source's own
		 * range: each level serves at most up to the one above.
		 */
		c->lv[c->n].end = cur.info.base < c->lv[c->n - 1].end ?
		    cur.info.base : c->lv[c->n - 1].end;
		c->n++;
		cur = src;
	}
	if (txn && txn != rtxn)
		ds_rd_end(txn);
	return e;
}

/*
 * The earliest position the chain serves whole: the own level's trimmed
 * start, or, while a level keeps all it serves, that of the level below
 * (a fork sees what its source's retention keeps).
 */
uint64_t
ds_chain_first(const struct ds_chain *c)
{
	int i;

	for (i = 0; i < c->n; i++) {
		if (c->lv[i].first > c->lv[i].base || i == c->n - 1)
			return c->lv[i].first < c->lv[i].end ? c->lv[i].first :
			    c->lv[i].end;
	}
	return 0;
}

/* The level that serves position p (p below the chain's end). */
static const struct ds_level *
chain_level(const struct ds_chain *c, uint64_t p)
{
	int i;

	for (i = 0; i < c->n - 1; i++)
		if (p >= c->lv[i].base)
			break;
	return &c->lv[i];
}

/*
 * Extends a record-framed read that ended inside a record up to the end of
 * that record (or the tail). *buf holds *len bytes read from file offset at.
 */
static enum ds_err
read_to_record_end(int fd, uint64_t at, uint64_t limit, char **buf,
    size_t *len)
{
	char *nb, *nl;
	size_t step;

	for (;;) {
		if ((nl = memrchr(*buf, '\n', *len)) != NULL) {
			*len = (size_t)(nl - *buf) + 1;
			return DS_OK;
		}
		if (at + *len >= limit)
			return DS_OK;	/* unframed tail: return as is */
		step = *len < 65536 ? 65536 : *len;
		if (step > limit - at - *len)
			step = (size_t)(limit - at - *len);
		if ((nb = realloc(*buf, *len + step)) == NULL)
			return DS_ENOMEM;
		*buf = nb;
		if (ds_seg_read(fd, at + *len, *buf + *len, step) == -1)
			return DS_EIO;
		/* Only the newly read part can hold the first record end. */
		if ((nl = memchr(*buf + *len, '\n', step)) != NULL) {
			*len = (size_t)(nl - *buf) + 1;
			return DS_OK;
		}
		*len += step;
	}
}

/*
 * Is p just after a record end (or at the start) in a message stream?
 * Level bases are record ends by construction.
 */
enum ds_err
ds_chain_boundary(struct ds_store *s, const struct ds_chain *c, uint64_t p)
{
	const struct ds_level *l;
	enum ds_err e = DS_OK;
	char ch;
	int i, fd;

	for (i = 0; i < c->n; i++)
		if (p == c->lv[i].base && (i == 0 || c->lv[i].base <
		    c->lv[i].end))
			return DS_OK;
	/* A trim ends on an append boundary, and what is below is gone. */
	if (p == ds_chain_first(c))
		return DS_OK;
	l = chain_level(c, p - 1);
	if ((fd = ds_seg_open(s, l->id, O_RDONLY)) == -1)
		return errno == ENOENT ? DS_ENOTFOUND : DS_EIO;
	if (ds_seg_read(fd, p - 1 - l->base, &ch, 1) == -1)
		e = DS_EIO;
	else if (ch != '\n')
		e = DS_EOFFSET;
	close(fd);
	return e;
}

/*
 * Reads up to max bytes at position p (below the chain's end) from the one
 * level that holds p. With msg the read is cut on a record end, and a
 * record longer than max comes whole. *data is malloc'd (caller frees).
 */
static enum ds_err
chain_read(struct ds_store *s, const struct ds_chain *c, uint64_t p, size_t max,
    int msg, char **data, size_t *len)
{
	const struct ds_level *l = chain_level(c, p);
	uint64_t n = l->end - p;
	char *buf = NULL;
	enum ds_err e = DS_OK;
	int fd;

	*data = NULL;
	*len = 0;
	if (msg && (e = ds_chain_boundary(s, c, p)) != DS_OK)
		return e;
	if (n > max)
		n = max;
	if ((fd = ds_seg_open(s, l->id, O_RDONLY)) == -1)
		return errno == ENOENT ? DS_ENOTFOUND : DS_EIO;
	if ((buf = malloc(n ? (size_t)n : 1)) == NULL) {
		e = DS_ENOMEM;
		goto out;
	}
	if (ds_seg_read(fd, p - l->base, buf, (size_t)n) == -1) {
		e = DS_EIO;
		goto out;
	}
	*len = (size_t)n;
	if (msg && (e = read_to_record_end(fd, p - l->base, l->end - l->base,
	    &buf, len)) != DS_OK)
		goto out;
	*data = buf;
	buf = NULL;
out:
	close(fd);
	free(buf);
	if (e != DS_OK)
		*len = 0;
	return e;
}

/*
 * Resolves a fork point (PROTOCOL 4.2): the offset at, refined by sub
 * bytes (byte streams) or sub records (message streams), within the source
 * chain c whose tail is tail. DS_EOFFSET when it falls past the tail, or
 * off a record end; DS_ETRIMMED below what the chain retains.
 */
enum ds_err
ds_resolve_fork_point(struct ds_store *s, const struct ds_chain *c,
    uint64_t tail, int msg, uint64_t at, uint64_t sub, uint64_t *out)
{
	char *data, *q;
	size_t len;
	enum ds_err e;
	uint64_t p;

	if (at > tail)
		return DS_EOFFSET;
	if (at < ds_chain_first(c))
		return DS_ETRIMMED;
	if (msg && at > 0 && (e = ds_chain_boundary(s, c, at)) != DS_OK)
		return e;
	if (!msg) {
		if (sub > tail - at)
			return DS_EOFFSET;
		*out = at + sub;
		return DS_OK;
	}
	for (p = at; sub > 0; p += len) {
		if (p >= tail)
			return DS_EOFFSET;
		if ((e = chain_read(s, c, p, 65536, 1, &data, &len)) != DS_OK)
			return e;
		for (q = data; sub > 0 &&
		    (q = memchr(q, '\n', len - (size_t)(q - data))) != NULL;
		    q++) {
			if (--sub == 0)
				*out = p + (uint64_t)(q - data) + 1;
		}
		free(data);
	}
	if (p == at)
		*out = at;
	return DS_OK;
}

/*
 * Opens the levels that hold [from, end) (below the chain's end) and says
 * where in their segments those bytes lie. Nothing is left open on error.
 * A segment shorter than the bytes it should hold is DS_EIO here, as it is
 * for a copied read: once the caller has begun a 200 it could only cut it
 * short, and the client would ask again and again.
 */
enum ds_err
ds_chain_spans(struct ds_store *s, const struct ds_chain *c, uint64_t from,
    uint64_t end, struct ds_spans *sp)
{
	const struct ds_level *l;
	struct stat st;
	uint64_t p, stop;
	int fd;

	sp->n = 0;
	sp->from = from;
	for (p = from; p < end; p = stop) {
		l = chain_level(c, p);
		stop = l->end < end ? l->end : end;
		if ((fd = ds_seg_open(s, l->id, O_RDONLY)) == -1) {
			ds_spans_close(sp);
			return errno == ENOENT ? DS_ENOTFOUND : DS_EIO;
		}
		if (fstat(fd, &st) == -1 ||
		    (uint64_t)st.st_size < stop - l->base) {
			ds_log("segment %016" PRIx64 ": shorter than its "
			    "committed bytes", l->id);
			close(fd);
			ds_spans_close(sp);
			return DS_EIO;
		}
		sp->sp[sp->n].fd = fd;
		sp->sp[sp->n].at = p - l->base;
		sp->sp[sp->n++].len = (size_t)(stop - p);
	}
	return DS_OK;
}

int
ds_span_read(const struct ds_span *sp, size_t skip, void *buf, size_t len)
{
	if (skip > sp->len || len > sp->len - skip)
		return -1;
	return ds_seg_read(sp->fd, sp->at + skip, buf, len);
}

void
ds_spans_close(struct ds_spans *sp)
{
	int i;

	for (i = 0; i < sp->n; i++)
		close(sp->sp[i].fd);
	sp->n = 0;
}

/*
 * Reads [from, tail) up to max bytes across the levels of a fork chain, so
 * that one response stitches inherited and own data (PROTOCOL 4.2). A
 * message stream's chunk still ends on a record end.
 */
enum ds_err
ds_read_stitched(struct ds_store *s, const struct ds_chain *c, uint64_t from,
    uint64_t tail, size_t max, int msg, char **data, size_t *len)
{
	char *part, *nb;
	size_t plen;
	enum ds_err e;

	if ((e = chain_read(s, c, from, max, msg, data, len)) != DS_OK)
		return e;
	while (*len < max && from + *len < tail) {
		e = chain_read(s, c, from + *len, max - *len, msg, &part,
		    &plen);
		if (e != DS_OK || (msg && *len + plen > max)) {
			free(part);
			break;	/* what we have is a whole answer */
		}
		if ((nb = realloc(*data, *len + plen)) == NULL) {
			free(part);
			break;
		}
		*data = nb;
		memcpy(*data + *len, part, plen);
		*len += plen;
		free(part);
	}
	return DS_OK;
}
