/*
 * segment.c: one file per stream holding the stream's own bytes, position
 * base at file offset 0. Files fan out over 256 directories so that no
 * directory grows without bound: segments/<first id byte>/<id>.seg.
 * A stream's file is made with its first bytes: a stream created empty has
 * none until its first append, and readers never open a file that holds
 * no committed byte.
 *
 * Room. A segment file is kept longer than its committed bytes, zero-filled
 * up to ds_seg_room() of them, and that length is made durable whenever the
 * tail moves into new room (write_data() in batch.c, ds_seg_create(),
 * ds_store_recover()). An append that lands inside the room only
 * overwrites blocks the file system has already allocated, under a size
 * it has already recorded: it needs its data written and the device's
 * cache flushed, not an inode write, and the flush can be shared by every
 * batch of the process's shared commit (commit.c). Bytes past the tail
 * are free space: readers never read them and the next append overwrites
 * them.
 */
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>

#include <linux/fs.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
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

/*
 * The length a segment holding own committed bytes is kept at: 4 KiB (a
 * block: no more disk than own itself takes), then the next power of two
 * up to 64 KiB, then the next multiple of 64 KiB. A function of own
 * alone, so that any process can tell which bytes of any segment are
 * durable room without asking the file.
 */
uint64_t
ds_seg_room(uint64_t own)
{
	uint64_t r;

	if (own == 0)
		return 0;
	if (own > DS_SEG_ROOM_STEP)
		return (own + DS_SEG_ROOM_STEP - 1) & ~(DS_SEG_ROOM_STEP - 1);
	for (r = 4096; r < own; r <<= 1)
		;
	return r;
}

/*
 * Zero-fills the file from at up to len (at < len), so that every block
 * is allocated and written: a range fallocate() leaves unwritten would
 * need its extents converted by the first write there, an inode change
 * again. Returns 0, or -1 with errno set.
 */
int
ds_seg_zero(int fd, uint64_t at, uint64_t len)
{
	static const char zeros[16384];
	size_t n;

	while (at < len) {
		n = len - at < sizeof(zeros) ? (size_t)(len - at) :
		    sizeof(zeros);
		if (ds_seg_write(fd, at, zeros, n) == -1)
			return -1;
		at += n;
	}
	return 0;
}

enum ext4_mode { EXT4_UNKNOWN, EXT4_NOJOURNAL, EXT4_JOURNAL_META,
    EXT4_JOURNAL_DATA };

/*
 * The journal mode of the ext4 file system on dev: /proc/fs/ext4/<device>/
 * options lists the data mode (data=journal, ordered or writeback) whenever
 * there is a journal, and none without one (mountinfo omits the mode when
 * it is the file system's default); and a journal in the file system has
 * a /proc/fs/jbd2/<device>-8.
 */
static enum ext4_mode
ext4_mode(dev_t dev)
{
	char path[96], line[256], name[64] = "";
	enum ext4_mode m = EXT4_NOJOURNAL;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent",
	    major(dev), minor(dev));
	if ((f = fopen(path, "re")) == NULL)
		return EXT4_UNKNOWN;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "DEVNAME=%63[^\n]", name) == 1)
			break;
	fclose(f);
	if (name[0] == '\0' || strchr(name, '/') != NULL)
		return EXT4_UNKNOWN;	/* a name with a directory: no guess */
	snprintf(path, sizeof(path), "/proc/fs/ext4/%s/options", name);
	if ((f = fopen(path, "re")) == NULL)
		return EXT4_UNKNOWN;
	while (fgets(line, sizeof(line), f))
		if (strcmp(line, "data=journal\n") == 0)
			m = EXT4_JOURNAL_DATA;
		else if (m == EXT4_NOJOURNAL && strncmp(line, "data=", 5) == 0)
			m = EXT4_JOURNAL_META;
	fclose(f);
	snprintf(path, sizeof(path), "/proc/fs/jbd2/%s-8", name);
	if (m == EXT4_NOJOURNAL && access(path, F_OK) == 0)
		m = EXT4_JOURNAL_META;
	return m;
}

/*
 * Whether an fdatasync() of a clean file flushes the device's cache on the
 * ext4 file system of dirfd, in mode, and so makes the ranges written before it
 * durable: from Linux 6.5 on ext4 without a journal issues the flush
 * whatever the inode's state, and with a journal one does for a file whose
 * last transaction is committed. data=journal (the mount's mode, or a
 * directory's journal-data flag its files inherit) puts the data in the
 * journal's running transaction: sync_file_range() commits it since 6.4,
 * but there, as before 6.5 and wherever the mode cannot be read, the flush
 * changes the file's length (ds_seg_flush()), which commits and flushes
 * in every ext4 mode, rather than rely on more. Measured on this kind of
 * machine (Linux 6.18, /sys/block/DEV/stat): one device flush per call
 * either way, 100 against 170 us without a journal, 140 against 600 us
 * (and two flushes) with one.
 */
static int
flush_plain(int dirfd, enum ext4_mode mode)
{
	struct utsname u;
	unsigned maj = 0, min = 0;
	int flags = 0;

	if (uname(&u) == -1 || sscanf(u.release, "%u.%u", &maj, &min) != 2 ||
	    maj < 6 || (maj == 6 && min < 5))
		return 0;
	switch (mode) {
	case EXT4_NOJOURNAL:
	case EXT4_JOURNAL_META:
		break;
	default:
		return 0;
	}
	if (ioctl(dirfd, FS_IOC_GETFLAGS, &flags) == 0 &&
	    (flags & FS_JOURNAL_DATA_FL))
		return 0;
	return 1;
}

/*
 * Sets up the room writes of s: appends inside a segment's room are made
 * durable by writing their range (sync_file_range()) and one flush that
 * the shared commit makes for all of them (ds_seg_flush()). Only on ext4,
 * which overwrites allocated blocks in place (XFS would copy shared
 * blocks on write after a reflink copy, as cp makes by default, and btrfs
 * copies every write: there, and on tmpfs and network file systems, every
 * batch is fdatasync()ed). Returns whether room writes are on.
 */
int
ds_seg_flush_open(struct ds_store *s)
{
	struct statfs sf;
	struct stat st;
	enum ext4_mode mode;

	s->flushfd = -1;
	if (fstatfs(s->segdirfd, &sf) == -1 || sf.f_type != 0xEF53)
		return 0;
	s->flushfd = openat(s->segdirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC,
	    0600);
	if (s->flushfd == -1) {
		ds_log("O_TMPFILE in %s: %s; every append batch is "
		    "fdatasync()ed", s->segdir, strerror(errno));
		return 0;
	}
	mode = fstat(s->segdirfd, &st) == 0 ? ext4_mode(st.st_dev) :
	    EXT4_UNKNOWN;
	s->flush_plain = flush_plain(s->segdirfd, mode);
	s->seg_nojournal = mode == EXT4_NOJOURNAL;
	/* A new file: its transaction is the latest (see ds_seg_flush()). */
	s->flush_changed = ds_mono_us();
	return 1;
}

/*
 * Whether an LMDB sync flushes the device's cache for the segments too,
 * and so may serve as the shared flush (lane.c): where the plain flush
 * serves (flush_plain()), the LMDB file is on the segments' file system
 * and that has no journal. There an fdatasync() of a file with pages to
 * write always ends with a flush. With a journal, whether it flushes is
 * decided from transaction ids that wrap (see ds_seg_flush()), and the
 * LMDB file has no length of ours to change once a minute.
 */
int
ds_seg_sync_flush(struct ds_store *s)
{
	struct stat meta, seg;
	int fd;

	if (!s->range_sync || !s->flush_plain ||
	    mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &meta) == -1 ||
	    fstat(s->segdirfd, &seg) == -1 || meta.st_dev != seg.st_dev)
		return 0;
	return s->seg_nojournal;
}

/*
 * The shared flush: makes durable every range written (and waited for)
 * before it, with an fdatasync() of the store's unnamed flush file. Where
 * that alone might not flush (flush_plain()), it changes the file's
 * length first: an fdatasync() with only timestamps to write does not
 * flush the device's cache on ext4 without a journal before Linux 6.5,
 * nor commit the running journal transaction (which holds the data of
 * data=journal files); a length change makes every ext4 mode do both.
 *
 * Even where the plain fdatasync() serves, the length changes once a
 * minute: with a journal, ext4 decides whether a clean file's fdatasync()
 * flushes from the transaction id the file last changed in, and those ids
 * are 32 bits that wrap (2^31 commits later, some weeks on a busy file
 * system, the old id would read as not committed yet, and no flush would
 * be issued, before a fix of December 2024).
 *
 * Call from one thread at a time. Returns 0, or -1 with errno set.
 */
int
ds_seg_flush(struct ds_store *s)
{
	int64_t now = ds_mono_us();

	if (!s->flush_plain || now - s->flush_changed >= 60 * 1000000) {
		s->flush_changed = now;
		s->flush_len ^= 1;
		if (ftruncate(s->flushfd, (off_t)s->flush_len) == -1)
			return -1;
	}
	return ds_stats_fdatasync(s->flushfd);
}

/*
 * Writes len bytes at offset at (len 0: to the end of the file) out of the
 * page cache and waits for them: durable once a device flush begun after
 * this returns has finished (ds_seg_flush(), ds_lanes_flush()).
 */
int
ds_seg_write_out(int fd, uint64_t at, uint64_t len)
{
	return sync_file_range(fd, (off_t)at, (off_t)len,
	    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
	    SYNC_FILE_RANGE_WAIT_AFTER);
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
 * Makes the fan-out directory that holds id's segment, durably, and puts
 * its path in dir. Returns 0, or -1 with errno set.
 */
static int
seg_dir(struct ds_store *s, uint64_t id, char *dir, size_t sz)
{
	int n, err;

	n = snprintf(dir, sz, "%s/%02x", s->segdir, (unsigned)(id >> 56));
	if (n < 0 || (size_t)n >= sz) {
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
	return 0;
}

/*
 * Creates the segment file of a new stream with its initial bytes (len >
 * 0) and its room, and makes both and the directory entry durable before the
 * caller commits the record that names the file. A stream created empty
 * has no file until its first append (ds_seg_open_new()): a create then
 * costs no file system work at all. Returns 0, or -1 with errno set and no
 * file left behind (EEXIST: another stream's file, left alone).
 */
int
ds_seg_create(struct ds_store *s, uint64_t id, const void *body, size_t len)
{
	const char *what = NULL;
	int fd, err, created;

	if ((fd = ds_seg_open_new(s, id, &created)) == -1)
		return -1;
	if (!created) {
		close(fd);	/* another stream's id: the caller draws again */
		errno = EEXIST;
		return -1;
	}
	if (ds_seg_write(fd, 0, body, len) == -1)
		what = "write";
	else if (ds_seg_zero(fd, len, ds_seg_room(len)) == -1)
		what = "zero-fill";
	else if (ds_stats_fdatasync(fd) == -1)
		what = "fdatasync";
	err = errno;
	close(fd);
	if (what == NULL && ds_seg_sync_dir(s, id) == -1) {
		what = "fsync directory";
		err = errno;
	}
	if (what != NULL) {
		ds_log("%s of segment %016" PRIx64 ": %s", what, id,
		    strerror(err));
		ds_seg_unlink(s, id);
		errno = err;
		return -1;
	}
	return 0;
}

/*
 * Opens the segment of a stream that has no file yet, creating it. Sets
 * *created when this call made the file (another appender may have made it
 * first). The new directory entry is not durable yet: the caller syncs it
 * with ds_seg_sync_dir() before it commits bytes in the file. Returns the
 * fd, or -1 with errno set.
 */
int
ds_seg_open_new(struct ds_store *s, uint64_t id, int *created)
{
	char path[4096], dir[4096];
	int fd, err;

	*created = 0;
	if (seg_dir(s, id, dir, sizeof(dir)) == -1)
		return -1;
	if (ds_seg_path(s, id, path, sizeof(path)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd != -1)
		*created = 1;
	else if (errno == EEXIST)
		fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd == -1) {
		err = errno;
		ds_log("open %s: %s", path, strerror(err));
		errno = err;
	}
	return fd;
}

/* Makes the directory entry of id's segment durable. Returns 0 or -1. */
int
ds_seg_sync_dir(const struct ds_store *s, uint64_t id)
{
	char dir[4096];
	int n;

	n = snprintf(dir, sizeof(dir), "%s/%02x", s->segdir,
	    (unsigned)(id >> 56));
	if (n < 0 || (size_t)n >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (sync_dir(dir) == -1) {
		ds_log("fsync %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Opens a stream's segment, by its name under the segment directory (a
 * two-step lookup, whatever the depth of the data directory). Returns the
 * fd, or -1 (errno kept).
 */
int
ds_seg_open(const struct ds_store *s, uint64_t id, int flags)
{
	char name[32];
	int fd, saved;

	snprintf(name, sizeof(name), "%02x/%016" PRIx64 ".seg",
	    (unsigned)(id >> 56), id);
	while ((fd = openat(s->segdirfd, name, flags | O_CLOEXEC)) == -1 &&
	    errno == EINTR)
		;
	if (fd == -1 && errno != ENOENT) {
		saved = errno;
		ds_log("open %s/%s: %s", s->segdir, name, strerror(errno));
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
