/*
 * store_crash_test.c: a writer process SIGKILLed inside an LMDB commit,
 * at the two moments that matter, and what the next append in another
 * process must do about it.
 *
 * This program defines pwrite(), so liblmdb's calls land here. Armed, it
 * watches for the write of a meta page (the first two pages of
 * meta/data.mdb) and either kills the process just before it (the commit
 * never happened) or just after it, before LMDB publishes the new txnid in
 * its lock file (the commit is on disk, but readers do not see it yet).
 * A SIGKILL that arrives while a worker is inside that pwrite() takes
 * effect on its return, so the second moment is a real one.
 *
 * Each case runs in a data directory of its own. The test process keeps
 * that store open throughout, as a worker does while another worker dies.
 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "t/tap.h"
#include "t/unit/store_util.h"

enum { ARM_OFF, ARM_BEFORE_META, ARM_AFTER_META, ARM_BATCH_BEFORE_META,
    ARM_BATCH_AFTER_META, ARM_DELETE_IN_WRITE, ARM_PUNCH };

static volatile int armed;
static volatile int batch_written;	/* a segment write of >1 append */
static struct ds_store *delete_store;	/* ARM_DELETE_IN_WRITE: delete */
static const char *delete_path;		/* this stream from the write */
static enum ds_err delete_e = DS_EIO;

#define BATCH_THREADS	8
#define BATCH_PEERS	2	/* producers in another process, not killed */
#define BATCH_SEQS	20
#define BATCH_BODY	9	/* "[t3-s07]" and a newline */

/* fd is open on a path with this part in it. */
static int
fd_is(int fd, const char *part)
{
	char link[64], path[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof(path) - 1)) <= 0)
		return 0;
	path[n] = '\0';
	return strstr(path, part) != NULL;
}

static int
is_meta_page(int fd, off_t off)
{
	return off < 2 * sysconf(_SC_PAGESIZE) && fd_is(fd, "/meta/data.mdb");
}

__attribute__((visibility("default"))) ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n;

	if (armed == ARM_DELETE_IN_WRITE && fd_is(fd, "/segments/")) {
		/* A DELETE lands while the append writes (it takes no
		 * segment lock). */
		armed = ARM_OFF;
		delete_e = ds_store_delete(delete_store, delete_path);
	}
	if ((armed == ARM_BATCH_BEFORE_META ||
	    armed == ARM_BATCH_AFTER_META) && len > BATCH_BODY &&
	    fd_is(fd, "/segments/"))
		batch_written = 1;
	if ((armed == ARM_BEFORE_META || (armed == ARM_BATCH_BEFORE_META &&
	    batch_written)) && is_meta_page(fd, off))
		raise(SIGKILL);
	n = syscall(SYS_pwrite64, fd, buf, len, off);
	if ((armed == ARM_AFTER_META || (armed == ARM_BATCH_AFTER_META &&
	    batch_written)) && n > 0 && is_meta_page(fd, off))
		raise(SIGKILL);
	return n;
}

/* ARM_PUNCH: killed as a punch starts freeing a trimmed range. */
__attribute__((visibility("default"))) int
fallocate(int fd, int mode, off_t off, off_t len)
{
	if (armed == ARM_PUNCH)
		raise(SIGKILL);
	return (int)syscall(SYS_fallocate, fd, mode, off, len);
}

/*
 * Runs fn on a store of its own in a child process, armed to die at the
 * given moment. Returns 1 when the child died by SIGKILL.
 */
static int
run_and_die(int when, void (*fn)(struct ds_store *, const void *),
    const void *arg)
{
	struct ds_store *c;
	pid_t pid;
	int st;

	fflush(stdout);
	fflush(stderr);
	must((pid = fork()) != -1, "fork");
	if (pid == 0) {
		c = open_store(store_dir);
		armed = when;
		fn(c, arg);
		_exit(0);	/* not reached when the hook fired */
	}
	must(waitpid(pid, &st, 0) != -1, "waitpid");
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

struct append_args {
	const char			*path, *body;
	int				 close;
	const struct ds_producer	*p;
};

static void
do_append(struct ds_store *c, const void *arg)
{
	const struct append_args *a = arg;
	struct ds_append_res res;

	append(c, a->path, a->body, a->close, a->p, NULL, &res);
}

static int
append_and_die(int when, const char *path, const char *body, int close,
    const struct ds_producer *p)
{
	struct append_args a = { path, body, close, p };

	return run_and_die(when, do_append, &a);
}

/* Trims stream t to at most 100,000 bytes. */
static void
do_trim(struct ds_store *c, const void *arg)
{
	struct ds_retention pol = { .max_bytes = 100000 };
	uint64_t first;

	(void)arg;
	ds_store_trim(c, "t", &pol, 5000, &first);
}

/* Punches what a trim of stream t left. */
static void
do_punch(struct ds_store *c, const void *arg)
{
	(void)arg;
	ds_store_punch(c, "t", 5000, 0);
}

static void
check_content(struct ds_store *s, const char *path, const char *want,
    const char *what)
{
	struct ds_stream_info info;
	char *data = NULL;
	size_t len = 0;
	enum ds_err e;

	e = ds_store_read(s, path, 0, 1 << 20, 1000, &info, &data, &len);
	is_int(e, DS_OK, "%s: read", what);
	is_mem(data, len, want, strlen(want), "%s: content", what);
	is_int(info.tail, strlen(want), "%s: tail", what);
	free(data);
}

static void
create(struct ds_store *s, const char *path, const char *body)
{
	struct ds_create c = { .ctype = "text/plain", .body = body,
	    .len = strlen(body) };
	struct ds_stream_info info;

	must_ds(ds_store_create(s, path, &c, 1000, &info));
}

/* Killed before the meta page: nothing was committed. */
static void
test_before_meta(struct ds_store *s)
{
	struct ds_append_res res;

	create(s, "a", "xx");
	ok(append_and_die(ARM_BEFORE_META, "a", "AAAA", 0, NULL),
	    "writer killed before its meta page");
	check_content(s, "a", "xx", "uncommitted append is not visible");
	is_int(append(s, "a", "BB", 0, NULL, NULL, &res), DS_OK,
	    "next append succeeds");
	is_int(res.tail, 4, "and lands on the committed tail");
	check_content(s, "a", "xxBB", "uncommitted bytes were cut off");
}

/* Killed after the meta page: committed, not yet published. */
static void
test_after_meta_read(struct ds_store *s)
{
	create(s, "b", "xx");
	ok(append_and_die(ARM_AFTER_META, "b", "AAAA", 0, NULL),
	    "writer killed after its meta page");
	check_content(s, "b", "xxAAAA", "a read sees the dead writer's commit");
}

static void
test_after_meta_append(struct ds_store *s)
{
	struct ds_append_res res;

	create(s, "c", "xx");
	ok(append_and_die(ARM_AFTER_META, "c", "AAAA", 0, NULL),
	    "writer killed after its meta page (append next)");
	is_int(append(s, "c", "BB", 0, NULL, NULL, &res), DS_OK,
	    "next append succeeds");
	is_int(res.tail, 8, "and lands after the dead writer's append");
	check_content(s, "c", "xxAAAABB", "both appends, in order");
}

/* A close committed that way must not be appended past. */
static void
test_after_meta_close(struct ds_store *s)
{
	struct ds_append_res res;

	create(s, "d", "xx");
	ok(append_and_die(ARM_AFTER_META, "d", "", 1, NULL),
	    "closing writer killed after its meta page");
	is_int(append(s, "d", "BB", 0, NULL, NULL, &res), DS_ECLOSED,
	    "next append finds the stream closed");
	check_content(s, "d", "xx", "nothing appended after the close");
}

/* A producer's retry of a committed seq is a duplicate. */
static void
test_after_meta_producer(struct ds_store *s)
{
	struct ds_producer p = { .id = "p1", .idlen = 2 };
	struct ds_append_res res;

	create(s, "e", "xx");
	ok(append_and_die(ARM_AFTER_META, "e", "P0", 0, &p),
	    "producer killed after its meta page");
	is_int(append(s, "e", "P0", 0, &p, NULL, &res), DS_OK, "retry answered");
	ok(res.duplicate, "retry recognised as a duplicate");
	check_content(s, "e", "xxP0", "retried append stored once");
}

/*
 * Group commit: BATCH_THREADS producers append to one stream at once in a
 * child process, so that appends are written and committed in batches;
 * the child dies at the meta page of the first batch of more than one
 * append, before or after writing it. No part of a batch may survive
 * without the rest, and each producer's state must say exactly what of
 * it is there: its retries of every seq leave each append once.
 */
/* Producer pt's append of seq i, body "[t<pt>-s<i>]\n", to "batch". */
static enum ds_err
batch_append(struct ds_store *c, int pt, int i, struct ds_append_res *res)
{
	struct ds_producer p;
	char id[16], body[32];

	snprintf(id, sizeof(id), "p%d", pt);
	snprintf(body, sizeof(body), "[t%d-s%02d]\n", pt, i);
	memset(&p, 0, sizeof(p));
	p.id = id;
	p.idlen = strlen(id);
	p.seq = (uint64_t)i;
	return append(c, "batch", body, 0, &p, NULL, res);
}

static void *
batch_writer(void *arg)
{
	struct ds_store *c = arg;
	static int next_thread;
	struct ds_append_res res;
	int t = __atomic_fetch_add(&next_thread, 1, __ATOMIC_RELAXED), i;

	for (i = 0; i < BATCH_SEQS; i++)
		batch_append(c, t, i, &res);
	return NULL;
}

/*
 * A producer of the peer process: its appends share batches with the
 * writer that is killed. An append whose batch died with its leader is
 * answered DS_EIO (it may or may not be there) and retried, as a client
 * would; anything else but DS_OK fails the peer.
 */
static void *
peer_writer(void *arg)
{
	struct ds_store *c = arg;
	static int next_peer;
	struct ds_append_res res;
	int t = BATCH_THREADS + __atomic_fetch_add(&next_peer, 1,
	    __ATOMIC_RELAXED), i, tries;
	enum ds_err e = DS_OK;

	for (i = 0; i < BATCH_SEQS && e == DS_OK; i++)
		for (tries = 0; tries < 100 && (e = batch_append(c, t, i,
		    &res)) == DS_EIO; tries++)
			;
	return (void *)(intptr_t)(e == DS_OK);
}

/*
 * The peer: another process whose producers append to the same stream
 * while the writer dies, so that their appends ride in the writer's
 * batches (lane.c) and the writer's in theirs. Writes 'y' to *fd when
 * every append was answered in the end, within a minute: not its exit
 * status, which valgrind sets when a process exits holding memory (the
 * store it inherited).
 */
static pid_t
peer_start(int *fd)
{
	pthread_t th[BATCH_PEERS];
	struct ds_store *c;
	void *okp;
	int t, all = 1, p[2];
	pid_t pid;

	must(pipe(p) == 0, "pipe");
	must((pid = fork()) != -1, "fork");
	if (pid != 0) {
		close(p[1]);
		*fd = p[0];
		return pid;
	}
	close(p[0]);
	alarm(60);
	c = open_store(store_dir);
	for (t = 0; t < BATCH_PEERS; t++)
		pthread_create(&th[t], NULL, peer_writer, c);
	for (t = 0; t < BATCH_PEERS; t++) {
		pthread_join(th[t], &okp);
		all &= okp != NULL;
	}
	ds_store_close(c);
	if (write(p[1], all ? "y" : "n", 1) != 1)
		_exit(1);
	_exit(0);
}

static void
batch_and_die(struct ds_store *s, int when, const char *what)
{
	pthread_t th[BATCH_THREADS];
	struct ds_append_res res;
	struct ds_stream_info info;
	struct ds_store *c;
	char body[32], rec[BATCH_BODY + 1], *data = NULL, *q;
	size_t len = 0;
	int t, i, st, seen[BATCH_THREADS + BATCH_PEERS], torn = 0, order = 1;
	int dup_ok = 1, once = 1, n, peer_fd;
	char answered = 0;
	pid_t pid, peer;

	create(s, "batch", "");
	fflush(stdout);
	fflush(stderr);
	peer = peer_start(&peer_fd);
	must((pid = fork()) != -1, "fork");
	if (pid == 0) {
		c = open_store(store_dir);
		armed = when;
		for (t = 0; t < BATCH_THREADS; t++)
			pthread_create(&th[t], NULL, batch_writer, c);
		for (t = 0; t < BATCH_THREADS; t++)
			pthread_join(th[t], NULL);
		_exit(0);	/* no batch of two: not what the case is for */
	}
	must(waitpid(pid, &st, 0) != -1, "waitpid");
	ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	    "%s: writer killed in a batch of more than one append", what);
	must(waitpid(peer, &st, 0) != -1, "waitpid");
	if (read(peer_fd, &answered, 1) != 1)
		answered = 0;
	close(peer_fd);
	ok(answered == 'y' && WIFEXITED(st) && !WIFSIGNALED(st),
	    "%s: the other process's appends were all answered", what);

	/* Whole appends only, each producer's in order from seq 0. */
	is_int(ds_store_read(s, "batch", 0, 1 << 20, 1000, &info, &data,
	    &len), DS_OK, "%s: read", what);
	is_int(info.tail, len, "%s: tail matches the bytes", what);
	memset(seen, 0, sizeof(seen));
	for (q = data; q < data + len; q += BATCH_BODY) {
		/* The data is not a C string: scan a copy of one record. */
		if (data + len - q >= BATCH_BODY) {
			memcpy(rec, q, BATCH_BODY);
			rec[BATCH_BODY] = '\0';
		}
		if (data + len - q < BATCH_BODY ||
		    sscanf(rec, "[t%d-s%d]\n", &t, &i) != 2 ||
		    t < 0 || t >= BATCH_THREADS + BATCH_PEERS ||
		    q[BATCH_BODY - 1] != '\n') {
			torn = 1;
			break;
		}
		if (i != seen[t])
			order = 0;
		seen[t]++;
	}
	ok(!torn, "%s: nothing torn", what);
	ok(order, "%s: each producer's appends in order, none twice", what);
	for (t = BATCH_THREADS, n = 1; t < BATCH_THREADS + BATCH_PEERS; t++)
		n &= seen[t] == BATCH_SEQS;
	ok(n, "%s: every append of the other process is there", what);
	free(data);

	/* The retries: what is there is a duplicate, the rest lands once. */
	for (t = 0; t < BATCH_THREADS + BATCH_PEERS; t++)
		for (i = 0; i < BATCH_SEQS; i++)
			if (batch_append(s, t, i, &res) != DS_OK ||
			    res.duplicate != (i < seen[t]))
				dup_ok = 0;
	ok(dup_ok, "%s: producer state agrees with the data after the crash",
	    what);
	data = NULL;
	must_ds(ds_store_read(s, "batch", 0, 1 << 20, 1000, &info, &data,
	    &len));
	n = 0;
	for (t = 0; t < BATCH_THREADS + BATCH_PEERS; t++)
		for (i = 0; i < BATCH_SEQS; i++) {
			snprintf(body, sizeof(body), "[t%d-s%02d]\n", t, i);
			q = memmem(data, len, body, BATCH_BODY);
			if (q == NULL || memmem(q + 1, len - (size_t)(q + 1 -
			    data), body, BATCH_BODY) != NULL)
				once = 0;
			n++;
		}
	ok(once && len == (size_t)n * BATCH_BODY,
	    "%s: after the retries every append is there once", what);
	free(data);
}

/*
 * After a trim killed at moment when, the stream keeps the old earliest
 * position (0) or the new one, and every retained byte reads back whole;
 * recovery punches what is trimmed and verify is clean.
 */
static void
check_trim_crash(struct ds_store *s, int when, int punch, const char *what)
{
	struct ds_stream_info info;
	char *data = NULL;
	size_t len = 0, i;
	unsigned n, bad, trunc, removed;
	int whole = 1;

	create(s, "t", "");
	for (i = 0; i < 300; i++)
		append_at(s, "t", 1000, 0, (int)i, 1000 + (int64_t)i);
	if (punch) {
		struct ds_retention pol = { .max_bytes = 100000 };
		uint64_t first;

		must_ds(ds_store_trim(s, "t", &pol, 2000, &first));
	}
	ok(run_and_die(when, punch ? do_punch : do_trim, NULL), "%s: killed",
	    what);
	is_int(ds_store_stat(s, "t", 5000, &info), DS_OK, "%s: stat", what);
	ok(info.first == 0 || (info.first % 1000 == 0 &&
	    300000 - info.first <= 100000), "%s: earliest %llu is the old or "
	    "the new one", what, (unsigned long long)info.first);
	is_int(ds_store_read(s, "t", DS_POS_FIRST, 1 << 20, 5000, &info, &data,
	    &len), DS_OK, "%s: read from the earliest position", what);
	is_int(len, 300000 - info.first, "%s: every retained byte", what);
	for (i = 0; i < len; i++)
		if (data[i] != (i % 1000 == 999 ? '\n' : 'x'))
			whole = 0;
	ok(whole, "%s: none of them punched", what);
	free(data);
	is_int(ds_store_recover(s, 0, &trunc, &removed), DS_OK,
	    "%s: recovery", what);
	is_int(ds_store_verify(s, NULL, &n, &bad), DS_OK, "%s: verify", what);
	is_int(bad, 0, "%s: verify is clean", what);
}

static void
test_trim_before_meta(struct ds_store *s)
{
	check_trim_crash(s, ARM_BEFORE_META, 0, "trim before its meta page");
}

static void
test_trim_after_meta(struct ds_store *s)
{
	check_trim_crash(s, ARM_AFTER_META, 0, "trim after its meta page");
}

static void
test_trim_punch(struct ds_store *s)
{
	check_trim_crash(s, ARM_PUNCH, 1, "killed in the punch");
}

static void
test_batch_before_meta(struct ds_store *s)
{
	batch_and_die(s, ARM_BATCH_BEFORE_META, "batch killed before commit");
}

static void
test_batch_after_meta(struct ds_store *s)
{
	batch_and_die(s, ARM_BATCH_AFTER_META, "batch killed after commit");
}

/*
 * A stream with a fork is deleted (kept for the fork) while an append to
 * it writes its bytes: the append must not bring it back. Its commit
 * finds the record deleted and answers DS_EGONE.
 */
static void
test_delete_in_write(struct ds_store *s)
{
	struct ds_create fk = { .ctype = "text/plain",
	    .src_path = "del/src" };
	struct ds_stream_info info;
	struct ds_append_res res;

	create(s, "del/src", "xx");
	must_ds(ds_store_create(s, "del/fork", &fk, 1000, &info));
	delete_store = s;
	delete_path = "del/src";
	armed = ARM_DELETE_IN_WRITE;
	is_int(append(s, "del/src", "AAAA", 0, NULL, NULL, &res), DS_EGONE,
	    "append that a DELETE overtook: gone");
	armed = ARM_OFF;
	is_int(delete_e, DS_OK, "the DELETE itself succeeded");
	is_int(ds_store_stat(s, "del/src", 1000, &info), DS_EGONE,
	    "the stream stays deleted");
	is_int(ds_store_delete(s, "del/fork"), DS_OK, "the fork deleted");
	is_int(ds_store_stat(s, "del/src", 1000, &info), DS_ENOTFOUND,
	    "and the source with it");
}

static const struct {
	const char	*name;
	void		(*fn)(struct ds_store *);
} tests[] = {
	{ "before-meta", test_before_meta },
	{ "after-meta-read", test_after_meta_read },
	{ "after-meta-append", test_after_meta_append },
	{ "after-meta-close", test_after_meta_close },
	{ "after-meta-producer", test_after_meta_producer },
	{ "batch-before-meta", test_batch_before_meta },
	{ "batch-after-meta", test_batch_after_meta },
	{ "delete-in-write", test_delete_in_write },
	{ "trim-before-meta", test_trim_before_meta },
	{ "trim-after-meta", test_trim_after_meta },
	{ "trim-punch", test_trim_punch },
};

int
main(void)
{
	struct ds_store *s;
	size_t i;

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		s = store_begin("crash", tests[i].name);
		tests[i].fn(s);
		store_end(s);
	}
	return done_testing();
}
