/*
 * stats.c: what the store tells about itself: the counters of struct
 * ds_store_stats (see store.h), the LMDB map's use, and whether another
 * process has the store open.
 *
 * The counters cost a relaxed atomic add each, and the syncs a clock read
 * on each side (vDSO: no system call); nothing here takes a lock.
 */
#include <fcntl.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"

static struct ds_store_stats *stats;	/* set before threads start */

static const uint64_t sync_bounds[] = { DS_FSYNC_BOUNDS_US };
static const uint64_t batch_bounds[] = { DS_BATCH_BOUNDS };

#define ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)

void
ds_store_stats_attach(struct ds_store_stats *st)
{
	stats = st;
}

/* Index of the histogram bucket of v: the first bound at least v. */
static size_t
bucket(const uint64_t *bounds, size_t n, uint64_t v)
{
	size_t i;

	for (i = 0; i < n && v > bounds[i]; i++)
		;
	return i;
}

/* CLOCK_MONOTONIC in microseconds. */
int64_t
ds_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
count_sync(int kind, int64_t t0)
{
	uint64_t us = (uint64_t)(ds_mono_us() - t0);

	ADD(stats->syncs[kind], 1);
	ADD(stats->sync_us[kind], us);
	ADD(stats->sync_le[kind][bucket(sync_bounds,
	    sizeof(sync_bounds) / sizeof(sync_bounds[0]), us)], 1);
}

int
ds_stats_fdatasync(int fd)
{
	int64_t t0;
	int rc;

	if (stats == NULL)
		return fdatasync(fd);
	t0 = ds_mono_us();
	rc = fdatasync(fd);
	count_sync(DS_SYNC_DATA, t0);
	return rc;
}

int
ds_stats_env_sync(MDB_env *env)
{
	int64_t t0;
	int rc;

	if (stats == NULL)
		return mdb_env_sync(env, 1);
	t0 = ds_mono_us();
	rc = mdb_env_sync(env, 1);
	count_sync(DS_SYNC_META, t0);
	return rc;
}

void
ds_stats_batch(unsigned appends, uint64_t bytes)
{
	if (stats == NULL)
		return;
	ADD(stats->appends, appends);
	ADD(stats->bytes_appended, bytes);
	ADD(stats->batches, 1);
	ADD(stats->batch_le[bucket(batch_bounds,
	    sizeof(batch_bounds) / sizeof(batch_bounds[0]), appends)], 1);
}

void
ds_stats_count(enum ds_stat_event ev)
{
	if (stats == NULL)
		return;
	switch (ev) {
	case DS_STAT_CREATE:
		ADD(stats->creates, 1);
		break;
	case DS_STAT_DELETE:
		ADD(stats->deletes, 1);
		break;
	case DS_STAT_EXPIRE:
		ADD(stats->expiries, 1);
		break;
	}
}

enum ds_err
ds_store_space(struct ds_store *s, uint64_t *map_bytes, uint64_t *used_bytes)
{
	MDB_envinfo ei;
	int rc;

	if ((rc = mdb_env_info(s->env, &ei)) != 0)
		return ds_mdb_err(__func__, "mdb_env_info", rc);
	*map_bytes = ei.me_mapsize;
	*used_bytes = ((uint64_t)ei.me_last_pgno + 1) * s->psize;
	return DS_OK;
}

/*
 * LMDB keeps a shared fcntl() lock on the first byte of lock.mdb while a
 * process has the environment open (an exclusive one while it sets it up).
 * F_GETLK reports another process's lock, never our own.
 */
enum ds_err
ds_store_in_use(const char *dir, long *pid)
{
	char path[4096];
	struct flock fl;
	int fd, err;

	*pid = 0;
	if (snprintf(path, sizeof(path), "%s/meta/lock.mdb", dir) >=
	    (int)sizeof(path))
		return DS_ETOOBIG;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return DS_OK;
		err = errno;
		ds_log("open %s: %s", path, strerror(err));
		return ds_sys_err(err);
	}
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 1;
	if (fcntl(fd, F_GETLK, &fl) == -1) {
		err = errno;
		ds_log("fcntl F_GETLK %s: %s", path, strerror(err));
		close(fd);
		return ds_sys_err(err);
	}
	close(fd);
	if (fl.l_type != F_UNLCK)
		*pid = fl.l_pid > 0 ? (long)fl.l_pid : -1;
	return DS_OK;
}
