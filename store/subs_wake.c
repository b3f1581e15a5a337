/*
 * subs_wake.c: the wake state machine of a subscription (PROTOCOL 7, 7.3).
 *
 * A subscription is idle (no wake_id), or has one wake out: generation
 * and wake_id name it. A webhook wake is sent by the one process that
 * issued it (sender) within send_until, and lives until its lease runs
 * out; a pull-wake wake waits for a claim, whose lease ends it when it
 * runs out. Every change is one write transaction, so that of many
 * processes stepping the same subscription exactly one issues each wake,
 * and a wake that is over (done, released, expired) is never current again:
 * generations only grow.
 */
#include <sys/random.h>

#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

enum step { STEP_NONE, STEP_EXPIRE, STEP_EVENT };

static void
wake_clear(struct ds_sub *sub)
{
	sub->wake_id[0] = sub->holder[0] = '\0';
	sub->lease_until = sub->send_until = 0;
	sub->sender = 0;
	sub->event_due = 0;
}

/* A new wake: the next generation, a fresh random wake id. */
static void
wake_new(struct ds_sub *sub)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[(DS_WAKEID_LEN - 2) / 2];
	size_t i;

	while (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		continue;
	wake_clear(sub);
	sub->generation++;
	sub->wake_id[0] = 'w';
	sub->wake_id[1] = '_';
	for (i = 0; i < sizeof(rnd); i++) {
		sub->wake_id[2 + 2 * i] = hex[rnd[i] >> 4];
		sub->wake_id[3 + 2 * i] = hex[rnd[i] & 15];
	}
	sub->wake_id[DS_WAKEID_LEN] = '\0';
}

/* When the current wake's lease (or webhook send window) ends. */
static int64_t
wake_end(const struct ds_sub *sub)
{
	if (sub->type == DS_SUB_PULL)
		return sub->holder[0] ? sub->lease_until : INT64_MAX;
	return sub->lease_until > sub->send_until ? sub->lease_until :
	    sub->send_until;
}

/*
 * What a step would do to sub now: clear an expired wake (STEP_EXPIRE,
 * possibly followed by a new one), write a due wake event (STEP_EVENT), or
 * nothing; *issue says a new wake is to be issued after that. *due: when
 * to look again (0: only after a change).
 */
static enum step
decide(const struct ds_sub *sub, const struct ds_sub_link *l, size_t n,
    int64_t now, int *issue, int64_t *due)
{
	enum step st = STEP_NONE;

	*issue = 0;
	*due = 0;
	if (sub->flags & DS_SUB_F_DELETED)
		return STEP_NONE;
	if (sub->wake_id[0]) {
		if (sub->type == DS_SUB_PULL && !sub->holder[0])
			return sub->event_due ? STEP_EVENT : STEP_NONE;
		if (now < wake_end(sub)) {
			*due = wake_end(sub);
			return STEP_NONE;
		}
		st = STEP_EXPIRE;
	}
	if (!ds_sub_pending(l, n))
		return st;
	if (now < sub->next_attempt_ms) {
		*due = sub->next_attempt_ms;
		return st;
	}
	*issue = 1;
	return st;
}

/* Reads sub and its links in txn (any kind). */
static enum ds_err
load_all(struct ds_store *s, MDB_txn *txn, const char *id,
    struct ds_sub *sub, struct ds_sub_link **l, size_t *n)
{
	enum ds_err e;

	*l = NULL;
	*n = 0;
	if ((e = ds_sub_load(s, txn, id, sub)) != DS_OK)
		return e;
	if (sub->flags & DS_SUB_F_DELETED)
		return DS_OK;
	return ds_sub_links(s, txn, sub->sid, l, n);
}

enum ds_err
ds_sub_step(struct ds_store *s, const char *id, int64_t now, uint64_t me,
    int64_t send_ms, int *issued, int64_t *due, struct ds_sub *out,
    struct ds_sub_link **links, size_t *nlinks)
{
	struct ds_sub_link *l = NULL;
	MDB_txn *txn;
	size_t n;
	enum ds_err e;
	enum step st;
	int issue;

	*issued = 0;
	*links = NULL;
	*nlinks = 0;
	/* Look first without the write lock: mostly there is nothing to do. */
	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	e = load_all(s, txn, id, out, &l, &n);
	ds_rd_end(txn);
	if (e != DS_OK)
		return e;
	st = decide(out, l, n, now, &issue, due);
	free(l);
	l = NULL;
	if (st == STEP_NONE && !issue)
		return DS_OK;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((e = load_all(s, txn, id, out, &l, &n)) != DS_OK)
		goto out;
	st = decide(out, l, n, now, &issue, due);
	if (st == STEP_NONE && !issue) {
		mdb_txn_abort(txn);
		free(l);
		return DS_OK;
	}
	if (st == STEP_EXPIRE)
		wake_clear(out);
	if (st == STEP_EVENT) {
		/* Anyone may write it: the writes are idempotent. */
		mdb_txn_abort(txn);
		*issued = 1;
		*links = l;
		*nlinks = n;
		return DS_OK;
	}
	if (issue) {
		wake_new(out);
		if (out->type == DS_SUB_WEBHOOK) {
			out->sender = me;
			out->send_until = now + send_ms;
			out->lease_until = now + (int64_t)out->lease_ttl_ms;
		} else
			out->event_due = 1;
	}
	if ((e = ds_sub_store(s, txn, id, out)) != DS_OK)
		goto out;
	if ((e = ds_txn_commit_sync(s, txn)) != DS_OK) {
		free(l);
		return e;
	}
	if (issue) {
		*issued = 1;
		*links = l;
		*nlinks = n;
	} else
		free(l);
	return DS_OK;
out:
	mdb_txn_abort(txn);
	free(l);
	return e;
}

/* Acks each link's position in l[0..n) that is past its stored one. */
static enum ds_err
ack_tails(struct ds_store *s, MDB_txn *txn, uint64_t sid,
    const struct ds_sub_link *l, size_t n)
{
	struct ds_link_rec lr;
	struct ds_sub_link *cur;
	size_t ncur, i, j;
	uint64_t id, tail;
	enum ds_err e;

	if ((e = ds_sub_links(s, txn, sid, &cur, &ncur)) != DS_OK)
		return e;
	for (i = 0; i < n && e == DS_OK; i++) {
		for (j = 0; j < ncur && strcmp(cur[j].path, l[i].path); j++)
			continue;
		if (j == ncur || cur[j].acked >= l[i].tail)
			continue;
		if ((e = ds_stream_tail(s, txn, l[i].path, &id, &tail)) !=
		    DS_OK)
			break;
		if (l[i].tail > tail)
			continue;	/* a stream created again since */
		memset(&lr, 0, sizeof(lr));
		lr.id = id;
		lr.acked = l[i].tail;
		lr.kind = cur[j].kind;
		e = ds_sub_link_put(s, txn, sid, l[i].path, &lr);
	}
	free(cur);
	return e;
}

static enum ds_err
pending_now(struct ds_store *s, MDB_txn *txn, uint64_t sid, int *pending)
{
	struct ds_sub_link *l;
	size_t n;
	enum ds_err e;

	if ((e = ds_sub_links(s, txn, sid, &l, &n)) != DS_OK)
		return e;
	*pending = ds_sub_pending(l, n);
	free(l);
	return DS_OK;
}

enum ds_err
ds_sub_sent(struct ds_store *s, const char *id, uint64_t gen,
    const char *wake_id, int outcome, int64_t retry_ms,
    const struct ds_sub_link *l, size_t n, int64_t now, int *pending)
{
	struct ds_sub *sub;
	MDB_txn *txn;
	enum ds_err e;

	*pending = 0;
	if ((sub = malloc(sizeof(*sub))) == NULL)
		return DS_ENOMEM;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto done;
	if ((e = ds_sub_load(s, txn, id, sub)) == DS_ENOTFOUND ||
	    (e == DS_OK && ((sub->flags & DS_SUB_F_DELETED) ||
	    sub->generation != gen || strcmp(sub->wake_id, wake_id) != 0))) {
		e = DS_OK;	/* deleted, or over already: nothing to record */
		goto out;
	}
	if (e != DS_OK)
		goto out;
	if (outcome == 0) {
		wake_clear(sub);
		sub->attempts++;
		sub->flags |= DS_SUB_F_FAILED;
		sub->next_attempt_ms = now + retry_ms;
	} else {
		sub->attempts = 0;
		sub->flags &= ~DS_SUB_F_FAILED;
		sub->next_attempt_ms = 0;
		sub->send_until = 0;
		sub->lease_until = now + (int64_t)sub->lease_ttl_ms;
		if (outcome == 2) {
			if ((e = ack_tails(s, txn, sub->sid, l, n)) != DS_OK)
				goto out;
			wake_clear(sub);
		}
	}
	if ((e = pending_now(s, txn, sub->sid, pending)) != DS_OK ||
	    (e = ds_sub_store(s, txn, id, sub)) != DS_OK)
		goto out;
	e = ds_txn_commit_sync(s, txn);
	goto done;
out:
	mdb_txn_abort(txn);
done:
	free(sub);
	return e;
}

enum ds_err
ds_sub_event_written(struct ds_store *s, const char *id, uint64_t gen)
{
	struct ds_sub *sub;
	MDB_txn *txn;
	enum ds_err e;

	if ((sub = malloc(sizeof(*sub))) == NULL)
		return DS_ENOMEM;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto done;
	if ((e = ds_sub_load(s, txn, id, sub)) != DS_OK ||
	    sub->generation != gen || !sub->event_due) {
		mdb_txn_abort(txn);
		goto done;
	}
	sub->event_due = 0;
	if ((e = ds_sub_store(s, txn, id, sub)) != DS_OK) {
		mdb_txn_abort(txn);
		goto done;
	}
	e = ds_txn_commit_sync(s, txn);
done:
	free(sub);
	return e == DS_ENOTFOUND ? DS_OK : e;
}

enum ds_err
ds_sub_claim(struct ds_store *s, const char *id, const char *worker,
    int64_t now, struct ds_sub *out, struct ds_sub_link **links,
    size_t *nlinks)
{
	struct ds_sub_link *l = NULL;
	MDB_txn *txn;
	size_t n;
	enum ds_err e;

	*links = NULL;
	*nlinks = 0;
	if (strlen(worker) > DS_HOLDER_MAX)
		return DS_ETOOBIG;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		return e;
	if ((e = load_all(s, txn, id, out, &l, &n)) != DS_OK)
		goto out;
	if (out->flags & DS_SUB_F_DELETED) {
		e = DS_ENOTFOUND;
		goto out;
	}
	if (out->type != DS_SUB_PULL) {
		e = DS_ESUBTYPE;
		goto out;
	}
	if (out->holder[0] && now < out->lease_until) {
		e = DS_ECLAIMED;
		goto out;
	}
	if (out->holder[0])
		wake_clear(out);	/* the lease ran out (PROTOCOL 7.3) */
	if (!ds_sub_pending(l, n)) {
		e = DS_ENOWORK;
		goto out;
	}
	if (!out->wake_id[0])
		wake_new(out);
	out->event_due = 0;
	memcpy(out->holder, worker, strlen(worker) + 1);
	out->lease_until = now + (int64_t)out->lease_ttl_ms;
	if ((e = ds_sub_store(s, txn, id, out)) != DS_OK)
		goto out;
	if ((e = ds_txn_commit_sync(s, txn)) != DS_OK) {
		free(l);
		return e;
	}
	*links = l;
	*nlinks = n;
	return DS_OK;
out:
	mdb_txn_abort(txn);
	free(l);
	return e;
}

/*
 * Is pos a place a reader may start from in the stream at path: in a JSON
 * stream, just after a message (a read from inside one answers 400)?
 */
static enum ds_err
ack_boundary(struct ds_store *s, MDB_txn *txn, const char *path, uint64_t pos)
{
	struct ds_rec r;
	struct ds_chain c;
	enum ds_err e;

	if ((e = ds_rec_get(s, txn, path, &r)) != DS_OK)
		return e == DS_ENOTFOUND ? DS_OK : e;	/* linked, not made */
	if (!(r.info.flags & DS_F_MSG) || pos == 0 || pos == r.info.tail)
		return DS_OK;
	if ((e = ds_chain_build(s, txn, &r, r.info.tail, &c)) != DS_OK)
		return e;
	if (pos < ds_chain_first(&c))
		return DS_OK;	/* trimmed: nothing to read there anyway */
	e = ds_chain_boundary(s, &c, pos);
	return e == DS_EOFFSET ? DS_EACKOFFSET : e;
}

/* Checks every ack against the links before any is applied. */
static enum ds_err
acks_check(struct ds_store *s, MDB_txn *txn, const struct ds_sub_link *l,
    size_t n, const struct ds_sub_ack *a, size_t na)
{
	size_t i, j;
	enum ds_err e;

	for (i = 0; i < na; i++) {
		for (j = 0; j < n && strcmp(l[j].path, a[i].path); j++)
			continue;
		if (j == n)
			return DS_ENOTLINKED;
		if (a[i].pos > l[j].tail)
			return DS_EACKOFFSET;
		if ((e = ack_boundary(s, txn, a[i].path, a[i].pos)) != DS_OK)
			return e;
	}
	return DS_OK;
}

enum ds_err
ds_sub_ack(struct ds_store *s, const char *id, const struct ds_sub_fence *f,
    const struct ds_sub_ack *a, size_t na, int64_t now, int *pending)
{
	struct ds_sub_link *l = NULL, *one;
	struct ds_sub *sub;
	MDB_txn *txn;
	size_t n, i;
	enum ds_err e;

	*pending = 0;
	if ((sub = malloc(sizeof(*sub))) == NULL)
		return DS_ENOMEM;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto done;
	if ((e = load_all(s, txn, id, sub, &l, &n)) != DS_OK)
		goto out;
	if (sub->flags & DS_SUB_F_DELETED)
		e = DS_ENOTFOUND;
	else if (sub->sid != f->sid)
		e = DS_ESTALE_TOKEN;
	else if (sub->type != (f->pull ? DS_SUB_PULL : DS_SUB_WEBHOOK))
		e = DS_ESUBTYPE;
	else if (!sub->wake_id[0] || f->tgen != sub->generation ||
	    f->gen != sub->generation ||
	    strcmp(f->wake_id, sub->wake_id) != 0 ||
	    (f->pull && !sub->holder[0]) || now >= wake_end(sub))
		e = DS_EFENCED;
	else if (!f->release)
		e = acks_check(s, txn, l, n, a, na);
	if (e != DS_OK)
		goto out;
	for (i = 0; i < na && !f->release; i++) {
		/* One link at a time, its position and the stream's. */
		struct ds_sub_link tmp;

		for (one = l; strcmp(one->path, a[i].path); one++)
			continue;
		tmp = *one;
		tmp.tail = a[i].pos;
		if ((e = ack_tails(s, txn, sub->sid, &tmp, 1)) != DS_OK)
			goto out;
	}
	if (f->done || f->release) {
		wake_clear(sub);
		sub->attempts = 0;
		sub->flags &= ~DS_SUB_F_FAILED;
	} else
		sub->lease_until = now + (int64_t)sub->lease_ttl_ms;
	if ((e = pending_now(s, txn, sub->sid, pending)) != DS_OK ||
	    (e = ds_sub_store(s, txn, id, sub)) != DS_OK)
		goto out;
	e = ds_txn_commit_sync(s, txn);
	goto done;
out:
	mdb_txn_abort(txn);
done:
	free(l);
	free(sub);
	return e;
}
