/*
 * segment.c: one file per stream holding the stream's own bytes, position
 * base at file offset 0. Files fan out over 256 directories so that no
 * directory grows without bound: segments/<first id byte>/<id>.seg.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <unistd.h>

#include "store/store_int.h"

int
ds_seg_path(const struct ds_store *s, uint64_t id, char *buf, size_t sz)
{
	int n;

	n = snprintf(buf, sz, "%s/%02x/%016" PRIx64 ".seg", s->segdir,
	    (unsigned)(id >> 56), id);
	return n < 0 || (size_t)n >= sz ? -1 : 0;
}

/*
 * fsync()s a directory so that an entry created or removed in it lasts.
 * Returns 0, or -1 with errno set.
 */
static int
sync_dir(const char *path)
{
	int fd, rc, err;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	err = errno;
	close(fd);
	errno = err;
	return rc;
}

/* Writes all of buf at file offset at, retrying short writes and EINTR. */
int
ds_seg_write(int fd, uint64_t at, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;
	int saved;

	while (len > 0) {
		n = pwrite(fd, p, len, (off_t)at);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			saved = errno;
			ds_log("pwrite: %s", strerror(saved));
			errno = saved;
			return -1;
		}
		p += n;
		at += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Reads exactly len bytes at file offset at. A short file is an error: the
 * caller only asks for committed bytes, which are always there.
 */
int
ds_seg_read(int fd, uint64_t at, void *buf, size_t len)
{
	char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, p, len, (off_t)at);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			ds_log("pread: %s", strerror(errno));
			return -1;
		}
		if (n == 0) {
			ds_log("pread: segment shorter than its tail");
			return -1;
		}
		p += n;
		at += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Creates the segment file of a new stream with its initial bytes, and
 * makes both the bytes and the directory entry durable before the caller
 * commits the record that names the file. Returns 0, or -1 with errno set
 * and no file left behind.
 */
int
ds_seg_create(struct ds_store *s, uint64_t id, const void *body, size_t len)
{
	char path[4096], dir[4096];
	const char *what = NULL;
	int fd, n, err;

	n = snprintf(dir, sizeof(dir), "%s/%02x", s->segdir,
	    (unsigned)(id >> 56));
	if (n < 0 || (size_t)n >= sizeof(dir) ||
	    ds_seg_path(s, id, path, sizeof(path)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (mkdir(dir, 0750) == 0) {
		if (fsync(s->segdirfd) == -1) {
			err = errno;
			ds_log("fsync %s: %s", s->segdir, strerror(err));
			errno = err;
			return -1;
		}
	} else if (errno != EEXIST) {
		err = errno;
		ds_log("mkdir %s: %s", dir, strerror(err));
		errno = err;
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd == -1) {
		err = errno;
		ds_log("open %s: %s", path, strerror(err));
		errno = err;
		return -1;
	}
	if (len > 0 && ds_seg_write(fd, 0, body, len) == -1)
		what = "write";
	else if (ds_stats_fdatasync(fd) == -1)
		what = "fdatasync";
	err = errno;
	close(fd);
	if (what == NULL && sync_dir(dir) == -1) {
		what = "fsync directory";
		err = errno;
	}
	if (what != NULL) {
		ds_log("%s %s: %s", what, path, strerror(err));
		unlink(path);
		errno = err;
		return -1;
	}
	return 0;
}

/* Opens a stream's segment. Returns the fd, or -1 (errno kept). */
int
ds_seg_open(const struct ds_store *s, uint64_t id, int flags)
{
	char path[4096];
	int fd, saved;

	if (ds_seg_path(s, id, path, sizeof(path)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	while ((fd = open(path, flags | O_CLOEXEC)) == -1 && errno == EINTR)
		;
	if (fd == -1 && errno != ENOENT) {
		saved = errno;
		ds_log("open %s: %s", path, strerror(errno));
		errno = saved;
	}
	return fd;
}

/* Removes a stream's segment (gone already is fine). */
int
ds_seg_unlink(const struct ds_store *s, uint64_t id)
{
	char path[4096];

	if (ds_seg_path(s, id, path, sizeof(path)) == -1)
		return -1;
	if (unlink(path) == -1 && errno != ENOENT) {
		ds_log("unlink %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Locks fd exclusively, retrying EINTR. */
int
ds_seg_lock(int fd)
{
	while (flock(fd, LOCK_EX) == -1) {
		if (errno != EINTR) {
			ds_log("flock: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}
