/*
 * append.c: ds_store_append(), and the queues that make the batches of the
 * appends the lanes do not take.
 *
 * An append small enough goes to its stream's lane (lane.c), where the
 * appends of every process batch together. The others (a large one, one
 * whose lane another stream holds, all of them when there is no lane file)
 * batch with the appends of this process only: the threads that append to
 * one stream queue here; one of them, the leader, takes every append
 * waiting (up to BATCH_MAX appends or BATCH_BYTES bytes) and runs them as
 * one batch (batch.c). Then the leader wakes the others with their own
 * results and returns, and wakes the first append still queued to lead
 * the next batch (each waiter sleeps on its own condition variable, so no
 * other thread wakes). The segment flock() serialises the batches of
 * different processes and of the lanes.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

struct ds_aq {
	uint64_t		 id;
	struct pending		*head, **tailp;
	int			 busy;		/* a leader is at work */
	unsigned		 users;		/* threads referring to it */
	struct ds_aq		*next;
};

/* The queue of stream id in this process, created if missing. */
static struct ds_aq *
aq_get(struct ds_store *s, uint64_t id)
{
	struct ds_aq *q;

	for (q = s->aq; q; q = q->next)
		if (q->id == id)
			return q;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->id = id;
	q->tailp = &q->head;
	q->next = s->aq;
	s->aq = q;
	return q;
}

static void
aq_put(struct ds_store *s, struct ds_aq *q)
{
	struct ds_aq **pp;

	if (--q->users > 0)
		return;
	for (pp = &s->aq; *pp != q; pp = &(*pp)->next)
		;
	*pp = q->next;
	free(q);
}

enum ds_err
ds_store_append(struct ds_store *s, const char *path,
    const struct ds_append *req, int64_t now, struct ds_append_res *res)
{
	const struct ds_producer *p = req->producer;
	struct pending me, *batch, **bp;
	struct ds_aq *q;
	struct ds_rec r;
	uint64_t id;
	enum ds_err e;
	size_t n, bytes;

	memset(res, 0, sizeof(*res));
	if ((req->seq && req->seqlen > DS_SEQ_MAX) ||
	    (p && (p->idlen == 0 || p->idlen > DS_PRODUCER_MAX)))
		return DS_ETOOBIG;
	/*
	 * A caller that looked the stream up (and framed the body by it)
	 * names its id: the batch checks it under the segment lock, so a
	 * second lookup here would buy nothing.
	 */
	if (req->id)
		id = req->id;
	else if ((e = ds_lookup(s, path, now, &r)) != DS_OK)
		return e;
	else
		id = r.info.id;
	res->id = id;
	if (ds_lane_append(s, path, id, req, now, res, &e))
		return e;

	memset(&me, 0, sizeof(me));
	me.req = req;
	me.now = now;
	me.res = res;
	pthread_cond_init(&me.cv, NULL);
	pthread_mutex_lock(&s->aq_mu);
	if ((q = aq_get(s, id)) == NULL) {
		pthread_mutex_unlock(&s->aq_mu);
		return DS_ENOMEM;
	}
	q->users++;
	*q->tailp = &me;
	q->tailp = &me.next;
	while (!me.done) {
		if (q->busy) {
			pthread_cond_wait(&me.cv, &s->aq_mu);
			continue;
		}
		/* Lead: take what waits, oldest first, up to the caps. */
		q->busy = 1;
		batch = q->head;
		n = 0;
		bytes = 0;
		for (bp = &q->head; *bp && n < BATCH_MAX &&
		    (n == 0 || bytes + (*bp)->req->len <= BATCH_BYTES);
		    bp = &(*bp)->next) {
			n++;
			bytes += (*bp)->req->len;
		}
		q->head = *bp;
		*bp = NULL;
		if (q->head == NULL)
			q->tailp = &q->head;
		pthread_mutex_unlock(&s->aq_mu);
		ds_batch_run(s, path, q->id, batch);
		pthread_mutex_lock(&s->aq_mu);
		/*
		 * Under the mutex: no owner returns before it is let go.
		 * Wake exactly the batch's owners, and the next leader.
		 */
		for (; batch; batch = batch->next) {
			batch->done = 1;
			if (batch != &me)
				pthread_cond_signal(&batch->cv);
		}
		q->busy = 0;
		if (q->head)
			pthread_cond_signal(&q->head->cv);
	}
	aq_put(s, q);
	pthread_mutex_unlock(&s->aq_mu);
	pthread_cond_destroy(&me.cv);
	return me.e;
}
