/*
 * metrics.c: the shared counters file and its text exposition (metrics.h).
 *
 * The file lives in the run directory (scripts/run: DATA/run/metrics, the
 * systemd unit: /run/ds-fcgi/metrics) and starts from zero with the pool.
 * The first worker to come creates it under an flock(), the others find it
 * made. A slot is claimed by swapping its owner pid in atomically, so two
 * workers starting at once never share one.
 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fcgi-app/log.h"
#include "fcgi-app/metrics.h"

#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ADD(x, n)	__atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)

static struct dsm_file	*file;		/* the mapping (or private memory) */
static struct dsm_slot	*me;		/* this process's slot */

static const char *const methods[DSM_METHODS] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"
};

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Is the process pid alive? (EPERM: alive, another user's.) */
static int
alive(int32_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/*
 * Maps path, making it if it is new. Returns the mapping, or NULL after
 * logging why (the caller falls back to private memory).
 */
static struct dsm_file *
map_file(const char *path)
{
	struct dsm_file *f = NULL;
	struct stat st;
	void *p;
	int fd;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		ds_app_log("open %s: %s", path, strerror(errno));
		return NULL;
	}
	while (flock(fd, LOCK_EX) == -1)
		if (errno != EINTR) {
			ds_app_log("flock %s: %s", path, strerror(errno));
			goto out;
		}
	if (fstat(fd, &st) == -1) {
		ds_app_log("fstat %s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size == 0 && ftruncate(fd, sizeof(*f)) == -1) {
		ds_app_log("ftruncate %s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size != 0 && st.st_size != (off_t)sizeof(*f)) {
		ds_app_log("%s is not a metrics file of this version "
		    "(%lld bytes); remove it", path, (long long)st.st_size);
		goto out;
	}
	p = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		ds_app_log("mmap %s: %s", path, strerror(errno));
		goto out;
	}
	f = p;
	if (st.st_size == 0) {
		f->size = sizeof(*f);
		f->nslots = DSM_SLOTS;
		f->created_ms = now_ms();
		memcpy(f->magic, DSM_MAGIC, sizeof(f->magic));
	} else if (memcmp(f->magic, DSM_MAGIC, sizeof(f->magic)) != 0 ||
	    f->size != sizeof(*f) || f->nslots != DSM_SLOTS) {
		ds_app_log("%s is not a metrics file of this version; "
		    "remove it", path);
		munmap(p, sizeof(*f));
		f = NULL;
	}
out:
	/*
	 * Unlock by hand: the mapping holds the open file, and with it the
	 * lock, long after the descriptor is closed.
	 */
	flock(fd, LOCK_UN);
	close(fd);
	return f;
}

/* Takes a slot whose owner died, else a free one; NULL: all taken. */
static struct dsm_slot *
claim(struct dsm_file *f, int32_t pid)
{
	struct dsm_slot *s;
	int32_t owner;
	int pass;

	for (pass = 0; pass < 2; pass++)
		for (s = f->slot; s < f->slot + DSM_SLOTS; s++) {
			owner = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);
			if (pass == 0 ? owner == 0 || alive(owner) :
			    owner != 0)
				continue;
			if (!__atomic_compare_exchange_n(&s->pid, &owner, pid,
			    0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
				continue;
			/* The gauges were the dead owner's. */
			memset(s->gauge, 0, sizeof(s->gauge));
			ADD(f->starts, 1);
			if (pass == 0)
				ADD(f->restarts, 1);
			return s;
		}
	return NULL;
}

int
ds_metrics_open(const char *path)
{
	struct dsm_file *f = NULL;
	struct dsm_slot *s = NULL;
	int shared = 0;

	if (path && (f = map_file(path)) != NULL) {
		if ((s = claim(f, (int32_t)getpid())) != NULL)
			shared = 1;
		else {
			ADD(f->no_slot, 1);
			ds_app_log("every slot of %s is taken; this worker's "
			    "counts stay private", path);
			munmap(f, sizeof(*f));
			f = NULL;
		}
	}
	if (f == NULL) {
		/* Anonymous memory comes zeroed. */
		f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (f == MAP_FAILED) {
			ds_app_log("mmap: %s", strerror(errno));
			return -1;
		}
		memcpy(f->magic, DSM_MAGIC, sizeof(f->magic));
		f->size = sizeof(*f);
		f->nslots = DSM_SLOTS;
		f->created_ms = now_ms();
		s = claim(f, (int32_t)getpid());
	}
	file = f;
	me = s;
	ds_store_stats_attach(&me->store);
	return shared ? 0 : -1;
}

void
ds_metrics_close(void)
{
	if (me == NULL)
		return;
	ds_store_stats_attach(NULL);
	memset(me->gauge, 0, sizeof(me->gauge));
	__atomic_store_n(&me->pid, 0, __ATOMIC_RELEASE);
	me = NULL;
}

void
ds_metrics_request(const char *method, int status)
{
	int m, c;

	if (me == NULL)
		return;
	for (m = 0; m < DSM_METHODS - 1; m++)
		if (method && strcmp(method, methods[m]) == 0)
			break;
	c = status / 100 - 1;
	if (c < 0 || c >= DSM_CLASSES)
		c = DSM_CLASSES - 1;
	ADD(me->requests[m][c], 1);
}

void
ds_metrics_bytes_read(size_t n)
{
	if (me)
		ADD(me->bytes_read, n);
}

void
ds_metrics_notify_pub(void)
{
	if (me)
		ADD(me->notify_pubs, 1);
}

void
ds_metrics_read_cut(void)
{
	if (me)
		ADD(me->reads_cut, 1);
}

void
ds_metrics_gauge_add(enum ds_gauge g, int delta)
{
	if (me)
		ADD(me->gauge[g], delta);
}

void
ds_metrics_gauge_set(enum ds_gauge g, int value)
{
	if (me)
		__atomic_store_n(&me->gauge[g], value, __ATOMIC_RELAXED);
}

/* ---- the text exposition ---------------------------------------------- */

/* The sums of every slot; gauges of live owners only. */
struct sums {
	uint64_t		requests[DSM_METHODS][DSM_CLASSES];
	uint64_t		bytes_read;
	uint64_t		notify_pubs;
	uint64_t		reads_cut;
	struct ds_store_stats	st;
	int64_t			gauge[DS_G_COUNT];
	unsigned		workers;
};

static void
sum_slots(struct sums *t)
{
	const struct dsm_slot *s;
	const struct ds_store_stats *a;
	int32_t pid;
	int i, j;

	memset(t, 0, sizeof(*t));
	for (s = file->slot; s < file->slot + DSM_SLOTS; s++) {
		for (i = 0; i < DSM_METHODS; i++)
			for (j = 0; j < DSM_CLASSES; j++)
				t->requests[i][j] += LOAD(s->requests[i][j]);
		t->bytes_read += LOAD(s->bytes_read);
		t->notify_pubs += LOAD(s->notify_pubs);
		t->reads_cut += LOAD(s->reads_cut);
		a = &s->store;
		t->st.appends += LOAD(a->appends);
		t->st.bytes_appended += LOAD(a->bytes_appended);
		t->st.batches += LOAD(a->batches);
		for (i = 0; i < DS_BATCH_BUCKETS; i++)
			t->st.batch_le[i] += LOAD(a->batch_le[i]);
		t->st.creates += LOAD(a->creates);
		t->st.deletes += LOAD(a->deletes);
		t->st.expiries += LOAD(a->expiries);
		for (i = 0; i < DS_SYNC_KINDS; i++) {
			t->st.syncs[i] += LOAD(a->syncs[i]);
			t->st.sync_us[i] += LOAD(a->sync_us[i]);
			for (j = 0; j < DS_FSYNC_BUCKETS; j++)
				t->st.sync_le[i][j] += LOAD(a->sync_le[i][j]);
		}
		pid = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);
		if (!alive(pid))
			continue;
		t->workers++;
		for (i = 0; i < DS_G_COUNT; i++)
			t->gauge[i] += LOAD(s->gauge[i]);
	}
}

static void
head(FILE *o, const char *name, const char *type, const char *help)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
one(FILE *o, const char *name, const char *type, const char *help,
    uint64_t v)
{
	head(o, name, type, help);
	fprintf(o, "%s %" PRIu64 "\n", name, v);
}

/* A histogram's series from non-cumulative buckets; scale divides. */
static void
histogram(FILE *o, const char *name, const char *label,
    const uint64_t *bounds, const uint64_t *le, size_t n, uint64_t count,
    uint64_t sum, double scale)
{
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		cum += le[i];
		fprintf(o, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name,
		    label, *label ? "," : "", (double)bounds[i] / scale, cum);
	}
	fprintf(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, label,
	    *label ? "," : "", count);
	fprintf(o, "%s_sum%s%s%s %.*f\n", name, *label ? "{" : "", label,
	    *label ? "}" : "", scale == 1 ? 0 : 6, (double)sum / scale);
	fprintf(o, "%s_count%s%s%s %" PRIu64 "\n", name, *label ? "{" : "",
	    label, *label ? "}" : "", count);
}

char *
ds_metrics_text(struct ds_store *store, size_t *len)
{
	static const uint64_t sync_bounds[] = { DS_FSYNC_BOUNDS_US };
	static const uint64_t batch_bounds[] = { DS_BATCH_BOUNDS };
	static const char *const kinds[DS_SYNC_KINDS] = { "segment", "lmdb" };
	struct sums t;
	char *buf = NULL, label[32];
	uint64_t map = 0, used = 0;
	FILE *o;
	int i, j;

	if (file == NULL || (o = open_memstream(&buf, len)) == NULL)
		return NULL;
	sum_slots(&t);
	head(o, "ds_http_requests_total", "counter",
	    "Requests answered, by method and status class.");
	for (i = 0; i < DSM_METHODS; i++)
		for (j = 0; j < DSM_CLASSES; j++)
			fprintf(o, "ds_http_requests_total{method=\"%s\","
			    "code=\"%dxx\"} %" PRIu64 "\n", methods[i], j + 1,
			    t.requests[i][j]);
	one(o, "ds_read_bytes_total", "counter",
	    "Stream bytes answered to catch-up, long-poll and SSE reads.",
	    t.bytes_read);
	one(o, "ds_appended_bytes_total", "counter",
	    "Bytes appended to streams (as stored).", t.st.bytes_appended);
	one(o, "ds_appends_total", "counter",
	    "Appends stored (producer retries not counted).", t.st.appends);
	one(o, "ds_streams_created_total", "counter",
	    "Streams and forks created.", t.st.creates);
	one(o, "ds_streams_deleted_total", "counter",
	    "Streams deleted by request.", t.st.deletes);
	one(o, "ds_streams_expired_total", "counter",
	    "Streams dropped at their TTL or Expires-At.", t.st.expiries);
	head(o, "ds_fsyncs_total", "counter",
	    "fsyncs: segment (append data, or the flush shared by appends "
	    "written into segments' room), lmdb (metadata commit).");
	for (i = 0; i < DS_SYNC_KINDS; i++)
		fprintf(o, "ds_fsyncs_total{file=\"%s\"} %" PRIu64 "\n",
		    kinds[i], t.st.syncs[i]);
	head(o, "ds_fsync_duration_seconds", "histogram",
	    "Time an fsync took.");
	for (i = 0; i < DS_SYNC_KINDS; i++) {
		snprintf(label, sizeof(label), "file=\"%s\"", kinds[i]);
		histogram(o, "ds_fsync_duration_seconds", label, sync_bounds,
		    t.st.sync_le[i], DS_FSYNC_BUCKETS - 1, t.st.syncs[i],
		    t.st.sync_us[i], 1e6);
	}
	head(o, "ds_append_batch_size", "histogram",
	    "Appends written with one write and one sync.");
	histogram(o, "ds_append_batch_size", "", batch_bounds, t.st.batch_le,
	    DS_BATCH_BUCKETS - 1, t.st.batches, t.st.appends, 1);
	one(o, "ds_longpolls_waiting", "gauge",
	    "Long-poll reads waiting for data.",
	    (uint64_t)(t.gauge[DS_G_LONGPOLL] > 0 ? t.gauge[DS_G_LONGPOLL] : 0));
	one(o, "ds_sse_readers", "gauge", "SSE readers connected.",
	    (uint64_t)(t.gauge[DS_G_SSE] > 0 ? t.gauge[DS_G_SSE] : 0));
	one(o, "ds_notify_publishes_total", "counter",
	    "Appends published to ds-notify (only to streams a worker "
	    "waits on).", t.notify_pubs);
	one(o, "ds_reads_cut_total", "counter",
	    "Catch-up answers sent from the segment files and cut short: "
	    "retention trimmed past them meanwhile, or the front server "
	    "failed (the client reads again).", t.reads_cut);
	one(o, "ds_notifier_connected", "gauge",
	    "Workers connected to ds-notify (compare with ds_workers).",
	    (uint64_t)(t.gauge[DS_G_NOTIFIER] > 0 ? t.gauge[DS_G_NOTIFIER] : 0));
	one(o, "ds_workers", "gauge", "ds-fcgi worker processes alive.",
	    t.workers);
	one(o, "ds_worker_starts_total", "counter",
	    "Worker processes started since the pool started.",
	    LOAD(file->starts));
	one(o, "ds_worker_restarts_total", "counter",
	    "Workers started in place of one that died.",
	    LOAD(file->restarts));
	if (store && ds_store_space(store, &map, &used) == DS_OK) {
		one(o, "ds_lmdb_map_size_bytes", "gauge",
		    "Size of the LMDB map (the metadata's limit).", map);
		one(o, "ds_lmdb_map_used_bytes", "gauge",
		    "Bytes of the LMDB map in use.", used);
		one(o, "ds_lmdb_map_free_bytes", "gauge",
		    "Bytes of the LMDB map not yet used.",
		    map > used ? map - used : 0);
	}
	if (fclose(o) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
