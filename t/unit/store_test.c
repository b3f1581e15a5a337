/*
 * store_test.c: drives store/ directly: create, append with every
 * validation rule, reads with chunk bounds and message framing, expiry,
 * delete, torn-tail recovery and orphan removal, and concurrent appends from
 * threads sharing one store. Each test case runs in a data directory of its
 * own (store_begin()).
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/random.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_int.h"
#include "t/tap.h"
#include "t/unit/store_util.h"

static char *
read_all(struct ds_store *s, const char *path, size_t chunk, size_t *total,
    unsigned *reads)
{
	struct ds_stream_info info;
	char *all = NULL, *data;
	size_t len;
	uint64_t at = 0;

	*total = 0;
	*reads = 0;
	for (;;) {
		if (ds_store_read(s, path, at, chunk, 1000, &info, &data,
		    &len) != DS_OK)
			return all;
		(*reads)++;
		all = realloc(all, *total + len + 1);
		memcpy(all + *total, data ? data : "", len);
		*total += len;
		all[*total] = '\0';
		free(data);
		at += len;
		if (at == info.tail)
			return all;
	}
}

static void
test_basics(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .body = "abc",
	    .len = 3 };
	struct ds_stream_info info;
	struct ds_append_res res;
	char *data;
	size_t len;
	unsigned reads;

	is_int(ds_store_create(s, "a", &c, 1000, &info), DS_OK, "create");
	is_int(info.tail, 3, "initial body sets the tail");
	is_int(ds_store_create(s, "a", &c, 1000, &info), DS_EEXIST,
	    "second create reports the existing stream");
	is_str(info.ctype, "text/plain", "existing stream described");
	is_int(append(s, "a", "defg", 0, NULL, NULL, &res), DS_OK, "append");
	is_int(res.tail, 7, "tail after append");
	is_int(append(s, "missing", "x", 0, NULL, NULL, &res), DS_ENOTFOUND,
	    "append to a missing stream");
	data = read_all(s, "a", 1024, &len, &reads);
	is_mem(data, len, "abcdefg", 7, "read back");
	free(data);
	data = read_all(s, "a", 2, &len, &reads);
	is_mem(data, len, "abcdefg", 7, "read back in 2-byte chunks");
	is_int(reads, 4, "chunk bound respected");
	free(data);
	is_int(ds_store_read(s, "a", 8, 10, 1000, &info, &data, &len),
	    DS_EOFFSET, "offset past the tail");
	is_int(ds_store_read(s, "a", DS_POS_NOW, 10, 1000, &info, &data,
	    &len), DS_OK, "read at now");
	is_int(len, 0, "nothing at now");

	/* Stream-Seq: strictly increasing, bytewise. */
	is_int(append(s, "a", "1", 0, NULL, "09", &res), DS_OK, "seq 09");
	is_int(append(s, "a", "2", 0, NULL, "10", &res), DS_OK, "seq 10");
	is_int(append(s, "a", "3", 0, NULL, "10", &res), DS_ESEQ,
	    "repeated seq rejected");
	is_int(append(s, "a", "3", 0, NULL, "1", &res), DS_ESEQ,
	    "smaller seq rejected");

	/* Closure. */
	is_int(append(s, "a", "end", 1, NULL, NULL, &res), DS_OK,
	    "append and close");
	ok(res.closed, "closed after close");
	is_int(append(s, "a", "more", 0, NULL, NULL, &res), DS_ECLOSED,
	    "append to closed");
	is_int(res.tail, 12, "closed error carries the tail");
	is_int(append(s, "a", NULL, 1, NULL, NULL, &res), DS_OK,
	    "close-only on closed is idempotent");
	ok(res.duplicate, "reported as nothing written");
}

static void
test_producers(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	struct ds_producer p = { .id = "p1", .idlen = 2 };
	struct ds_append_res res;
	char *data;
	size_t len;
	unsigned reads;

	must_ds(ds_store_create(s, "p", &c, 1000, &info));
	p.seq = 1;
	is_int(append(s, "p", "x", 0, &p, NULL, &res), DS_EPRODUCER_GAP,
	    "new producer must start at seq 0");
	p.seq = 0;
	is_int(append(s, "p", "a", 0, &p, NULL, &res), DS_OK, "seq 0");
	p.seq = 1;
	is_int(append(s, "p", "b", 0, &p, NULL, &res), DS_OK, "seq 1");
	is_int(append(s, "p", "b", 0, &p, NULL, &res), DS_OK, "retry seq 1");
	ok(res.duplicate, "retry is a duplicate");
	is_int(res.seq, 1, "duplicate reports the highest seq");
	p.seq = 0;
	is_int(append(s, "p", "a", 0, &p, NULL, &res), DS_OK, "retry seq 0");
	ok(res.duplicate && res.seq == 1, "old duplicate reports seq 1");
	p.seq = 3;
	is_int(append(s, "p", "d", 0, &p, NULL, &res), DS_EPRODUCER_GAP,
	    "gap");
	is_int(res.seq, 2, "gap reports the expected seq");
	p.epoch = 1;
	p.seq = 1;
	is_int(append(s, "p", "e", 0, &p, NULL, &res), DS_EPRODUCER_BADSEQ,
	    "new epoch must start at 0");
	p.seq = 0;
	is_int(append(s, "p", "e", 0, &p, NULL, &res), DS_OK, "epoch 1");
	p.epoch = 0;
	p.seq = 2;
	is_int(append(s, "p", "z", 0, &p, NULL, &res), DS_EPRODUCER_STALE,
	    "zombie fenced");
	is_int(res.epoch, 1, "fencing reports the current epoch");
	data = read_all(s, "p", 1024, &len, &reads);
	is_mem(data, len, "abe", 3, "only accepted appends stored, once");
	free(data);

	/* Closing request retried: duplicate; anything else: closed. */
	p.epoch = 1;
	p.seq = 1;
	is_int(append(s, "p", "F", 1, &p, NULL, &res), DS_OK,
	    "producer closes");
	is_int(append(s, "p", "F", 1, &p, NULL, &res), DS_OK,
	    "closing retry");
	ok(res.duplicate && res.closed, "closing retry is a duplicate");
	p.seq = 2;
	is_int(append(s, "p", "G", 0, &p, NULL, &res), DS_ECLOSED,
	    "later seq on a closed stream");
	p.epoch = 0;
	is_int(append(s, "p", "G", 0, &p, NULL, &res), DS_EPRODUCER_STALE,
	    "stale epoch beats closed");
}

static void
test_messages(struct ds_store *s)
{
	struct ds_create c = { .ctype = "application/json", .flags = DS_F_MSG,
	    .body = "{\"a\":1}\n[2]\n", .len = 12 };
	struct ds_stream_info info;
	struct ds_append_res res;
	char *data;
	size_t len;

	is_int(ds_store_create(s, "j", &c, 1000, &info), DS_OK, "create json");
	is_int(append(s, "j", "\"long message\"\n", 0, NULL, NULL, &res),
	    DS_OK, "append a record");
	is_int(ds_store_read(s, "j", 0, 9, 1000, &info, &data, &len), DS_OK,
	    "bounded read");
	is_mem(data, len, "{\"a\":1}\n", 8, "cut on the last record end");
	free(data);
	is_int(ds_store_read(s, "j", 12, 3, 1000, &info, &data, &len), DS_OK,
	    "read smaller than a record");
	is_int(len, 15, "a record longer than the bound comes whole");
	free(data);
	is_int(ds_store_read(s, "j", 3, 100, 1000, &info, &data, &len),
	    DS_EOFFSET, "offset inside a record");
}

static void
test_expiry_delete(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .flags = DS_F_TTL,
	    .ttl_s = 2 }, plain = { .ctype = "text/plain" };
	struct ds_stream_info info;

	must_ds(ds_store_create(s, "a", &plain, 1000, &info));
	is_int(ds_store_create(s, "t", &c, 1000, &info), DS_OK, "ttl stream");
	is_int(ds_store_stat(s, "t", 2500, &info), DS_OK, "alive at 1.5 s");
	is_int(ds_store_touch(s, "t", 2500), DS_OK, "touch renews");
	is_int(ds_store_stat(s, "t", 4000, &info), DS_OK,
	    "alive 1.5 s after the renewal");
	is_int(ds_store_stat(s, "t", 4500, &info), DS_ENOTFOUND,
	    "gone 2 s after the renewal");
	c.flags = DS_F_EXPIRES;
	c.expires_ms = 5000;
	is_int(ds_store_create(s, "t", &c, 4600, &info), DS_OK,
	    "path reusable after expiry");
	is_int(ds_store_stat(s, "t", 5000, &info), DS_ENOTFOUND,
	    "Expires-At reached");
	is_int(ds_store_delete(s, "a"), DS_OK, "delete");
	is_int(ds_store_stat(s, "a", 1000, &info), DS_ENOTFOUND,
	    "deleted stream is gone");
	is_int(ds_store_delete(s, "a"), DS_ENOTFOUND, "delete twice");
}

static void
test_recovery(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .body = "12345",
	    .len = 5 };
	struct ds_stream_info info;
	struct ds_append_res res;
	char path[512], *data;
	size_t len;
	unsigned reads, trunc, removed;
	int fd;

	must_ds(ds_store_create(s, "r", &c, 1000, &info));
	/* A crash after the data write, before the commit: stray bytes. */
	snprintf(path, sizeof(path), "%s/segments/%02x/%016" PRIx64 ".seg",
	    store_dir, (unsigned)(info.id >> 56), info.id);
	must((fd = open(path, O_WRONLY | O_APPEND)) != -1, "open %s", path);
	must(write(fd, "TORN", 4) == 4, "simulate a torn append");
	close(fd);
	data = read_all(s, "r", 1024, &len, &reads);
	is_mem(data, len, "12345", 5, "readers never see stray bytes");
	free(data);
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK, "recover");
	is_int(trunc, 1, "one torn tail truncated");
	is_int(append(s, "r", "67", 0, NULL, NULL, &res), DS_OK,
	    "append after recovery");
	data = read_all(s, "r", 1024, &len, &reads);
	is_mem(data, len, "1234567", 7, "append lands at the committed tail");
	free(data);

	/* Orphans: segment files that no record names. */
	snprintf(path, sizeof(path), "%s/segments/00", store_dir);
	must(mkdir(path, 0750) == 0 || errno == EEXIST, "mkdir %s", path);
	snprintf(path, sizeof(path), "%s/segments/00/0000000000000001.seg",
	    store_dir);
	must((fd = open(path, O_CREAT | O_WRONLY, 0640)) != -1, "create %s",
	    path);
	close(fd);
	is_int(ds_store_recover(s, 3600, &trunc, &removed), DS_OK,
	    "recover with a young orphan");
	is_int(removed, 0, "young orphan kept (may be a create in flight)");
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK,
	    "recover again");
	is_int(removed, 1, "old orphan removed");
	ok(access(path, F_OK) == -1, "orphan file gone");
	errno = 0;
}

static int
seg_exists(uint64_t id)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/segments/%02x/%016" PRIx64 ".seg",
	    store_dir, (unsigned)(id >> 56), id);
	return access(path, F_OK) == 0;
}

static off_t
seg_size(uint64_t id)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/segments/%02x/%016" PRIx64 ".seg",
	    store_dir, (unsigned)(id >> 56), id);
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Entries in the journal (store/journal.c). */
static long long
journal_entries(struct ds_store *s)
{
	MDB_txn *txn;
	MDB_stat ms;

	must(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0, "txn");
	must(mdb_stat(txn, s->journal, &ms) == 0, "mdb_stat");
	mdb_txn_abort(txn);
	return (long long)ms.ms_entries;
}

/*
 * Room (segment.c): a segment is kept zero-filled up to ds_seg_room() of
 * its committed bytes; an append inside the room is not fdatasync()ed on
 * its own: its bytes commit with its record (journal.c) and a checkpoint
 * syncs the segment later; recovery keeps the room, cuts what lies past
 * it and gives a segment written without room its room.
 */
static void
test_room(struct ds_store *s)
{
	static const uint64_t own[] = { 0, 1, 4096, 4097, 40000, 65536,
	    65537, 131072 };
	static const uint64_t room[] = { 0, 4096, 4096, 8192, 65536, 65536,
	    131072, 131072 };
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_store_stats st;
	struct ds_stream_info info;
	struct ds_append_res res;
	char path[512], big[5000], *data;
	size_t i, len;
	unsigned reads, trunc, removed;
	uint64_t syncs;
	int fd, zero;

	for (i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		is_int((long long)ds_seg_room(own[i]), (long long)room[i],
		    "room of %llu bytes", (unsigned long long)own[i]);

	must_ds(ds_store_create(s, "room/a", &c, 1000, &info));
	memset(&st, 0, sizeof(st));
	ds_store_stats_attach(&st);
	must_ds(append(s, "room/a", "hello", 0, NULL, NULL, &res));
	is_int(seg_size(info.id), 4096, "first append: the file is its room");
	syncs = st.syncs[DS_SYNC_DATA];
	is_int((long long)syncs, 1, "... made durable with one fdatasync");
	must_ds(append(s, "room/a", " world", 0, NULL, NULL, &res));
	is_int(seg_size(info.id), 4096, "an append inside the room");
	is_int((long long)st.syncs[DS_SYNC_DATA], (long long)syncs,
	    "... costs no segment sync: its bytes commit with its record");
	is_int(journal_entries(s), 1, "... in the journal");
	must_ds(ds_store_checkpoint(s));
	is_int((long long)st.syncs[DS_SYNC_DATA], (long long)syncs + 1,
	    "a checkpoint syncs the segment");
	is_int(journal_entries(s), 0, "... and empties the journal");
	memset(big, 'b', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	must_ds(append(s, "room/a", big, 0, NULL, NULL, &res));
	is_int(seg_size(info.id), 8192, "an append past it: the next room");
	ds_store_stats_attach(NULL);
	data = read_all(s, "room/a", 65536, &len, &reads);
	ok(len == 11 + sizeof(big) - 1 && memcmp(data, "hello world", 11) ==
	    0 && memcmp(data + 11, big, sizeof(big) - 1) == 0,
	    "reads give the appended bytes only");
	free(data);

	snprintf(path, sizeof(path), "%s/segments/%02x/%016" PRIx64 ".seg",
	    store_dir, (unsigned)(info.id >> 56), info.id);
	must((fd = open(path, O_RDWR)) != -1, "open %s", path);
	/* Left by crashed appends: inside the room, and past it. */
	must(pwrite(fd, "TORN", 4, (off_t)(11 + sizeof(big) - 1)) == 4,
	    "write in the room");
	must(pwrite(fd, "TORN", 4, 8192) == 4, "write past the room");
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK, "recover");
	is_int(trunc, 1, "one segment cut back to its room");
	is_int(seg_size(info.id), 8192, "... to its room, not its tail");
	must_ds(append(s, "room/a", "!", 0, NULL, NULL, &res));
	data = read_all(s, "room/a", 65536, &len, &reads);
	ok(len == 11 + sizeof(big) && data[len - 1] == '!',
	    "the next append overwrites the free space past the tail");
	free(data);

	/* A segment written before segments had room. */
	must(ftruncate(fd, (off_t)(11 + sizeof(big))) == 0, "truncate");
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK, "recover");
	is_int(trunc, 0, "nothing to cut");
	is_int(seg_size(info.id), 8192, "the segment gets its room");
	zero = 1;
	for (i = 11 + sizeof(big); i < 8192; i++) {
		must(pread(fd, big, 1, (off_t)i) == 1, "pread");
		zero &= big[0] == 0;
	}
	ok(zero, "... zero-filled");
	close(fd);
	is_int(ds_store_verify(s, NULL, &reads, &trunc), DS_OK, "verify");
	is_int(trunc, 0, "verify finds nothing wrong");
	errno = 0;
}

/* A fork of src at (at, sub), no body. */
static enum ds_err
fork_of(struct ds_store *s, const char *path, const char *src, uint64_t at,
    uint64_t sub, struct ds_stream_info *info)
{
	struct ds_create c;

	memset(&c, 0, sizeof(c));
	c.src_path = src;
	c.has_fork_at = 1;
	c.fork_at = at;
	c.sub = sub;
	return ds_store_create(s, path, &c, 1000, info);
}

static void
test_forks(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .body = "AAAA",
	    .len = 4 };
	struct ds_stream_info f0, f1, f2, f3, info;
	struct ds_append_res res;
	char *data;
	size_t len;
	unsigned reads;

	must_ds(ds_store_create(s, "f0", &c, 1000, &f0));
	must_ds(append(s, "f0", "BBBB", 0, NULL, NULL, &res));
	is_int(fork_of(s, "f1", "f0", 4, 2, &f1), DS_OK, "fork at 4+2");
	is_int(f1.base, 6, "sub-offset refines the fork point");
	is_str(f1.ctype, "text/plain", "fork inherits the content type");
	must_ds(append(s, "f1", "cc", 0, NULL, NULL, &res));
	must_ds(append(s, "f0", "ZZ", 0, NULL, NULL, &res));
	is_int(fork_of(s, "f2", "f1", 3, 0, &f2), DS_OK,
	    "fork of a fork below its fork point");
	must_ds(append(s, "f2", "dd", 0, NULL, NULL, &res));
	is_int(fork_of(s, "f3", "f2", 5, 0, &f3), DS_OK, "third level");
	must_ds(append(s, "f3", "e", 0, NULL, NULL, &res));
	data = read_all(s, "f1", 1024, &len, &reads);
	is_mem(data, len, "AAAABBcc", 8, "fork reads source then own data");
	free(data);
	data = read_all(s, "f3", 1024, &len, &reads);
	is_mem(data, len, "AAAdde", 6, "three levels stitched");
	free(data);
	data = read_all(s, "f3", 2, &len, &reads);
	is_mem(data, len, "AAAdde", 6, "stitched in small chunks too");
	free(data);
	is_int(fork_of(s, "fx", "f0", 11, 0, &info), DS_EOFFSET,
	    "fork point past the tail");
	is_int(fork_of(s, "fx", "f0", 10, 1, &info), DS_EOFFSET,
	    "sub-offset past the tail");
	is_int(fork_of(s, "fx", "nope", 0, 0, &info), DS_ENOTFOUND,
	    "missing source");

	/* Soft delete and the cascade, bottom-up and middle-first. */
	is_int(ds_store_delete(s, "f1"), DS_OK, "delete a middle stream");
	is_int(ds_store_stat(s, "f1", 1000, &info), DS_EGONE,
	    "middle stream soft-deleted");
	ok(seg_exists(f1.id), "its data stays for its forks");
	is_int(fork_of(s, "fy", "f1", 0, 0, &info), DS_ESOURCE_GONE,
	    "no forks of a soft-deleted stream");
	is_int(ds_store_create(s, "f1", &c, 1000, &info), DS_EGONE,
	    "soft-deleted path cannot be reused");
	data = read_all(s, "f3", 1024, &len, &reads);
	is_mem(data, len, "AAAdde", 6, "reads through a soft-deleted level");
	free(data);
	is_int(ds_store_delete(s, "f2"), DS_OK, "delete f2 (has a fork)");
	is_int(ds_store_delete(s, "f3"), DS_OK, "delete the leaf");
	is_int(ds_store_stat(s, "f2", 1000, &info), DS_ENOTFOUND,
	    "cascade removed f2");
	is_int(ds_store_stat(s, "f1", 1000, &info), DS_ENOTFOUND,
	    "cascade removed f1");
	ok(!seg_exists(f3.id) && !seg_exists(f2.id) && !seg_exists(f1.id),
	    "cascaded segments are gone from disk");
	is_int(ds_store_stat(s, "f0", 1000, &info), DS_OK, "root stays");
	ok(seg_exists(f0.id), "root data stays");
	{
		unsigned n, bad;

		is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
		is_int(bad, 0, "refcounts and links consistent");
	}
	is_int(ds_store_delete(s, "f0"), DS_OK, "root now deletes fully");
	ok(!seg_exists(f0.id), "root data gone");
	errno = 0;
}

/* The bytes sp says where they lie, read into buf (at most cap). */
static size_t
span_bytes(const struct ds_spans *sp, char *buf, size_t cap)
{
	size_t got = 0;
	int i;

	for (i = 0; i < sp->n; i++) {
		if (got + sp->sp[i].len > cap ||
		    ds_span_read(&sp->sp[i], 0, buf + got, sp->sp[i].len) == -1)
			return 0;
		got += sp->sp[i].len;
	}
	return got;
}

/*
 * Reads left in place (ds_store_read_spans()): across a fork chain, cut
 * at max, only from min bytes and only for byte streams; the recheck.
 */
static void
test_spans(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .body = "AAAA",
	    .len = 4 };
	struct ds_create j = { .ctype = "application/json",
	    .flags = DS_F_MSG };
	struct ds_retention pol = { .max_bytes = 3 };
	struct ds_stream_info info, f1;
	struct ds_append_res res;
	struct ds_spans sp;
	uint64_t first;
	char *data, buf[64];
	size_t len;

	must_ds(ds_store_create(s, "s0", &c, 1000, &info));
	must_ds(append(s, "s0", "BBBB", 0, NULL, NULL, &res));
	must_ds(fork_of(s, "s1", "s0", 4, 2, &f1));
	must_ds(append(s, "s1", "cc", 0, NULL, NULL, &res));
	is_int(ds_store_read_spans(s, "s1", 1, 1024, 1, 1000, &info, &data,
	    &len, &sp), DS_OK, "a fork's read in place");
	ok(data == NULL && len == 7 && sp.n == 2 && sp.from == 1,
	    "two spans, one per level, no copy");
	is_mem(buf, span_bytes(&sp, buf, sizeof(buf)), "AAABBcc", 7,
	    "they hold the bytes");
	is_int(ds_store_recheck(s, "s1", 1000, info.id, 1), DS_OK,
	    "recheck: still there");
	ds_spans_close(&sp);
	is_int(sp.n, 0, "closed");

	is_int(ds_store_read_spans(s, "s1", DS_POS_FIRST, 3, 1, 1000, &info,
	    &data, &len, &sp), DS_OK, "cut at max");
	ok(len == 3 && sp.n == 1 && sp.from == 0, "one span from 0");
	is_mem(buf, span_bytes(&sp, buf, sizeof(buf)), "AAA", 3, "AAA");
	is_int(ds_span_read(&sp.sp[0], 1, buf, 2), 0, "a span's bytes from 1");
	is_mem(buf, 2, "AA", 2, "AA");
	is_int(ds_span_read(&sp.sp[0], 2, buf, 2), -1, "not past its end");
	ds_spans_close(&sp);

	is_int(ds_store_read_spans(s, "s1", 0, 1024, 9, 1000, &info, &data,
	    &len, &sp), DS_OK, "fewer bytes than min");
	ok(sp.n == 0 && data != NULL, "come as a copy");
	is_mem(data, len, "AAAABBcc", 8, "AAAABBcc");
	free(data);

	must_ds(ds_store_create(s, "sj", &j, 1000, &info));
	must_ds(append(s, "sj", "[1,2]", 0, NULL, NULL, &res));
	is_int(ds_store_read_spans(s, "sj", 0, 1024, 1, 1000, &info, &data,
	    &len, &sp), DS_OK, "a JSON stream's read");
	ok(sp.n == 0 && data != NULL, "comes as a copy (records framed)");
	free(data);

	must_ds(ds_store_read_spans(s, "s0", 0, 1024, 1, 1000, &info, &data,
	    &len, &sp));
	must_ds(ds_store_trim(s, "s0", &pol, 2000, &first));
	is_int(ds_store_recheck(s, "s0", 2000, info.id, 0), DS_ETRIMMED,
	    "recheck after a trim past the read: trimmed");
	is_int(ds_store_recheck(s, "s0", 2000, info.id, first), DS_OK,
	    "from the new earliest position: still there");
	ds_spans_close(&sp);
	must_ds(ds_store_delete(s, "s1"));
	is_int(ds_store_recheck(s, "s1", 2000, f1.id, 0), DS_ENOTFOUND,
	    "recheck after a delete: not found");
	must_ds(fork_of(s, "s1", "s0", 8, 0, &info));
	is_int(ds_store_recheck(s, "s1", 2000, f1.id, 8), DS_ENOTFOUND,
	    "nor in a new stream at the same path");
}

/*
 * A stream created without a body has no segment file until its first
 * append: reads, forks, verify and delete do without one, and an append
 * pinned to such a stream deleted meanwhile leaves no file behind.
 */
static void
test_unborn(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info a, f, gone, again;
	struct ds_append app;
	struct ds_append_res res;
	char *data;
	size_t len;
	unsigned reads, n, bad;

	must_ds(ds_store_create(s, "u/a", &c, 1000, &a));
	ok(!seg_exists(a.id), "an empty create makes no file");
	data = read_all(s, "u/a", 1024, &len, &reads);
	is_int(len, 0, "an empty stream reads empty");
	free(data);
	is_int(fork_of(s, "u/f", "u/a", 0, 0, &f), DS_OK,
	    "a fork of an empty stream");
	ok(!seg_exists(f.id), "makes no file either");
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 0, "streams without files verify clean");
	is_int(append(s, "u/a", "abc", 0, NULL, NULL, &res), DS_OK,
	    "first append");
	ok(seg_exists(a.id), "makes the file");
	is_int(append(s, "u/a", "de", 0, NULL, NULL, &res), DS_OK,
	    "second append");
	data = read_all(s, "u/a", 1024, &len, &reads);
	is_mem(data, len, "abcde", 5, "both read back");
	free(data);
	is_int(append(s, "u/f", "x", 0, NULL, NULL, &res), DS_OK,
	    "append to the fork");
	data = read_all(s, "u/f", 1024, &len, &reads);
	is_mem(data, len, "x", 1, "the fork reads its own byte");
	free(data);

	must_ds(ds_store_create(s, "u/g", &c, 1000, &gone));
	must_ds(ds_store_delete(s, "u/g"));
	memset(&app, 0, sizeof(app));
	app.id = gone.id;
	app.body = "late";
	app.len = 4;
	app.ctype_ok = 1;
	is_int(ds_store_append(s, "u/g", &app, 1000, &res), DS_ENOTFOUND,
	    "append pinned to an empty stream deleted since: not found");
	ok(!seg_exists(gone.id), "and no file made for it");
	must_ds(ds_store_create(s, "u/g", &c, 1000, &again));
	is_int(ds_store_append(s, "u/g", &app, 1000, &res), DS_EREPLACED,
	    "pinned to the one before a re-create: replaced");
	ok(!seg_exists(gone.id) && !seg_exists(again.id), "no file made");
	is_int(ds_store_delete(s, "u/a"), DS_OK, "delete (has a fork)");
	is_int(ds_store_delete(s, "u/f"), DS_OK, "delete the fork");
	ok(!seg_exists(a.id) && !seg_exists(f.id), "files gone");
	errno = 0;
}

static long
seg_blocks(uint64_t id)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/segments/%02x/%016" PRIx64 ".seg",
	    store_dir, (unsigned)(id >> 56), id);
	return stat(path, &st) == 0 ? (long)st.st_blocks : -1;
}

/*
 * Retention: trims by size, age and position end on append boundaries;
 * reads below the earliest retained position are DS_ETRIMMED, DS_POS_FIRST
 * starts there; forks see what their source keeps; punching frees blocks;
 * verify and recovery understand trimmed streams.
 */
static void
test_retention(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_create j = { .ctype = "application/json",
	    .flags = DS_F_MSG };
	struct ds_retention pol;
	struct ds_stream_info info, fk;
	uint64_t first, first2;
	char *data;
	size_t len;
	unsigned n, bad, trunc, removed;
	long blocks0;
	int i;

	must_ds(ds_store_create(s, "rt/b", &c, 1000, &info));
	for (i = 0; i < 300; i++)	/* 300 appends of 1000 bytes */
		append_at(s, "rt/b", 1000, 0, i, 1000 + i);
	blocks0 = seg_blocks(info.id);
	memset(&pol, 0, sizeof(pol));
	pol.max_bytes = 100000;
	is_int(ds_store_trim(s, "rt/b", &pol, 2000, &first), DS_OK,
	    "size trim");
	ok(first > 0 && 300000 - first <= 100000 && first % 1000 == 0,
	    "keeps at most 100,000 bytes, on an append boundary");
	ok(300000 - first > 100000 - DS_INDEX_BYTES - 1000,
	    "and within an index step of the limit");
	is_int(ds_store_read(s, "rt/b", 0, 10, 2000, &info, &data, &len),
	    DS_ETRIMMED, "a read below the earliest position: trimmed");
	is_int(ds_store_read(s, "rt/b", first - 1, 10, 2000, &info, &data,
	    &len), DS_ETRIMMED, "one byte below: trimmed");
	is_int(ds_store_read(s, "rt/b", DS_POS_FIRST, 1000, 2000, &info,
	    &data, &len), DS_OK, "a read from the earliest position");
	is_int(info.first, first, "reports it");
	ok(len == 1000 && data[999] == '\n', "whole append units from there");
	free(data);
	is_int(ds_store_stat(s, "rt/b", 2000, &info), DS_OK, "stat");
	is_int(info.first, first, "stat reports the earliest position");
	is_int(ds_store_trim(s, "rt/b", &pol, 2000, &first2), DS_OK,
	    "the same trim again");
	is_int(first2, first, "moves nothing");
	is_int(ds_store_punch(s, "rt/b", 2000, 1000), DS_OK,
	    "punch within the grace period");
	is_int(seg_blocks(info.id), blocks0, "frees nothing yet");
	is_int(ds_store_punch(s, "rt/b", 3000, 1000), DS_OK,
	    "punch after it");
	ok(seg_blocks(info.id) < blocks0 - (long)(first / 512) + 16,
	    "frees the trimmed bytes' blocks");
	data = NULL;
	is_int(ds_store_read(s, "rt/b", first, 300000, 3000, &info, &data,
	    &len), DS_OK, "retained bytes read after the punch");
	is_int(len, 300000 - first, "all of them");
	free(data);

	/* Age: a point a second at least (appends of 100 bytes every 200 ms). */
	must_ds(ds_store_create(s, "rt/a", &c, 1000, &info));
	for (i = 0; i < 50; i++)
		append_at(s, "rt/a", 100, 0, i, 1000 + 200 * i);
	memset(&pol, 0, sizeof(pol));
	pol.max_age_ms = 5000;
	is_int(ds_store_trim(s, "rt/a", &pol, 10500, &first2), DS_OK,
	    "age trim");
	is_int(first2, 2100, "drops what is 5 s old by the index "
	    "(the point of 5.0 s at 2,100)");
	is_int(ds_store_read(s, "rt/a", 2000, 10, 10500, &info, &data, &len),
	    DS_ETRIMMED, "below it: trimmed");
	/* One-off trim up to a position. */
	memset(&pol, 0, sizeof(pol));
	pol.before = 299500;
	is_int(ds_store_trim(s, "rt/b", &pol, 1300, &first2), DS_OK,
	    "trim up to a position");
	ok(first2 <= 299500 && first2 % 1000 == 0,
	    "stops at the last boundary point below it");

	/* JSON: a trim never cuts a message; reads go on from it. */
	must_ds(ds_store_create(s, "rt/j", &j, 1000, &info));
	for (i = 0; i < 200; i++)
		append_at(s, "rt/j", 700, 1, i, 1000 + i);
	memset(&pol, 0, sizeof(pol));
	pol.max_bytes = 50000;
	is_int(ds_store_trim(s, "rt/j", &pol, 2000, &first), DS_OK,
	    "JSON trim");
	ok(first % 700 == 0 && first > 0, "on a message boundary");
	is_int(ds_store_read(s, "rt/j", DS_POS_FIRST, 1, 2000, &info, &data,
	    &len), DS_OK, "JSON read from the earliest position");
	ok(len == 700 && data[0] == '[', "a whole message");
	free(data);

	/* Forks see what the source keeps. */
	is_int(fork_of(s, "rt/f-low", "rt/b", first2 - 1000, 0, &fk),
	    DS_ETRIMMED, "a fork below the source's earliest position");
	is_int(fork_of(s, "rt/f", "rt/b", 299000, 0, &fk), DS_OK,
	    "a fork above it");
	is_int(ds_store_stat(s, "rt/f", 2000, &fk), DS_OK, "fork stat");
	is_int(fk.first, first2, "the fork's earliest is its source's");
	for (i = 0; i < 100; i++)	/* the source goes on */
		append_at(s, "rt/b", 1000, 0, i, 5000 + i);
	memset(&pol, 0, sizeof(pol));
	pol.before = 400000;
	must_ds(ds_store_trim(s, "rt/b", &pol, 6000, &first));
	ok(first > 299000, "the source trimmed past the fork point");
	is_int(ds_store_stat(s, "rt/f", 6000, &fk), DS_OK, "fork stat again");
	is_int(fk.first, 299000, "the fork keeps only its own data");
	is_int(ds_store_read(s, "rt/f", DS_POS_FIRST, 10, 2000, &fk, &data,
	    &len), DS_OK, "the fork reads from there");
	is_int(len, 0, "nothing (no own data yet)");

	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 0, "trimmed streams verify clean");
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK,
	    "recovery punches every trimmed stream");
	is_int(ds_store_delete(s, "rt/f"), DS_OK, "delete the fork");
	is_int(ds_store_delete(s, "rt/b"), DS_OK, "delete the source");
	errno = 0;
}

/*
 * An append or a fork pinned to the stream its caller checked never lands
 * in a stream created at the same path since (issue: a JSON body framed
 * for one stream landed in a text stream that replaced it, and back).
 */
static void
test_replaced(struct ds_store *s)
{
	struct ds_create json = { .ctype = "application/json",
	    .flags = DS_F_MSG }, text = { .ctype = "text/plain" };
	struct ds_create fk = { .src_path = "rp/src" };
	struct ds_stream_info old, now, info;
	struct ds_append a;
	struct ds_append_res res;
	char *data;
	size_t len;

	is_int(ds_store_create(s, "rp/s", &json, 1000, &old), DS_OK,
	    "JSON stream");
	is_int(ds_store_delete(s, "rp/s"), DS_OK, "deleted");
	is_int(ds_store_create(s, "rp/s", &text, 1000, &now), DS_OK,
	    "created again as text");
	memset(&a, 0, sizeof(a));
	a.id = old.id;
	a.body = "1\n1\n";
	a.len = 4;
	a.ctype_ok = 1;
	is_int(ds_store_append(s, "rp/s", &a, 1000, &res), DS_EREPLACED,
	    "append framed for the old stream is refused");
	is_int(ds_store_read(s, "rp/s", 0, 1024, 1000, &info, &data, &len),
	    DS_OK, "new stream reads");
	is_int(len, 0, "and holds nothing");
	free(data);
	a.id = now.id;
	a.body = "ok";
	a.len = 2;
	is_int(ds_store_append(s, "rp/s", &a, 1000, &res), DS_OK,
	    "append pinned to the current stream lands");
	is_int(res.id, now.id, "and reports the id it landed in");
	is_int(ds_store_delete(s, "rp/s"), DS_OK, "deleted again");
	is_int(ds_store_append(s, "rp/s", &a, 1000, &res), DS_ENOTFOUND,
	    "append to a path with no stream: not found");

	is_int(ds_store_create(s, "rp/src", &text, 1000, &old), DS_OK,
	    "fork source");
	is_int(ds_store_delete(s, "rp/src"), DS_OK, "source deleted");
	is_int(ds_store_create(s, "rp/src", &json, 1000, &now), DS_OK,
	    "source created again as JSON");
	fk.src_want = old.id;
	fk.body = "raw";
	fk.len = 3;
	is_int(ds_store_create(s, "rp/fork", &fk, 1000, &info), DS_EREPLACED,
	    "fork framed for the old source is refused");
	is_int(ds_store_stat(s, "rp/fork", 1000, &info), DS_ENOTFOUND,
	    "and not created");
	fk.src_want = now.id;
	fk.body = "[1]\n";
	fk.len = 4;
	is_int(ds_store_create(s, "rp/fork", &fk, 1000, &info), DS_OK,
	    "fork pinned to the current source is created");

	/*
	 * A soft-deleted stream (its fork still reads it) keeps its
	 * segment: an append pinned to it gets past the segment and is
	 * refused under the lock, and the thread reads on.
	 */
	is_int(ds_store_delete(s, "rp/src"), DS_OK,
	    "source with a fork deleted");
	memset(&a, 0, sizeof(a));
	a.id = now.id;
	a.body = "[2]\n";
	a.len = 4;
	a.ctype_ok = 1;
	is_int(ds_store_append(s, "rp/src", &a, 1000, &res), DS_EGONE,
	    "append pinned to a soft-deleted stream: gone");
	is_int(ds_store_read(s, "rp/fork", 0, 1024, 1000, &info, &data, &len),
	    DS_OK, "the same thread reads on");
	is_int(len, 4, "the fork's own message");
	free(data);
}

/*
 * Fork chains: DS_CHAIN_MAX levels can be created and read, one more is
 * refused; --verify catches what a read could not use: a chain that loops,
 * a segment shorter than its tail, records that are not whole or invalid.
 */
static int
no_x(const char *rec, size_t len)
{
	return memchr(rec, 'x', len) == NULL;
}

static void
test_depth(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain", .body = "r", .len = 1 };
	struct ds_create m = { .ctype = "application/json",
	    .flags = DS_F_MSG };
	struct ds_stream_info info;
	struct ds_append_res res;
	struct ds_rec r;
	char path[32], prev[32], segpath[4096];
	char *data;
	size_t len;
	unsigned reads, n, bad;
	MDB_txn *txn;
	MDB_val k, v;
	char buf[DS_REC_BUFSZ];
	uint64_t src_id;
	int i, fails = 0;

	must_ds(ds_store_create(s, "d/0", &c, 1000, &info));
	for (i = 1; i < DS_CHAIN_MAX; i++) {
		snprintf(prev, sizeof(prev), "d/%d", i - 1);
		snprintf(path, sizeof(path), "d/%d", i);
		memset(&c, 0, sizeof(c));
		c.src_path = prev;
		c.body = "x";
		c.len = 1;
		if (ds_store_create(s, path, &c, 1000, &info) != DS_OK)
			fails++;
	}
	is_int(fails, 0, "forks nest %d deep", DS_CHAIN_MAX - 1);
	data = read_all(s, path, 1024, &len, &reads);
	is_int(len, DS_CHAIN_MAX, "the deepest fork reads every level");
	free(data);
	memset(&c, 0, sizeof(c));
	c.src_path = path;
	is_int(ds_store_create(s, "d/deeper", &c, 1000, &info), DS_EDEPTH,
	    "one level more is refused");
	is_int(ds_store_stat(s, "d/deeper", 1000, &info), DS_ENOTFOUND,
	    "and not created");
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 0, "a chain at the limit is fine");

	/* A record whose source is itself: a loop no read can follow. */
	c.src_path = "d/0";
	must_ds(ds_store_create(s, "d/loop", &c, 1000, &info));
	must(mdb_txn_begin(s->env, NULL, 0, &txn) == 0, "mdb_txn_begin");
	k.mv_data = (void *)"d/loop";
	k.mv_size = 6;
	must(mdb_get(txn, s->streams, &k, &v) == 0 &&
	    ds_rec_decode(&v, &r) == 0, "d/loop record");
	src_id = r.info.src_id;
	r.info.src_id = r.info.id;
	r.refs = 1;
	v.mv_data = buf;
	v.mv_size = ds_rec_encode(&r, buf, sizeof(buf));
	must(mdb_put(txn, s->streams, &k, &v, 0) == 0 &&
	    mdb_txn_commit(txn) == 0, "d/loop put");
	is_int(ds_store_read(s, "d/loop", 0, 1024, 1000, &info, &data, &len),
	    DS_ECORRUPT, "a looping chain cannot be read");
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	ok(bad >= 1, "verify reports the loop (%u problems)", bad);
	r.info.src_id = src_id;
	r.refs = 0;
	v.mv_size = ds_rec_encode(&r, buf, sizeof(buf));
	must(mdb_txn_begin(s->env, NULL, 0, &txn) == 0 &&
	    mdb_put(txn, s->streams, &k, &v, 0) == 0 &&
	    mdb_txn_commit(txn) == 0, "d/loop repair");
	is_int(ds_store_delete(s, "d/loop"), DS_OK, "loop removed");
	for (i = DS_CHAIN_MAX - 1; i >= 0; i--) {
		snprintf(path, sizeof(path), "d/%d", i);
		must_ds(ds_store_delete(s, path));
	}

	/* Message streams: whole records, each one valid. */
	must_ds(ds_store_create(s, "d/msg", &m, 1000, &info));
	must_ds(append(s, "d/msg", "[1]\n", 0, NULL, NULL, &res));
	is_int(ds_store_verify(s, no_x, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 0, "valid records pass");
	must_ds(append(s, "d/msg", "x\n", 0, NULL, NULL, &res));
	is_int(ds_store_verify(s, no_x, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 1, "a record the validator refuses is reported");
	must_ds(ds_store_delete(s, "d/msg"));
	must_ds(ds_store_create(s, "d/msg", &m, 1000, &info));
	must_ds(append(s, "d/msg", "[1]\n[2", 0, NULL, NULL, &res));
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 1, "bytes that end in no record end are reported");
	must_ds(ds_store_delete(s, "d/msg"));

	/* A segment that lost committed bytes. */
	memset(&c, 0, sizeof(c));
	must_ds(ds_store_create(s, "d/short", &c, 1000, &info));
	must_ds(append(s, "d/short", "abcdef", 0, NULL, NULL, &res));
	snprintf(segpath, sizeof(segpath), "%s/segments/%02x/%016" PRIx64
	    ".seg", store_dir, (unsigned)(info.id >> 56), info.id);
	must(truncate(segpath, 2) == 0, "truncate %s", segpath);
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 1, "a segment shorter than its tail is reported");
	must_ds(ds_store_delete(s, "d/short"));
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "verify runs");
	is_int(bad, 0, "clean again");
}

#define NTHREADS 8
#define NAPPENDS 50

static struct ds_store *shared;

static void *
writer(void *arg)
{
	struct ds_append_res res;
	char body[48];
	long t = (long)arg;
	int i, bad = 0;

	for (i = 0; i < NAPPENDS; i++) {
		snprintf(body, sizeof(body), "<%ld:%02d>", t, i);
		if (append(shared, t % 2 ? "c1" : "c2", body, 0, NULL, NULL,
		    &res) != DS_OK)
			bad++;
	}
	return (void *)(long)bad;
}

static void
test_concurrency(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	pthread_t th[NTHREADS];
	void *rv;
	char *data, *p, tok[48];
	size_t len, l2;
	unsigned reads;
	long t;
	int i, bad = 0, missing = 0;

	shared = s;
	must_ds(ds_store_create(s, "c1", &c, 1000, &info));
	must_ds(ds_store_create(s, "c2", &c, 1000, &info));
	for (t = 0; t < NTHREADS; t++)
		must(pthread_create(&th[t], NULL, writer, (void *)t) == 0,
		    "pthread_create");
	for (t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], &rv);
		bad += (int)(long)rv;
	}
	is_int(bad, 0, "every concurrent append succeeded");
	data = read_all(s, "c1", 4096, &len, &reads);
	p = read_all(s, "c2", 4096, &l2, &reads);
	is_int(len + l2, NTHREADS * NAPPENDS * 6, "no byte lost or added");
	for (t = 0; t < NTHREADS; t++)
		for (i = 0; i < NAPPENDS; i++) {
			snprintf(tok, sizeof(tok), "<%ld:%02d>", t, i);
			if (!strstr(t % 2 ? data : p, tok))
				missing++;
		}
	is_int(missing, 0, "every append present, whole");
	free(data);
	free(p);
}

/*
 * The shared commit: three changes queued behind a commit in progress go
 * into one transaction; the middle one fails after writing, and only it
 * is undone: the transaction is begun again with each change nested.
 */
struct sc_change {
	struct ds_commit cm;
	uint64_t	 key;
	enum ds_err	 ret;		/* what apply returns */
	int		 calls;
	int		 hold;		/* apply waits for sc_release */
	int		 fail_call;	/* this call (1, 2, ...) fails */
	uint64_t	 unless;	/* fails if this key is there */
};
static pthread_mutex_t sc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sc_cv = PTHREAD_COND_INITIALIZER;
static int sc_held, sc_release;

static enum ds_err
sc_apply(struct ds_store *s, MDB_txn *txn, void *arg)
{
	struct sc_change *c = arg;
	static char x[] = "x";
	MDB_val k = { sizeof(c->key), &c->key }, v = { 1, x };

	c->calls++;
	if (c->hold) {
		pthread_mutex_lock(&sc_mu);
		sc_held = 1;
		pthread_cond_broadcast(&sc_cv);
		while (!sc_release)
			pthread_cond_wait(&sc_cv, &sc_mu);
		pthread_mutex_unlock(&sc_mu);
	}
	if (c->calls == c->fail_call)
		return DS_EGONE;
	if (c->unless) {
		MDB_val uk = { sizeof(c->unless), &c->unless }, uv;

		if (mdb_get(txn, s->ids, &uk, &uv) == 0)
			return DS_EEXIST;
	}
	if (mdb_put(txn, s->ids, &k, &v, 0) != 0)
		return DS_EIO;
	return c->ret;
}

static void *
sc_commit(void *arg)
{
	struct sc_change *c = arg;

	ds_commit(shared, &c->cm);
	return NULL;
}

static int
sc_queued(struct ds_store *s)
{
	struct ds_commit *c;
	int n = 0;

	pthread_mutex_lock(&s->cq_mu);
	for (c = s->cq; c; c = c->next)
		n++;
	pthread_mutex_unlock(&s->cq_mu);
	return n;
}

static int
sc_present(struct ds_store *s, uint64_t key)
{
	MDB_txn *txn;
	MDB_val k = { sizeof(key), &key }, v;
	int rc;

	must(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0, "txn");
	rc = mdb_get(txn, s->ids, &k, &v);
	mdb_txn_abort(txn);
	return rc == 0;
}

/* Queues c[1..3] behind c[0], held in its apply, then lets them commit. */
static void
sc_run(struct ds_store *s, struct sc_change *c)
{
	pthread_t th[4];
	int i, n;

	shared = s;
	sc_held = sc_release = 0;
	for (i = 0; i < 4; i++)
		c[i].cm.apply = sc_apply, c[i].cm.arg = &c[i];
	must(pthread_create(&th[0], NULL, sc_commit, &c[0]) == 0, "create");
	pthread_mutex_lock(&sc_mu);
	while (!sc_held)
		pthread_cond_wait(&sc_cv, &sc_mu);
	pthread_mutex_unlock(&sc_mu);
	for (i = 1; i < 4; i++) {
		must(pthread_create(&th[i], NULL, sc_commit, &c[i]) == 0,
		    "create");
		for (n = 0; sc_queued(s) < i && n < 5000; n++)
			usleep(1000);
	}
	is_int(sc_queued(s), 3, "three changes wait behind the commit");
	pthread_mutex_lock(&sc_mu);
	sc_release = 1;
	pthread_cond_broadcast(&sc_cv);
	pthread_mutex_unlock(&sc_mu);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
}

static void
test_shared_commit(struct ds_store *s)
{
	struct sc_change c[4] = {
		{ .key = 0x5c00, .ret = DS_OK, .hold = 1 },
		{ .key = 0x5c01, .ret = DS_OK },
		{ .key = 0x5c02, .ret = DS_EEXIST },
		{ .key = 0x5c03, .ret = DS_OK },
	};
	struct sc_change d[4] = {
		{ .key = 0x5d00, .ret = DS_OK, .hold = 1 },
		{ .key = 0x5d01, .ret = DS_OK, .fail_call = 2 },
		{ .key = 0x5d02, .ret = DS_OK, .unless = 0x5d01 },
		{ .key = 0x5d03, .ret = DS_OK },
	};

	sc_run(s, c);
	ok(c[0].cm.e == DS_OK && c[1].cm.e == DS_OK && c[3].cm.e == DS_OK &&
	    c[0].cm.committed && c[1].cm.committed && c[3].cm.committed,
	    "the changes that applied are committed");
	is_int(c[2].cm.e, DS_EEXIST, "the failing change gets its own error");
	ok(sc_present(s, 0x5c01) && sc_present(s, 0x5c03) &&
	    !sc_present(s, 0x5c02), "its write is undone, the others' kept");
	ok(c[1].calls == 2 && c[2].calls == 2 && c[3].calls == 1,
	    "begun again once, nested, after the failure");
	/*
	 * As when another process commits between the two attempts: d[2]
	 * fails the first time only because of d[1], which then fails the
	 * second time. d[2]'s answer must come from what commits.
	 */
	sc_run(s, d);
	ok(d[1].cm.e == DS_EGONE && !sc_present(s, 0x5d01),
	    "a change that fails when begun again is not there");
	ok(d[2].cm.e == DS_OK && d[2].cm.committed && sc_present(s, 0x5d02),
	    "the change it had made fail is judged again, and commits");
}

/*
 * Room gone short. The in-room path (write_data(), batch.c) trusts that
 * the file already spans ds_seg_room(own), allocated and durable, and
 * checks nothing. A segment shorter than its room (one written before
 * rooms, on a server started without ds-admin recover; or one whose
 * zero-fill recovery could not finish) then grows its length, and maybe
 * its blocks, with sync_file_range() and a flush made by fdatasync() of
 * another member's file: the new length is in no committed journal
 * transaction, and a power loss takes the acknowledged bytes.
 */
struct rs_arg {
	struct ds_store	*s;
	const char	*path;
	const char	*body;
	enum ds_err	 e;
};

static void *
rs_append(void *arg)
{
	struct rs_arg *a = arg;
	struct ds_append_res res;

	a->e = append(a->s, a->path, a->body, 0, NULL, NULL, &res);
	return NULL;
}

static void
seg_name(uint64_t id, char *path, size_t sz)
{
	snprintf(path, sz, "%s/segments/%02x/%016" PRIx64 ".seg", store_dir,
	    (unsigned)(id >> 56), id);
}

static void
test_room_short(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct sc_change hold = { .key = 0x7200, .ret = DS_OK, .hold = 1 };
	struct ds_stream_info ia, ib;
	struct ds_append_res res;
	struct ds_store_stats st;
	struct rs_arg aa = { s, "rs/a", "!!!!!", DS_OK };
	struct rs_arg ab = { s, "rs/b", "?????", DS_OK };
	pthread_t th[3];
	char path[512];
	off_t before;
	int n, sync_flush = s->sync_flush;

	if (!s->range_sync) {
		note("no room writes on this file system (not ext4 or XFS)");
		return;
	}
	/*
	 * The count below tells rs/a's own fdatasync from the shared flush,
	 * which the held commit's LMDB sync could serve (s->sync_flush).
	 */
	s->sync_flush = 0;
	s->journal_max = 0;	/* the flush path: see test_journal() */
	must_ds(ds_store_create(s, "rs/a", &c, 1000, &ia));
	must_ds(ds_store_create(s, "rs/b", &c, 1000, &ib));
	must_ds(append(s, "rs/a", "hello world", 0, NULL, NULL, &res));
	must_ds(append(s, "rs/b", "hello world", 0, NULL, NULL, &res));
	/* rs/a as written before rooms existed: as long as its tail. */
	seg_name(ia.id, path, sizeof(path));
	must(truncate(path, 11) == 0, "truncate %s", path);
	sync();

	/* Both batches queue behind a commit in progress: one shared commit. */
	shared = s;
	sc_held = sc_release = 0;
	hold.cm.apply = sc_apply;
	hold.cm.arg = &hold;
	must(pthread_create(&th[0], NULL, sc_commit, &hold) == 0, "create");
	pthread_mutex_lock(&sc_mu);
	while (!sc_held)
		pthread_cond_wait(&sc_cv, &sc_mu);
	pthread_mutex_unlock(&sc_mu);
	memset(&st, 0, sizeof(st));
	ds_store_stats_attach(&st);
	before = seg_size(ia.id);
	/* rs/b first: its file is the one the shared flush fdatasync()s. */
	must(pthread_create(&th[1], NULL, rs_append, &ab) == 0, "create");
	for (n = 0; sc_queued(s) < 1 && n < 5000; n++)
		usleep(1000);
	must(pthread_create(&th[2], NULL, rs_append, &aa) == 0, "create");
	for (n = 0; sc_queued(s) < 2 && n < 5000; n++)
		usleep(1000);
	is_int(sc_queued(s), 2, "both batches wait for one shared commit");
	pthread_mutex_lock(&sc_mu);
	sc_release = 1;
	pthread_cond_broadcast(&sc_cv);
	pthread_mutex_unlock(&sc_mu);
	for (n = 0; n < 3; n++)
		pthread_join(th[n], NULL);
	ds_store_stats_attach(NULL);
	ok(aa.e == DS_OK && ab.e == DS_OK, "both appends acknowledged");
	diag("rs/a: %lld -> %lld bytes; segment fdatasyncs: %llu",
	    (long long)before, (long long)seg_size(ia.id),
	    (unsigned long long)st.syncs[DS_SYNC_DATA]);
	ok(seg_size(ia.id) == before ||
	    st.syncs[DS_SYNC_DATA] >= 2,
	    "an append that changed its file's length had that file "
	    "fdatasync()ed (not only another member's)");
	is_int(seg_size(ia.id), (long long)ds_seg_room(16),
	    "... and the segment spans its room again");
	s->sync_flush = sync_flush;
	s->journal_max = DS_JOURNAL_MAX;
	errno = 0;
}

/*
 * Recovery that cannot finish a zero-fill (a full disk; here a file size
 * limit) leaves a segment shorter than its room, partly zero-filled and
 * not synced, reports nothing (exit 0) and the server then appends into
 * that "room" with sync_file_range() only.
 */
static void
test_room_recover_short(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	struct ds_append_res res;
	struct rlimit rl0, rl;
	unsigned trunc, removed;
	char path[512], body[5001];
	enum ds_err e;

	must_ds(ds_store_create(s, "rr/a", &c, 1000, &info));
	memset(body, 'x', 5000);
	body[5000] = '\0';
	must_ds(append(s, "rr/a", body, 0, NULL, NULL, &res));
	seg_name(info.id, path, sizeof(path));
	must(truncate(path, 5000) == 0, "truncate %s", path);	/* no room */
	must(getrlimit(RLIMIT_FSIZE, &rl0) == 0, "getrlimit");
	signal(SIGXFSZ, SIG_IGN);
	rl = rl0;
	rl.rlim_cur = 6000;
	must(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit");
	e = ds_store_recover(s, 0, &trunc, &removed);
	must(setrlimit(RLIMIT_FSIZE, &rl0) == 0, "setrlimit");
	signal(SIGXFSZ, SIG_DFL);
	diag("recover: %d, segment %lld bytes of its room %llu", (int)e,
	    (long long)seg_size(info.id),
	    (unsigned long long)ds_seg_room(5000));
	is_int(seg_size(info.id), 5000,
	    "a room recovery cannot write is cut back to the tail");
	/* The next append must not trust a room that is not there. */
	must_ds(append(s, "rr/a", "tail", 0, NULL, NULL, &res));
	is_int(seg_size(info.id), (long long)ds_seg_room(5004),
	    "an append into a room recovery left short gives it its room");
	errno = 0;
}

/*
 * A room restored as a hole (rsync -S, tar -S, cp --sparse=always turn
 * its zeros into one): recovery must allocate it again, or the first
 * append there allocates under a flush that does not commit it.
 */
static void
test_room_hole(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	struct ds_append_res res;
	unsigned trunc, removed;
	char path[512], body[10001];
	off_t h;
	int fd;

	must_ds(ds_store_create(s, "rh/a", &c, 1000, &info));
	memset(body, 'x', 10000);
	body[10000] = '\0';
	must_ds(append(s, "rh/a", body, 0, NULL, NULL, &res));
	is_int(seg_size(info.id), 16384, "10000 bytes: a 16 KiB room");
	seg_name(info.id, path, sizeof(path));
	must((fd = open(path, O_RDWR)) != -1, "open %s", path);
	must(fsync(fd) == 0, "fsync");
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 12288,
	    4096) == -1) {
		note("no hole punching here: %s", strerror(errno));
		close(fd);
		return;
	}
	must_ds(ds_store_recover(s, 0, &trunc, &removed));
	h = lseek(fd, 8192, SEEK_HOLE);
	is_int(h, 16384, "recover leaves no hole in the room (first hole at "
	    "%lld)", (long long)h);
	close(fd);
	errno = 0;
}

/* Committed state is there after the store is closed and opened again. */
static void
test_reopen(void)
{
	struct ds_create c = { .ctype = "text/plain", .body = "12345",
	    .len = 5 };
	struct ds_stream_info info;
	struct ds_append_res res;
	struct ds_store *s;

	s = store_begin("store", "reopen");
	must_ds(ds_store_create(s, "r", &c, 1000, &info));
	must_ds(append(s, "r", "67", 0, NULL, NULL, &res));
	ds_store_close(s);
	s = open_store(store_dir);
	is_int(ds_store_stat(s, "r", 1000, &info), DS_OK,
	    "state survives reopening");
	is_int(info.tail, 7, "tail survives reopening");
	store_end(s);
}

/* Overwrites n bytes of stream id's segment at with zeros. */
static void
seg_zero(uint64_t id, off_t at, size_t n)
{
	char path[512], zero[64] = { 0 };
	int fd;

	must(n <= sizeof(zero), "seg_zero: %zu bytes", n);
	seg_name(id, path, sizeof(path));
	must((fd = open(path, O_WRONLY)) != -1, "open %s", path);
	must(pwrite(fd, zero, n, at) == (ssize_t)n, "pwrite %s", path);
	close(fd);
}

/*
 * The journal (store/journal.c): a small append inside its segment's room
 * commits a copy of its bytes instead of syncing the segment; opening the
 * store writes them back (here after their segment pages were "lost":
 * zeroed behind the store's back, as a machine's crash could leave them),
 * as far as each stream still has them; a server process's thread
 * checkpoints the journal on its own.
 */
static void
test_journal(void)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_store_cfg cfg = { .dir = NULL };
	struct ds_stream_info ia, ib, ic, id;
	struct ds_append_res res;
	struct ds_store_stats st;
	struct ds_store *s;
	char path[512], moved[600], *data;
	size_t len;
	unsigned reads;
	int n;

	s = store_begin("store", "journal");
	must_ds(ds_store_create(s, "j/a", &c, 1000, &ia));
	must_ds(ds_store_create(s, "j/b", &c, 1000, &ib));
	must_ds(ds_store_create(s, "j/c", &c, 1000, &ic));
	must_ds(ds_store_create(s, "j/d", &c, 1000, &id));
	memset(&st, 0, sizeof(st));
	ds_store_stats_attach(&st);
	must_ds(append(s, "j/a", "hello ", 0, NULL, NULL, &res));
	is_int(journal_entries(s), 0, "a stream's first bytes make its file: "
	    "synced, not journalled");
	is_int((long long)st.syncs[DS_SYNC_DATA], 1, "... one fdatasync");
	must_ds(append(s, "j/a", "world", 0, NULL, NULL, &res));
	must_ds(append(s, "j/a", "!!", 0, NULL, NULL, &res));
	must_ds(append(s, "j/b", "abc", 0, NULL, NULL, &res));
	must_ds(append(s, "j/b", "xyz", 0, NULL, NULL, &res));
	must_ds(append(s, "j/c", "abc", 0, NULL, NULL, &res));
	must_ds(append(s, "j/c", "def", 0, NULL, NULL, &res));
	is_int(journal_entries(s), 4, "appends inside the room: journalled");
	is_int((long long)st.syncs[DS_SYNC_DATA], 3,
	    "... and no segment synced for them");
	s->journal_max = 2;
	must_ds(append(s, "j/d", "1", 0, NULL, NULL, &res));
	must_ds(append(s, "j/d", "234", 0, NULL, NULL, &res));
	is_int(journal_entries(s), 4, "a batch over the limit is not");
	s->journal_max = DS_JOURNAL_MAX;
	ds_store_stats_attach(NULL);
	must_ds(ds_store_delete(s, "j/c"));
	ds_store_close(s);

	/* Lost: what was only journalled. */
	seg_zero(ia.id, 6, 7);
	seg_zero(ib.id, 3, 3);
	s = open_store(store_dir);
	is_int(journal_entries(s), 0, "opening the store replays the journal");
	data = read_all(s, "j/a", 65536, &len, &reads);
	ok(len == 13 && memcmp(data, "hello world!!", 13) == 0,
	    "... and the lost bytes are back");
	free(data);
	data = read_all(s, "j/b", 65536, &len, &reads);
	ok(len == 6 && memcmp(data, "abcxyz", 6) == 0, "... in every stream");
	free(data);
	seg_name(ic.id, path, sizeof(path));
	ok(access(path, F_OK) == -1 && errno == ENOENT,
	    "a deleted stream's entries make no file");
	must_ds(append(s, "j/a", "?", 0, NULL, NULL, &res));
	is_int(journal_entries(s), 1, "one more");

	/*
	 * A checkpoint writes the bytes again from the journal before it
	 * syncs (a failed write-out is reported once, to whoever had the
	 * file open, and its pages are marked clean): here, pages spoilt.
	 */
	seg_zero(ia.id, 13, 1);
	must_ds(ds_store_checkpoint(s));
	data = read_all(s, "j/a", 65536, &len, &reads);
	ok(len == 14 && memcmp(data, "hello world!!?", 14) == 0,
	    "a checkpoint writes the journalled bytes again");
	free(data);
	is_int(journal_entries(s), 0, "... and drops them");

	/*
	 * A segment that cannot be opened keeps its entries alone, even when
	 * they, oldest, fill whole passes.
	 */
	must_ds(append(s, "j/a", "+", 0, NULL, NULL, &res));
	for (n = 0; n < 6; n++)
		must_ds(append(s, "j/b", "-", 0, NULL, NULL, &res));
	must_ds(append(s, "j/a", "+", 0, NULL, NULL, &res));
	seg_name(ib.id, path, sizeof(path));
	snprintf(moved, sizeof(moved), "%s.away", path);
	must(rename(path, moved) == 0 && symlink(path, path) == 0,
	    "a symlink loop for %s", path);
	s->ckpt_max = 2;
	ok(ds_store_checkpoint(s) != DS_OK, "a checkpoint that cannot sync "
	    "a segment fails");
	s->ckpt_max = DS_CKPT_MAX;
	is_int(journal_entries(s), 6, "... keeps that stream's entries, and "
	    "drops the others', also behind them (passes of 2 entries)");
	ds_store_close(s);
	s = open_store(store_dir);
	ok(s != NULL, "the store opens although an entry cannot be replayed");
	is_int(journal_entries(s), 6, "... and keeps them");
	must(unlink(path) == 0 && rename(moved, path) == 0, "restore %s",
	    path);
	must_ds(ds_store_checkpoint(s));
	is_int(journal_entries(s), 0, "once the segment is back, it goes");
	data = read_all(s, "j/b", 65536, &len, &reads);
	ok(len == 12 && memcmp(data, "abcxyz------", 12) == 0,
	    "j/b reads whole");
	free(data);
	ds_store_close(s);

	/* A server's process checkpoints on its own. */
	cfg.dir = store_dir;
	cfg.pool = 1;
	must_ds(ds_store_open(&cfg, &s));
	is_int(journal_entries(s), 0, "replayed at open");
	must_ds(append(s, "j/b", "123", 0, NULL, NULL, &res));
	for (n = 0; journal_entries(s) > 0 && n < 300; n++)
		usleep(10000);
	is_int(journal_entries(s), 0, "a server process's thread checkpoints "
	    "within a few hundred milliseconds");
	store_end(s);
}

/*
 * The lane file, which shares syncs between processes, comes with the
 * first commit of a server's process (ds_store_cfg.pool), and only with
 * the first append of a store opened for other work.
 */
static void
test_pool(void)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_store_cfg cfg = { .dir = NULL };
	struct ds_stream_info info;
	struct ds_store *s;
	char lanes[sizeof(store_dir) + 8];

	s = store_begin("store", "pool");
	snprintf(lanes, sizeof(lanes), "%s/lanes", store_dir);
	must_ds(ds_store_create(s, "p", &c, 1000, &info));
	ok(access(lanes, F_OK) == -1, "a tool's create makes no lane file");
	ds_store_close(s);
	cfg.dir = store_dir;
	cfg.pool = 1;
	must_ds(ds_store_open(&cfg, &s));
	must_ds(ds_store_create(s, "q", &c, 1000, &info));
	ok(access(lanes, F_OK) == 0, "a server process's first create makes it");
	ok(ds_lanes_flush_mark(s) != DS_FLUSH_NOMARK,
	    "and its flushes are numbered there");
	store_end(s);
}

/*
 * Device flushes completed by the disk under dev, from its stat file in
 * sysfs (the 16th field, Linux 5.5 on; the kernel counts them on the whole
 * disk, not on a partition), or -1 when they cannot be told: no disk
 * (tmpfs, overlay), a device mapper or md device (the flushes go to the
 * disks below), a disk whose cache is written through (it completes an
 * empty flush without counting it), an older kernel.
 */
static long
dev_flushes(dev_t dev)
{
	char disk[64], path[128], buf[32] = "";
	struct stat st;
	long v[17];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/partition",
	    major(dev), minor(dev));
	snprintf(disk, sizeof(disk), "/sys/dev/block/%u:%u%s", major(dev),
	    minor(dev), stat(path, &st) == 0 ? "/.." : "");
	snprintf(path, sizeof(path), "%s/dm", disk);
	if (stat(path, &st) == 0)
		return -1;
	snprintf(path, sizeof(path), "%s/md", disk);
	if (stat(path, &st) == 0)
		return -1;
	snprintf(path, sizeof(path), "%s/queue/write_cache", disk);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	if (strncmp(buf, "write back", 10) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/stat", disk);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (n < 17 && fscanf(f, "%ld", &v[n]) == 1)
		n++;
	fclose(f);
	return n == 17 ? v[15] : -1;
}

/*
 * The shared flush reaches the device, whichever way it is made here
 * (segment.c, flush_plain()): N flushes, at least N device flushes (other
 * work on the device can only add to them).
 */
static void
test_flush(struct ds_store *s)
{
	struct stat st;
	long before, after;
	off_t len;
	int i, plain, detected = s->flush_plain, ok_all = 1;

	if (!s->range_sync) {
		note("no shared flush on this file system (not ext4)");
		return;
	}

	/* Plain flushes change the file's length once a minute still. */
	s->flush_plain = 1;
	s->flush_changed = ds_mono_us() - 61 * 1000000;
	must(fstat(s->flushfd, &st) == 0, "fstat the flush file");
	len = st.st_size;
	must(ds_seg_flush(s) == 0, "flush");
	must(fstat(s->flushfd, &st) == 0, "fstat the flush file");
	ok(st.st_size != len, "a plain flush a minute after the last length "
	    "change changes the length");
	len = st.st_size;
	must(ds_seg_flush(s) == 0, "flush");
	must(fstat(s->flushfd, &st) == 0, "fstat the flush file");
	is_int(st.st_size, len, "the next one does not");
	s->flush_plain = detected;

	must(fstat(s->segdirfd, &st) == 0, "fstat segments");
	if (dev_flushes(st.st_dev) == -1) {
		note("no flush count for device %u:%u", major(st.st_dev),
		    minor(st.st_dev));
		return;
	}
	for (plain = s->flush_plain; plain >= 0; plain--) {
		s->flush_plain = plain;
		before = dev_flushes(st.st_dev);
		for (i = 0; i < 20; i++)
			ok_all &= ds_seg_flush(s) == 0;
		ok(ok_all, "20 shared flushes by %s succeed", plain ?
		    "fdatasync alone" : "a length change and fdatasync");
		after = dev_flushes(st.st_dev);
		ok(after - before >= 20, "and reach the device: %ld device "
		    "flushes", after - before);
	}
}

/*
 * The shared flush's marks (lane.c): a flush begun after a range's mark
 * serves it, whoever made it, and so does an LMDB sync where that is known
 * to flush the segments' device; a range without a mark gets a flush of
 * its own, and a commit of several ranges one begun after the last.
 */
static void
test_flush_mark(struct ds_store *s)
{
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	struct ds_append_res res;
	struct ds_store_stats st;
	struct sc_change fa = { .key = 0x7300, .ret = DS_OK };
	struct sc_change fb = { .key = 0x7301, .ret = DS_OK };
	struct ds_commit *lead;
	pthread_t ta, tb;
	uint64_t m, n;

	if (!s->range_sync) {
		note("no shared flush on this file system (not ext4)");
		return;
	}
	must(ds_store_create(s, "m", &c, 1000, &info) == DS_OK, "create");
	/* The first append maps the lane file. */
	must(append(s, "m", "x", 0, NULL, NULL, &res) == DS_OK, "append");
	if ((m = ds_lanes_flush_mark(s)) == DS_FLUSH_NOMARK) {
		note("no lane file: each flush is the caller's own");
		return;
	}
	memset(&st, 0, sizeof(st));
	ds_store_stats_attach(&st);
	is_int(ds_lanes_flush(s, m), 0, "a flush for a mark");
	n = st.syncs[DS_SYNC_DATA];
	is_int(n, 1, "flushes the device");
	is_int(ds_lanes_flush(s, m), 0, "another for the same mark");
	is_int(st.syncs[DS_SYNC_DATA], n, "is served by that flush");

	m = ds_lanes_flush_mark(s);
	must(ds_store_create(s, "m2", &c, 1000, &info) == DS_OK, "create");
	ok(st.syncs[DS_SYNC_META] >= 1, "a create syncs LMDB");
	is_int(ds_lanes_flush(s, m), 0, "a flush for a mark taken before it");
	is_int(st.syncs[DS_SYNC_DATA], n + !s->sync_flush, s->sync_flush ?
	    "is served by the LMDB sync (no journal: it flushes the device)" :
	    "flushes: an LMDB sync is not known to flush the device here");
	n = st.syncs[DS_SYNC_DATA];
	is_int(ds_lanes_flush(s, DS_FLUSH_NOMARK), 0, "a flush without a mark");
	is_int(st.syncs[DS_SYNC_DATA], n + 1, "flushes the device");
	ds_store_stats_attach(NULL);

	/*
	 * Two batches in one shared commit: A written before flush F began,
	 * B after. F serves A, not B: the commit flushes.
	 */
	fa.cm.apply = fb.cm.apply = sc_apply;
	fa.cm.arg = &fa;
	fb.cm.arg = &fb;
	fa.cm.flush = fb.cm.flush = 1;
	fa.cm.flush_mark = ds_lanes_flush_mark(s);
	must(ds_lanes_flush(s, DS_FLUSH_NOMARK) == 0, "flush F");
	fb.cm.flush_mark = ds_lanes_flush_mark(s);
	ok(fb.cm.flush_mark > fa.cm.flush_mark, "B's mark is above A's");
	shared = s;
	pthread_mutex_lock(&s->cq_mu);
	s->cq_busy = 1;		/* both queue behind "a commit in progress" */
	pthread_mutex_unlock(&s->cq_mu);
	must(pthread_create(&ta, NULL, sc_commit, &fa) == 0, "thread");
	while (sc_queued(s) < 1)
		usleep(1000);
	must(pthread_create(&tb, NULL, sc_commit, &fb) == 0, "thread");
	while (sc_queued(s) < 2)
		usleep(1000);
	memset(&st, 0, sizeof(st));
	ds_store_stats_attach(&st);
	/* The commit in progress ends: it hands the lead over (commit.c). */
	pthread_mutex_lock(&s->cq_mu);
	lead = s->cq;
	pthread_mutex_unlock(&s->cq_mu);
	__atomic_store_n(&lead->state, DS_C_LEAD, __ATOMIC_RELEASE);
	ds_futex_wake(&lead->state, 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ds_store_stats_attach(NULL);
	ok(fa.cm.e == DS_OK && fb.cm.e == DS_OK, "both committed");
	is_int(st.syncs[DS_SYNC_DATA], 1, "their commit flushes: F, begun "
	    "before B's bytes were written, does not serve B");
}

/*
 * New ids: distinct, in creation order by their leading bytes (the ids
 * database's key order: see new_id(); the time there turns over every 4.7
 * hours, so once), their top byte (the segment fan-out) spread, and
 * ds_id_hash() spreading them although their low bits are alike.
 */
static void
test_ids(struct ds_store *s)
{
	enum { N = 512 };
	struct ds_create c = { .ctype = "text/plain" };
	struct ds_stream_info info;
	static uint64_t ids[N];
	unsigned char top[256] = { 0 }, lane[64] = { 0 };
	int i, j, ntop = 0, nlane = 0, order = 0, distinct = 1, made = 1;
	char path[32];

	for (i = 0; i < N; i++) {
		snprintf(path, sizeof(path), "ids/%d", i);
		if (ds_store_create(s, path, &c, 1000, &info) != DS_OK)
			made = 0;
		ids[i] = info.id;
	}
	ok(made, "%d streams made", N);
	for (i = 0; i < N; i++) {
		if (i > 0 && memcmp(&ids[i - 1], &ids[i], 3) > 0)
			order++;
		for (j = 0; j < i; j++)
			if (ids[j] == ids[i] || ids[i] == 0)
				distinct = 0;
		if (!top[ids[i] >> 56]++)
			ntop++;
		if (!lane[ds_id_hash(ids[i]) % 64]++)
			nlane++;
	}
	ok(distinct, "ids are distinct and never 0");
	ok(order <= 1, "ids sort as they were made (leading 3 bytes, memcmp): "
	    "%d turns", order);
	ok(ntop >= 160, "top bytes spread over the fan-out: %d of 256", ntop);
	ok(nlane >= 56, "ds_id_hash() spreads them: %d of 64 buckets", nlane);
}

/*
 * getrandom() for the whole program (the store is linked in), pinned on
 * demand so that every id of one millisecond is the same.
 */
static int pin_random, pinned_draws;

ssize_t
getrandom(void *buf, size_t len, unsigned int flags)
{
	if (pin_random) {
		pinned_draws++;
		memset(buf, 0x5a, len);
		return (ssize_t)len;
	}
	return syscall(SYS_getrandom, buf, len, flags);
}

/*
 * Ids that collide are drawn again: an empty create's at the ids
 * database, a create with a body's already at its segment file, which
 * belongs to the stream that has the id.
 */
static void
test_id_collide(struct ds_store *s)
{
	struct ds_create body = { .ctype = "text/plain", .body = "abc",
	    .len = 3 };
	struct ds_create empty = { .ctype = "text/plain" };
	struct ds_stream_info a, b;
	char pa[32], pb[32], *data;
	size_t len;
	int k, e = 0, kept = 1;

	pinned_draws = 0;
	pin_random = 1;
	for (k = 0; k < 20; k++) {
		snprintf(pa, sizeof(pa), "c%d/a", k);
		snprintf(pb, sizeof(pb), "c%d/b", k);
		e |= ds_store_create(s, pa, k % 2 ? &body : &empty, 1000,
		    &a) != DS_OK;
		e |= ds_store_create(s, pb, &body, 1000, &b) != DS_OK;
		data = NULL;
		if (ds_store_read(s, pb, 0, 100, 1000, &b, &data, &len) !=
		    DS_OK || len != 3 || memcmp(data, "abc", 3) != 0)
			kept = 0;
		free(data);
		data = NULL;
		if (ds_store_read(s, pa, 0, 100, 1000, &a, &data, &len) !=
		    DS_OK || len != (k % 2 ? 3u : 0u))
			kept = 0;
		free(data);
	}
	pin_random = 0;
	ok(pinned_draws > 40, "ids drawn again: %d draws for 40 creates",
	    pinned_draws);
	ok(!e, "creates that draw a taken id succeed");
	ok(kept, "each stream holds its own bytes");
}

static const struct {
	const char	*name;
	void		(*fn)(struct ds_store *);
} tests[] = {
	{ "basics", test_basics },
	{ "producers", test_producers },
	{ "messages", test_messages },
	{ "expiry", test_expiry_delete },
	{ "recovery", test_recovery },
	{ "forks", test_forks },
	{ "spans", test_spans },
	{ "replaced", test_replaced },
	{ "unborn", test_unborn },
	{ "retention", test_retention },
	{ "depth", test_depth },
	{ "concurrency", test_concurrency },
	{ "shared-commit", test_shared_commit },
	{ "room", test_room },
	{ "room-short", test_room_short },
	{ "room-recover-short", test_room_recover_short },
	{ "room-hole", test_room_hole },
	{ "flush", test_flush },
	{ "flush-mark", test_flush_mark },
	{ "ids", test_ids },
	{ "id-collide", test_id_collide },
};

int
main(void)
{
	struct ds_store *s;
	size_t i;

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		s = store_begin("store", tests[i].name);
		tests[i].fn(s);
		store_end(s);
	}
	test_reopen();
	test_pool();
	test_journal();
	return done_testing();
}
