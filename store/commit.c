/*
 * commit.c: the shared commit. Writers of this process that have a change
 * to commit (a stream's batch of appends, a create) queue it here; the
 * first to come takes every change waiting and makes them one LMDB
 * transaction and one sync, and the others wait for it. A change that
 * fails (a stream replaced meanwhile, a path taken) is undone alone and the
 * rest commit (see commit_run). Batches whose bytes went into their
 * segment's room (segment.c) have been written but not flushed from the
 * device's cache: one flush, before the transaction, serves them all.
 *
 * LMDB's writer lock orders the shared commits of different processes;
 * while one process commits, the others' changes pile up in their queues,
 * so the transactions grow with the load.
 */
#include <pthread.h>

#include "store/store_int.h"

/*
 * Applies every change of the list to txn, each in a nested transaction
 * of its own, so that one that fails is undone alone. Returns DS_OK with
 * *any set when at least one applied, or the error that makes txn unusable.
 */
static enum ds_err
apply_nested(struct ds_store *s, MDB_txn *txn, struct ds_commit *list,
    int *any)
{
	struct ds_commit *c;
	MDB_txn *child;
	int rc;

	*any = 0;
	for (c = list; c; c = c->next) {
		if ((rc = mdb_txn_begin(s->env, txn, 0, &child)) != 0)
			return ds_mdb_err(__func__, "mdb_txn_begin nested", rc);
		if ((c->e = c->apply(s, child, c->arg)) != DS_OK) {
			mdb_txn_abort(child);
			continue;
		}
		if ((rc = mdb_txn_commit(child)) != 0) {
			c->e = DS_OK;	/* the parent is unusable now */
			return ds_mdb_err(__func__, "mdb_txn_commit nested",
			    rc);
		}
		*any = 1;
	}
	return DS_OK;
}

/*
 * Makes the bytes of the list's batches that were written into room
 * durable before their commit: one flush (ds_seg_flush()) for them all,
 * unless one begun since the last of them was written has served already.
 * So the largest mark counts (DS_FLUSH_NOMARK, a flush begun from now, is
 * the largest there is).
 */
static enum ds_err
flush(struct ds_store *s, struct ds_commit *list)
{
	struct ds_commit *c;
	uint64_t mark = 0;
	int need = 0;

	for (c = list; c; c = c->next)
		if (c->flush) {
			need = 1;
			if (c->flush_mark > mark)
				mark = c->flush_mark;
		}
	if (need && ds_lanes_flush(s, mark) == -1) {
		ds_log("shared flush: %s", strerror(errno));
		return DS_EIO;
	}
	return DS_OK;
}

/*
 * Commits the list in one transaction (see above); each gets its ->e.
 *
 * The changes are applied to the transaction itself, and only when one
 * fails is it begun again with every change in a nested transaction of
 * its own (apply_nested), so that each result, failures included, comes
 * from the transaction that commits. LMDB allocates 3 MiB for each nested
 * transaction (a dirty list and a free list), which cost every batch an
 * mmap, page faults and a munmap (large blocks get their own mappings, see
 * main.c); failures are rare (a stream replaced, a path taken meanwhile).
 */
static void
commit_run(struct ds_store *s, struct ds_commit *list)
{
	struct ds_commit *c;
	MDB_txn *txn = NULL;
	enum ds_err e;
	uint64_t txnid;
	int rc, any = 1, committed;

	for (c = list; c; c = c->next)
		c->e = DS_OK;
	if ((e = flush(s, list)) != DS_OK)
		goto fail;
	if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK)
		goto fail;
	if ((e = ds_meta_reserve(s)) != DS_OK)
		goto fail;
	for (c = list; c; c = c->next)
		if ((c->e = c->apply(s, txn, c->arg)) != DS_OK)
			break;
	if (c != NULL) {
		/*
		 * Begun again from scratch: what the first attempt saw may
		 * have changed once it let go of the writer lock.
		 */
		mdb_txn_abort(txn);
		txn = NULL;
		for (c = list; c; c = c->next)
			c->e = DS_OK;
		if ((e = ds_txn_begin(s, 0, &txn)) != DS_OK ||
		    (e = ds_meta_reserve(s)) != DS_OK ||
		    (e = apply_nested(s, txn, list, &any)) != DS_OK)
			goto fail;
	}
	if (!any) {
		mdb_txn_abort(txn);
		return;
	}
	/*
	 * Committed, the changes are what every process reads: their
	 * owners may let go of their locks before the sync (see
	 * ds_commit), which another process's sync would cover as well.
	 */
	txnid = mdb_txn_id(txn);
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		e = ds_mdb_err(__func__, "mdb_txn_commit", rc);
		goto fail;
	}
	committed = 1;
	for (c = list; c; c = c->next)
		if (c->e == DS_OK && c->visible)
			c->visible(c->arg);
	e = DS_OK;
	if ((rc = ds_lanes_env_sync(s, txnid)) != 0) {
		ds_mdb_err(__func__, "mdb_env_sync", rc);
		e = DS_EIO;
	}
	for (c = list; c; c = c->next)
		if (c->e == DS_OK) {
			c->e = e;
			c->committed = committed;
		}
	return;
fail:
	if (txn)
		mdb_txn_abort(txn);
	for (c = list; c; c = c->next)
		if (c->e == DS_OK)
			c->e = e;
}

/*
 * Queues me and returns when it is committed (or failed). A waiter sleeps
 * on its own futex word (state): the leader wakes exactly the changes it
 * committed, and the first of those that queued meanwhile to lead next,
 * so no thread wakes for another's commit. It wakes them after letting go
 * of cq_mu, so that a woken thread does not sleep again on the mutex the
 * leader still holds; a change is freed by its owner as soon as its state
 * is DS_C_DONE, so the leader reads its next pointer before that store.
 */
void
ds_commit(struct ds_store *s, struct ds_commit *me)
{
	struct ds_commit *list, *c, *next, *lead;
	uint32_t st;

	me->e = DS_OK;
	me->committed = 0;
	me->next = NULL;
	__atomic_store_n(&me->state, DS_C_WAIT, __ATOMIC_RELAXED);
	pthread_mutex_lock(&s->cq_mu);
	*s->cq_tailp = me;
	s->cq_tailp = &me->next;
	if (s->cq_busy) {
		pthread_mutex_unlock(&s->cq_mu);
		while ((st = __atomic_load_n(&me->state, __ATOMIC_ACQUIRE)) ==
		    DS_C_WAIT)
			ds_futex_wait(&me->state, DS_C_WAIT, 0, 0);
		if (st == DS_C_DONE)
			return;
		/* DS_C_LEAD: cq_busy was left set for me. */
		pthread_mutex_lock(&s->cq_mu);
	}
	s->cq_busy = 1;
	list = s->cq;
	s->cq = NULL;
	s->cq_tailp = &s->cq;
	pthread_mutex_unlock(&s->cq_mu);
	commit_run(s, list);
	pthread_mutex_lock(&s->cq_mu);
	if ((lead = s->cq) == NULL)
		s->cq_busy = 0;
	pthread_mutex_unlock(&s->cq_mu);
	/* The next leader first: its commit is the one the others wait on. */
	if (lead) {
		__atomic_store_n(&lead->state, DS_C_LEAD, __ATOMIC_RELEASE);
		ds_futex_wake(&lead->state, 0);
	}
	for (c = list; c; c = next) {
		next = c->next;
		if (c == me)
			continue;
		/* Each reads its result (e, committed) after this store. */
		__atomic_store_n(&c->state, DS_C_DONE, __ATOMIC_RELEASE);
		ds_futex_wake(&c->state, 0);
	}
}
