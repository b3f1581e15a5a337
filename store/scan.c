/*
 * scan.c: walks over every stream of the store: start-up recovery (torn
 * tails and orphaned segment files), the invariant check, and listing.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"

/* Parses "<16 hex>.seg"; returns 0 and the id, or -1. */
static int
seg_name_id(const char *name, uint64_t *id)
{
	char *end;

	if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0)
		return -1;
	errno = 0;
	*id = strtoull(name, &end, 16);
	return errno || end != name + 16 ? -1 : 0;
}

/*
 * Walks every stream record in one read snapshot, calling fn with the
 * transaction, the path and the decoded record (NULL for one that does not
 * decode, after logging it). Stops early when fn returns nonzero.
 */
static enum ds_err
each_record(struct ds_store *s, const char *prefix, int (*fn)(struct ds_store *,
    MDB_txn *, const char *, struct ds_rec *, void *), void *arg)
{
	size_t plen = prefix ? strlen(prefix) : 0;
	char path[DS_PATH_MAX + 1];
	struct ds_rec r;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	enum ds_err e;
	int rc, bad;

	/* rd_begin: --recover must see a dead writer's last commit. */
	if ((e = ds_rd_begin(s, &txn)) != DS_OK)
		return e;
	if ((rc = mdb_cursor_open(txn, s->streams, &c)) != 0) {
		ds_rd_end(txn);
		return ds_mdb_err(__func__, "mdb_cursor_open", rc);
	}
	k.mv_data = (void *)prefix;
	k.mv_size = plen;
	for (rc = mdb_cursor_get(c, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST);
	    rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (plen && (k.mv_size < plen ||
		    memcmp(k.mv_data, prefix, plen) != 0))
			break;
		bad = k.mv_size > DS_PATH_MAX || ds_rec_decode(&v, &r) == -1;
		if (bad)
			ds_log("%.*s: undecodable record", (int)k.mv_size,
			    (char *)k.mv_data);
		memcpy(path, k.mv_data, k.mv_size > DS_PATH_MAX ?
		    DS_PATH_MAX : k.mv_size);
		path[k.mv_size > DS_PATH_MAX ? DS_PATH_MAX : k.mv_size] = '\0';
		if (fn(s, txn, path, bad ? NULL : &r, arg))
			break;
	}
	mdb_cursor_close(c);
	ds_rd_end(txn);
	return DS_OK;
}

/* Whether [own, room) of fd holds a hole: SEEK_HOLE from own's block. */
static int
room_has_hole(int fd, uint64_t own, uint64_t room)
{
	off_t h;

	h = lseek(fd, (off_t)(own & ~(uint64_t)4095), SEEK_HOLE);
	return h != -1 && (uint64_t)h < room;
}

/*
 * Cuts bytes past a stream's room (segment.c): what a crash left of an
 * append that grew the file. Bytes between the tail and the room are free
 * space and stay. A segment shorter than its room (one written before
 * segments had room) is zero-filled up to it. Either is made durable. A
 * segment whose room cannot be written (a full disk) is cut back to its
 * committed bytes, so that its next append gives it its room (batch.c).
 */
static int
recover_tail(struct ds_store *s, MDB_txn *txn, const char *path,
    struct ds_rec *r, void *arg)
{
	unsigned *truncated = arg;
	uint64_t own, room;
	struct stat st;
	int fd, rc = 0;

	(void)txn;
	if (r == NULL)
		return 0;
	ds_punch_all(s, r);	/* finishes a trim a crash cut short */
	if ((fd = ds_seg_open(s, r->info.id, O_RDWR)) == -1)
		return 0;
	own = r->info.tail - r->info.base;
	room = ds_seg_room(own);
	if (ds_seg_lock(fd) == -1 || fstat(fd, &st) == -1) {
		close(fd);
		return 0;
	}
	if ((uint64_t)st.st_size > room) {
		if ((rc = ftruncate(fd, (off_t)room)) == 0)
			(*truncated)++;
	} else if ((uint64_t)st.st_size < room && (uint64_t)st.st_size >= own)
		rc = ds_seg_zero(fd, (uint64_t)st.st_size, room);
	/*
	 * A room with a hole (or an unwritten extent) in it, as a restore
	 * with rsync -S or tar -S makes of the zeros: the first append
	 * there would allocate, which the shared flush does not make
	 * durable. Written again, it is allocated.
	 */
	if (rc == 0 && own > 0 && (uint64_t)st.st_size >= own &&
	    room_has_hole(fd, own, room)) {
		rc = ds_seg_zero(fd, own, room);
		st.st_size = -1;	/* sync below */
	}
	if (rc == -1) {
		ds_log("%s: writing its room: %s; cut back to its tail", path,
		    strerror(errno));
		rc = ftruncate(fd, (off_t)own);
		st.st_size = -1;
	}
	if (rc == 0 && (uint64_t)st.st_size != room)
		rc = fdatasync(fd);
	if (rc == -1)
		ds_log("%s: recovering its segment: %s", path, strerror(errno));
	close(fd);
	return 0;
}

enum ds_err
ds_store_recover(struct ds_store *s, unsigned min_age_s, unsigned *truncated,
    unsigned *removed)
{
	unsigned t = 0, rm = 0;
	char sub[4096];
	DIR *d, *sd;
	struct dirent *de, *se;
	struct stat st;
	MDB_txn *txn;
	MDB_val k, v;
	enum ds_err e;
	uint64_t id;
	time_t now = time(NULL);

	if ((e = each_record(s, NULL, recover_tail, &t)) != DS_OK)
		return e;
	if ((d = opendir(s->segdir)) == NULL) {
		ds_log("opendir %s: %s", s->segdir, strerror(errno));
		return DS_EIO;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", s->segdir, de->d_name);
		if ((sd = opendir(sub)) == NULL)
			continue;
		while ((se = readdir(sd)) != NULL) {
			if (seg_name_id(se->d_name, &id) == -1)
				continue;
			if (fstatat(dirfd(sd), se->d_name, &st, 0) == -1 ||
			    now - st.st_mtime < (time_t)min_age_s)
				continue;
			if (ds_txn_begin(s, MDB_RDONLY, &txn) != DS_OK)
				continue;
			k.mv_data = &id;
			k.mv_size = sizeof(id);
			if (mdb_get(txn, s->ids, &k, &v) == MDB_NOTFOUND &&
			    unlinkat(dirfd(sd), se->d_name, 0) == 0)
				rm++;
			mdb_txn_abort(txn);
		}
		closedir(sd);
	}
	closedir(d);
	if (truncated)
		*truncated = t;
	if (removed)
		*removed = rm;
	return DS_OK;
}

/* One record as ds_store_verify() sees it. */
struct vrec {
	uint64_t	id;
	uint64_t	src_id;
	uint64_t	refs;
	uint64_t	seen;		/* forks found naming this one */
	uint32_t	flags;
};

struct verify {
	struct vrec	*v;
	size_t		 n, cap;
	unsigned	 bad;
	int		 nomem;
	int		(*msg_ok)(const char *, size_t);
};

/*
 * Checks a stream's own segment against its record: the file holds every
 * committed byte, and in a message stream the retained bytes (below the
 * earliest retained position they are punched out) are whole records,
 * each of which msg_ok (when given) accepts. Returns the problems found,
 * each logged.
 */
static unsigned
verify_segment(struct ds_store *s, const char *path, const struct ds_rec *r,
    int (*msg_ok)(const char *, size_t))
{
	uint64_t own = r->info.tail - r->info.base;
	uint64_t at = ds_own_first(r) - r->info.base;	/* trimmed below */
	size_t have = 0, cap = 1 << 20, n;
	char *buf = NULL, *nb, *p, *nl;
	unsigned bad = 0;
	struct stat st;
	int fd;

	if (r->first > r->info.tail) {
		ds_log("%s: trimmed to %" PRIu64 ", past the tail %" PRIu64,
		    path, r->first, r->info.tail);
		return 1;
	}
	if ((fd = ds_seg_open(s, r->info.id, O_RDONLY)) == -1) {
		if (errno == ENOENT && own == 0)
			return 0;	/* no byte yet, so no file */
		ds_log("%s: segment missing", path);
		return 1;
	}
	if (fstat(fd, &st) == -1 || (uint64_t)st.st_size < own) {
		ds_log("%s: segment holds %lld bytes of %" PRIu64 " committed",
		    path, (long long)st.st_size, own);
		close(fd);
		return 1;
	}
	if (!(r->info.flags & DS_F_MSG) || own == 0) {
		close(fd);
		return 0;
	}
	/* Records, in chunks; a record longer than a chunk grows the buffer. */
	while (at < own && bad == 0) {
		if (buf == NULL || have == cap) {
			if (buf != NULL)
				cap *= 2;
			if ((nb = realloc(buf, cap)) == NULL) {
				ds_log("%s: out of memory", path);
				bad++;
				break;
			}
			buf = nb;
		}
		n = cap - have;
		if (n > own - at)
			n = (size_t)(own - at);
		if (ds_seg_read(fd, at, buf + have, n) == -1) {
			bad++;
			break;
		}
		at += n;
		have += n;
		for (p = buf; (nl = memchr(p, '\n', have - (size_t)(p - buf)));
		    p = nl + 1) {
			if (msg_ok && !msg_ok(p, (size_t)(nl - p))) {
				ds_log("%s: record at %" PRIu64 " is not a "
				    "valid message", path, r->info.base + at -
				    have + (uint64_t)(p - buf));
				bad++;
				break;
			}
		}
		have -= (size_t)(p - buf);
		memmove(buf, p, have);
	}
	if (bad == 0 && have > 0) {
		ds_log("%s: the last %zu bytes are no whole record", path, have);
		bad++;
	}
	free(buf);
	close(fd);
	return bad;
}

static int
vrec_cmp(const void *a, const void *b)
{
	const struct vrec *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* Checks one record on its own and collects it for the link checks. */
static int
verify_one(struct ds_store *s, MDB_txn *txn, const char *path,
    struct ds_rec *r, void *arg)
{
	struct verify *vf = arg;
	struct vrec *nv;
	MDB_val ik, iv;

	if (r == NULL) {
		vf->bad++;
		return 0;
	}
	ik.mv_data = &r->info.id;
	ik.mv_size = sizeof(r->info.id);
	if (mdb_get(txn, s->ids, &ik, &iv) != 0 ||
	    iv.mv_size != strlen(path) ||
	    memcmp(iv.mv_data, path, iv.mv_size) != 0) {
		ds_log("%s: id %016" PRIx64 " not indexed to it", path,
		    r->info.id);
		vf->bad++;
	}
	vf->bad += verify_segment(s, path, r, vf->msg_ok);
	if (vf->n == vf->cap) {
		vf->cap = vf->cap ? vf->cap * 2 : 256;
		if ((nv = realloc(vf->v, vf->cap * sizeof(*nv))) == NULL) {
			vf->nomem = 1;
			return 1;
		}
		vf->v = nv;
	}
	nv = &vf->v[vf->n++];
	nv->id = r->info.id;
	nv->src_id = r->info.src_id;
	nv->refs = r->refs;
	nv->seen = 0;
	nv->flags = r->info.flags;
	return 0;
}

enum ds_err
ds_store_verify(struct ds_store *s, int (*msg_ok)(const char *, size_t),
    unsigned *streams, unsigned *problems)
{
	struct verify vf = { .v = NULL, .msg_ok = msg_ok };
	struct vrec key, *hit, *v;
	enum ds_err e;
	size_t i;
	int depth;

	if ((e = each_record(s, NULL, verify_one, &vf)) != DS_OK || vf.nomem) {
		free(vf.v);
		return e != DS_OK ? e : DS_ENOMEM;
	}
	v = vf.v;
	if (vf.n > 0)
		qsort(v, vf.n, sizeof(*v), vrec_cmp);
	for (i = 0; i < vf.n; i++) {
		if (v[i].src_id == 0)
			continue;
		key.id = v[i].src_id;
		hit = bsearch(&key, v, vf.n, sizeof(*v), vrec_cmp);
		if (hit == NULL) {
			ds_log("stream %016" PRIx64 ": source %016" PRIx64
			    " is gone", v[i].id, v[i].src_id);
			vf.bad++;
		} else
			hit->seen++;
	}
	for (i = 0; i < vf.n; i++) {
		if (v[i].refs != v[i].seen) {
			ds_log("stream %016" PRIx64 ": refcount %" PRIu64
			    " but %" PRIu64 " forks", v[i].id, v[i].refs,
			    v[i].seen);
			vf.bad++;
		}
		if ((v[i].flags & DS_F_DELETED) && v[i].seen == 0) {
			ds_log("stream %016" PRIx64 ": soft-deleted with no "
			    "forks, never collected", v[i].id);
			vf.bad++;
		}
		/* A read builds the whole chain: deeper cannot be read. */
		for (depth = 1, hit = &v[i]; hit->src_id != 0 &&
		    depth <= DS_CHAIN_MAX; depth++) {
			key.id = hit->src_id;
			if ((hit = bsearch(&key, v, vf.n, sizeof(*v),
			    vrec_cmp)) == NULL)
				break;
		}
		if (depth > DS_CHAIN_MAX) {
			ds_log("stream %016" PRIx64 ": fork chain deeper than "
			    "%d levels (or a loop): it cannot be read", v[i].id,
			    DS_CHAIN_MAX);
			vf.bad++;
		}
	}
	*streams = (unsigned)vf.n;
	*problems = vf.bad;
	free(v);
	return DS_OK;
}

struct foreach {
	int	(*fn)(const char *, const struct ds_stream_info *, void *);
	void	*arg;
};

static int
foreach_one(struct ds_store *s, MDB_txn *txn, const char *path,
    struct ds_rec *r, void *arg)
{
	struct foreach *f = arg;

	struct ds_chain c;

	if (r == NULL)
		return 0;
	/* The earliest position reads get, across the fork chain. */
	r->info.first = ds_chain_build(s, txn, r, r->info.tail, &c) == DS_OK ?
	    ds_chain_first(&c) : ds_own_first(r);
	return f->fn(path, &r->info, f->arg);
}

enum ds_err
ds_store_foreach(struct ds_store *s, int (*fn)(const char *,
    const struct ds_stream_info *, void *), void *arg)
{
	return ds_store_foreach_prefix(s, "", fn, arg);
}

enum ds_err
ds_store_foreach_prefix(struct ds_store *s, const char *prefix,
    int (*fn)(const char *, const struct ds_stream_info *, void *), void *arg)
{
	struct foreach f = { fn, arg };

	return each_record(s, prefix, foreach_one, &f);
}
