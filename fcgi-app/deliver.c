/*
 * deliver.c: the delivery thread every worker runs (PROTOCOL 7).
 *
 * It steps every subscription (ds_sub_step()) when this worker committed
 * an append or an ack that may have made work (ds_deliver_kick()), and
 * at least every TICK_MS for leases running out and retries falling due.
 * The store decides, in one write transaction, which process issues a
 * wake, so with many workers stepping at once each wake is issued once and
 * sent by the process that issued it; if that process dies the wake's
 * lease runs out and the next step of any worker issues a new generation.
 * A webhook is sent from a short-lived thread of its own (curl blocks for
 * up to its timeout); a pull-wake's wake events are appended to its wake
 * stream as producer "__ds/<sid>", epoch = generation, seq 0, so that
 * writing one again after a crash is a duplicate the store drops.
 */
#include <sys/random.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "fcgi-app/json.h"
#include "fcgi-app/log.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/subs.h"

#define TICK_MS		250
#define SEND_MS		15000	/* a send's window: curl's total timeout
				   (webhook.c) and some */
#define SENDS_MAX	32	/* webhook threads at once */

static struct ds_store		*store;
static const struct ds_cfg	*cfg;
static uint64_t			 me;		/* this process, for the store */
static pthread_mutex_t		 mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t		 cv;
static int			 kicked;
static atomic_int		 sends;
static atomic_int		 nsubs = 1;	/* subscriptions at the last look */
static _Atomic int64_t		 missing_logged; /* a wake stream missing */

/* A subscription was created here: kicks count from now on. */
void
ds_deliver_sub_added(void)
{
	atomic_store(&nsubs, 1);
}

/*
 * Wakes the delivery thread: this worker committed something that may
 * have made work. With no subscription at the last look, an append costs
 * one atomic load: a subscription created by another worker since then is
 * seen within a tick (it links streams at their tails, so it has no work
 * of its own to deliver at once).
 */
void
ds_deliver_kick(void)
{
	if (store == NULL || atomic_load(&nsubs) == 0)
		return;
	pthread_mutex_lock(&mu);
	kicked = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

/* One webhook to send: the wake's snapshot. */
struct send {
	char			 id[DS_SUBID_MAX + 1];
	struct ds_sub		 sub;
	struct ds_sub_link	*links;
	size_t			 n;
};

/*
 * The wait before retry number attempts + 1 (PROTOCOL 7.1): base doubling
 * per failure up to max, then +-20% jitter.
 */
static int64_t
backoff(uint32_t attempts)
{
	double ms = (double)cfg->retry_base_ms;
	uint32_t i;

	for (i = 0; i < attempts && ms < (double)cfg->retry_max_ms; i++)
		ms *= 2;
	if (ms > (double)cfg->retry_max_ms)
		ms = (double)cfg->retry_max_ms;
	ms *= 0.8 + 0.4 * ((double)(randombytes_uniform(10001)) / 10000.0);
	return (int64_t)ms;
}

/* The webhook body (PROTOCOL 7.1), malloc'd; NULL: no memory. */
static char *
webhook_body(const struct send *s, int64_t now)
{
	char url[DS_URL_MAX + DS_SUBID_MAX + 64], tok[128];
	json_t *doc, *links;
	char *body;

	snprintf(url, sizeof(url), "%s/__ds/subscriptions/%s/callback",
	    s->sub.base_url, s->id);
	ds_token_make(s->sub.sid, s->sub.generation, DS_TOKEN_CALLBACK, now,
	    tok);
	if ((links = ds_links_json(s->links, s->n, 1)) == NULL)
		return NULL;
	doc = json_pack("{s:s,s:s,s:I,s:o,s:s,s:s}", "subscription_id", s->id,
	    "wake_id", s->sub.wake_id, "generation",
	    (json_int_t)s->sub.generation, "streams", links, "callback_url",
	    url, "callback_token", tok);
	if (doc == NULL)
		return NULL;
	body = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return body;
}

static void *
send_one(void *arg)
{
	struct send *s = arg;
	char *body;
	long status = 0;
	int done = 0, ok = 0, pending = 0;
	int64_t now = ds_now_ms();
	enum ds_err e;

	if ((body = webhook_body(s, now)) != NULL) {
		ok = ds_webhook_send(s->sub.url, body, strlen(body),
		    cfg->webhook_loopback, &status, &done) == 0 &&
		    status >= 200 && status < 300;
		if (!ok && status)
			ds_app_log("webhook of %s answered %ld", s->id, status);
		free(body);
	}
	e = ds_sub_sent(store, s->id, s->sub.generation, s->sub.wake_id,
	    !ok ? 0 : done ? 2 : 1, backoff(s->sub.attempts), s->links, s->n,
	    ds_now_ms(), &pending);
	if (e != DS_OK)
		ds_app_log("subscription %s: %s", s->id, ds_strerror(e));
	if (pending || !ok)
		ds_deliver_kick();
	free(s->links);
	free(s);
	atomic_fetch_sub(&sends, 1);
	return NULL;
}

/*
 * Appends the wake events of a pull-wake wake to its wake stream (PROTOCOL
 * 7.2): one per stream with pending data. Returns 0 when they are there
 * (or can never be: the wake stream is closed), -1 to try again later (the
 * wake stream does not exist yet, say).
 */
static int
write_events(const char *id, const struct ds_sub *sub,
    const struct ds_sub_link *l, size_t n, int64_t now)
{
	struct ds_stream_info info;
	struct ds_producer p;
	struct ds_append a;
	struct ds_append_res res;
	char pid[64], *text, *msgs = NULL;
	size_t i, len, nmsg;
	json_t *arr, *ev;
	enum ds_err e;
	int rc = -1;

	if ((arr = json_array()) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (l[i].tail <= l[i].acked)
			continue;
		ev = json_pack("{s:s,s:s,s:s,s:I,s:I}", "type", "wake",
		    "subscription_id", id, "stream", l[i].path, "generation",
		    (json_int_t)sub->generation, "ts", (json_int_t)now);
		if (ev == NULL || json_array_append_new(arr, ev) == -1)
			goto out;
	}
	if (json_array_size(arr) == 0) {
		rc = 0;
		goto out;
	}
	if ((text = json_dumps(arr, JSON_COMPACT)) == NULL)
		goto out;
	if ((e = ds_store_stat(store, sub->wake_stream, now, &info)) != DS_OK) {
		/*
		 * Not there (yet): the event stays due and is written once
		 * the wake stream exists. Said once a minute at most.
		 */
		if (now - atomic_load(&missing_logged) >= 60000) {
			atomic_store(&missing_logged, now);
			ds_app_log("subscription %s: wake stream %s: %s; "
			    "its wake events wait for it", id,
			    sub->wake_stream, ds_strerror(e));
		}
		free(text);
		goto out;
	}
	memset(&a, 0, sizeof(a));
	a.id = info.id;
	a.ctype_ok = 1;
	if (info.flags & DS_F_MSG) {
		if (ds_json_split(text, strlen(text), 0, &msgs, &len, &nmsg) !=
		    DS_JSON_OK) {
			free(text);
			goto out;
		}
		a.body = msgs;
		a.len = len;
	} else {
		a.body = text;
		a.len = strlen(text);
	}
	snprintf(pid, sizeof(pid), "__ds/%" PRIu64, sub->sid);
	p.id = pid;
	p.idlen = strlen(pid);
	p.epoch = sub->generation;
	p.seq = 0;
	a.producer = &p;
	e = ds_store_append(store, sub->wake_stream, &a, now, &res);
	free(msgs);
	free(text);
	if (e == DS_OK && !res.duplicate)
		notify_publish(res.id);
	if (e != DS_OK)
		ds_app_log("subscription %s: wake stream %s: %s", id,
		    sub->wake_stream, ds_strerror(e));
	rc = e == DS_EIO || e == DS_ENOMEM || e == DS_EFULL ||
	    e == DS_ENOSPC || e == DS_EREPLACED ? -1 : 0;
out:
	json_decref(arr);
	return rc;
}

/*
 * Steps one subscription: next[0] (ms) is lowered to its due time,
 * next[1] counts the subscriptions seen.
 */
static int
step(const char *id, const struct ds_sub *sub, void *arg)
{
	int64_t *next = arg, due, now = ds_now_ms();
	struct ds_sub_link *l;
	struct send *s;
	pthread_t tid;
	size_t n;
	int issued;
	enum ds_err e;

	next[1]++;
	/*
	 * No webhook thread free (receivers that hang hold them for up to
	 * TOTAL_MS): webhook subscriptions wait for one, without issuing a
	 * wake this worker could not send; the others are stepped still.
	 */
	if (sub->type == DS_SUB_WEBHOOK && atomic_load(&sends) >= SENDS_MAX)
		return 0;
	if ((s = malloc(sizeof(*s))) == NULL)
		return 0;
	e = ds_sub_step(store, id, now, me, SEND_MS, &issued, &due,
	    &s->sub, &l, &n);
	if (e != DS_OK || !issued) {
		if (e != DS_OK && e != DS_ENOTFOUND)
			ds_app_log("subscription %s: %s", id, ds_strerror(e));
		if (due && due < *next)
			*next = due;
		free(s);
		return 0;
	}
	if (s->sub.type == DS_SUB_PULL) {
		if (write_events(id, &s->sub, l, n, now) == 0)
			ds_sub_event_written(store, id, s->sub.generation);
		else if (now + 1000 < *next)
			*next = now + 1000;
		free(l);
		free(s);
		return 0;
	}
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->links = l;
	s->n = n;
	atomic_fetch_add(&sends, 1);
	if (pthread_create(&tid, NULL, send_one, s) != 0 ||
	    pthread_detach(tid) != 0) {
		/* The wake's send window runs out; another step resends. */
		ds_app_log("cannot start a webhook thread");
		atomic_fetch_sub(&sends, 1);
		free(l);
		free(s);
	}
	return 0;
}

static void *
loop(void *arg)
{
	struct timespec ts;
	int64_t next[2], now;	/* when to look again; subscriptions seen */
	enum ds_err e;

	(void)arg;
	for (;;) {
		now = ds_now_ms();
		next[0] = now + TICK_MS;
		next[1] = 0;
		if ((e = ds_sub_foreach(store, step, next)) != DS_OK)
			ds_app_log("subscriptions: %s", ds_strerror(e));
		else
			atomic_store(&nsubs, next[1] > 0);
		if (next[0] < now + 10)
			next[0] = now + 10;
		clock_gettime(CLOCK_REALTIME, &ts);
		next[0] -= ds_now_ms();
		if (next[0] < 0)
			next[0] = 0;
		ts.tv_sec += next[0] / 1000;
		ts.tv_nsec += (long)(next[0] % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&mu);
		while (!kicked && pthread_cond_timedwait(&cv, &mu, &ts) == 0)
			continue;
		kicked = 0;
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

/* Starts the delivery thread. Returns 0, or -1 (logged). */
int
ds_deliver_start(struct ds_store *s, const struct ds_cfg *c)
{
	pthread_attr_t attr;
	pthread_t tid;

	while (me == 0)
		if (getrandom(&me, sizeof(me), 0) != (ssize_t)sizeof(me))
			me = 0;
	if (pthread_cond_init(&cv, NULL) != 0)
		return -1;
	store = s;
	cfg = c;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if ((errno = pthread_create(&tid, &attr, loop, NULL)) != 0) {
		ds_app_log("pthread_create: %s", strerror(errno));
		store = NULL;
		pthread_attr_destroy(&attr);
		return -1;
	}
	pthread_attr_destroy(&attr);
	return 0;
}
