/*
 * lane.c: the batches of one stream's appends across the worker processes.
 *
 * append.c batches the appends of one process; between processes, the
 * segment flock() alone would run one process's batch after another's,
 * each with its own device round trips, so that a stream appended to
 * through four processes makes batches a quarter of the size they could
 * be. Here small appends (LANE_ONE_MAX bytes of body, Stream-Seq and
 * Producer-Id together) meet in shared memory instead, whatever process
 * they come from, and one batch takes them all.
 *
 * The file <dir>/lanes holds LANE_N lanes. A stream takes the lane its id
 * hashes to while it has appends there (another stream that finds the
 * lane taken appends the old way). An append copies itself into a free
 * slot of the lane (DEPOSITED), then tries the lane's lead mutex. The
 * thread that gets it is the leader: it copies out every append deposited
 * (TAKEN), runs them as one batch (batch.c: validation in arrival order,
 * one write, one sync, one commit), writes each slot's result (DONE) and
 * wakes its owner, lets go of the lead and wakes the owner of the oldest
 * append deposited meanwhile to lead the next batch. The others sleep on
 * their slot's futex word until it is bumped.
 *
 * Processes die. The two mutexes are robust: a leader killed in a batch
 * leaves the lead "owner dead", and the next thread to take it answers
 * DS_EIO for the appends that batch had taken (they may or may not have
 * been committed: the same as for a client whose worker was killed). A
 * waiter looks at the lead every LANE_NAP_MS in case its leader died. Each
 * process holds an open-file-description lock on one byte of the file
 * (its process slot) for as long as it has the file open: a leader drops
 * the appends deposited by a process that no longer holds its byte (they
 * were never answered, and landing them later would surprise everyone),
 * and frees the slots such a process left. The first process to open the
 * file when no process holds a byte makes it afresh: mutexes left locked
 * by a machine that went down are not carried over.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/futex.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"

#define LANE_MAGIC	0x354e414c53440a00ull	/* "\0\nDSLAN5" */
#define LANE_N		64		/* lanes, streams appended to at once */
#define LANE_SLOTS	BATCH_MAX	/* appends waiting in one lane */
#define LANE_ARENA	(64u << 10)	/* their bytes */
#define LANE_ONE_MAX	(16u << 10)	/* one append's, at most */
#define LANE_PROCS	1024		/* processes with the file open */
#define LANE_NAP_MS	50		/* a waiter looks at its leader */
#define LOCK_INIT	((off_t)1 << 40)	/* byte locked to make the file */
#define LOCK_PROC	(LOCK_INIT + 1)		/* process slot k's byte */

enum { L_FREE, L_DEPOSITED, L_TAKEN, L_DONE };

struct lslot {
	uint32_t	 state;
	uint32_t	 wake;		/* futex: bumped to make the owner look */
	uint32_t	 proc;		/* the owner's process slot... */
	uint32_t	 flags;		/* LF_* */
	uint64_t	 pgen;		/* ...and that slot's generation */
	uint64_t	 gen;		/* bumped when the slot is freed */
	uint64_t	 order;		/* arrival */
	int64_t		 now;
	uint32_t	 off;		/* body, Stream-Seq, Producer-Id */
	uint32_t	 len, seqlen, pidlen;
	uint64_t	 epoch, pseq;	/* Producer-Epoch, Producer-Seq */
	int32_t		 e;		/* the result */
	uint32_t	 pad;
	struct ds_append_res res;
};
#define LF_CLOSE	1
#define LF_CTYPE_OK	2
#define LF_SEQ		4
#define LF_PRODUCER	8

struct lane {
	pthread_mutex_t	 mu;		/* guards the rest, held briefly */
	pthread_mutex_t	 lead;		/* held by the leader for a batch */
	uint64_t	 id;		/* the stream, 0: none */
	uint64_t	 order;		/* the next arrival */
	uint32_t	 nused;		/* slots not free */
	uint32_t	 ndeposited;	/* ...of them L_DEPOSITED */
	uint32_t	 arena_used;
	int64_t		 reclaimed_ms;	/* when deposit() last reclaimed */
	struct lslot	 slot[LANE_SLOTS];
	char		 arena[LANE_ARENA];
};

struct lane_file {
	uint64_t	 magic;
	uint64_t	 size;
	pthread_mutex_t	 flush_mu;	/* one device flush at a time */
	uint64_t	 flush_started;	/* flushes begun */
	uint64_t	 flush_done;	/* the last one finished */
	pthread_mutex_t	 sync_mu;	/* one LMDB sync at a time */
	uint64_t	 synced_txn;	/* LMDB durable up to this txn */
	int64_t		 ckpt_us;	/* the last journal checkpoint began */
	uint64_t	 pgen[LANE_PROCS];	/* process slot generations */
	struct lane	 lane[LANE_N];
};

/* What a process keeps of the file. */
struct ds_lanes {
	char		*path;
	int		 state;		/* 0: not opened yet, 1: open, -1:
					   could not be */
	int		 pool;		/* opened at the first commit too */
	int		 fd;
	struct lane_file *f;
	uint32_t	 proc;		/* this process's slot */
	uint64_t	 pgen;
};

/*
 * Set in a child of fork(): its slots in a lane file are its parent's, and
 * it must not answer for them (its appends batch within it). Checked on
 * every append, so a flag rather than a getpid() call.
 */
static volatile sig_atomic_t lanes_forked;
static pthread_once_t lanes_atfork_once = PTHREAD_ONCE_INIT;

static void
lanes_on_fork(void)
{
	lanes_forked = 1;
}

static void
lanes_atfork(void)
{
	pthread_atfork(NULL, NULL, lanes_on_fork);
}

void
ds_futex_wait(uint32_t *w, uint32_t v, int ms, int shared)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	syscall(SYS_futex, w, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, v,
	    ms > 0 ? &ts : NULL, NULL, 0);
}

void
ds_futex_wake(uint32_t *w, int shared)
{
	syscall(SYS_futex, w, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, 1,
	    NULL, NULL, 0);
}

/* Sets (F_WRLCK), drops (F_UNLCK) or waits for one byte's lock. */
static int
byte_lock(int fd, off_t at, short type, int wait)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = at;
	fl.l_len = 1;
	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == -1)
		if (errno != EINTR)
			return -1;
	return 0;
}

/* Another open file description holds a lock in [at, at + len). */
static int
byte_held(int fd, off_t at, off_t len)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = at;
	fl.l_len = len;
	if (fcntl(fd, F_OFD_GETLK, &fl) == -1)
		return 1;	/* cannot tell: alive */
	return fl.l_type != F_UNLCK;
}

static int
mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int rc;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	rc = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return rc;
}

/*
 * Makes the file's contents afresh: no process has it open. Its pages are
 * written, not left as holes, so that touching them later needs no disk
 * space (a full disk would otherwise kill the process with SIGBUS).
 */
static int
lanes_make(int fd, struct lane_file **fp)
{
	static const char zero[64 << 10];
	struct lane_file *f;
	off_t at;
	int i;

	if (ftruncate(fd, 0) == -1)
		return -1;
	for (at = 0; at < (off_t)sizeof(*f); at += (off_t)sizeof(zero))
		if (ds_seg_write(fd, (uint64_t)at, zero,
		    sizeof(*f) - (size_t)at < sizeof(zero) ?
		    sizeof(*f) - (size_t)at : sizeof(zero)) == -1)
			return -1;
	f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (f == MAP_FAILED)
		return -1;
	if (mutex_init(&f->flush_mu) != 0 || mutex_init(&f->sync_mu) != 0) {
		munmap(f, sizeof(*f));
		errno = ENOMEM;
		return -1;
	}
	for (i = 0; i < LANE_N; i++)
		if (mutex_init(&f->lane[i].mu) != 0 ||
		    mutex_init(&f->lane[i].lead) != 0) {
			munmap(f, sizeof(*f));
			errno = ENOMEM;
			return -1;
		}
	f->size = sizeof(*f);
	__atomic_store_n(&f->magic, LANE_MAGIC, __ATOMIC_RELEASE);
	*fp = f;
	return 0;
}

/*
 * Maps the file and takes a process slot in it. Returns 0, or -1 after
 * logging why (the appends of this store then batch within the process).
 */
static int
lanes_map(struct ds_lanes *l)
{
	struct lane_file *f = NULL;
	struct stat st;
	const char *why;
	uint32_t k;

	why = "open";
	if ((l->fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC,
	    0640)) == -1 || (why = "lock",
	    byte_lock(l->fd, LOCK_INIT, F_WRLCK, 1) == -1) ||
	    (why = "fstat", fstat(l->fd, &st) == -1))
		goto fail;
	if (!byte_held(l->fd, LOCK_PROC, LANE_PROCS)) {
		why = "make";
		if (lanes_make(l->fd, &f) == -1)
			goto fail;
	} else {
		if (st.st_size != (off_t)sizeof(*f)) {
			ds_log("%s: in use by processes of another version; "
			    "appends batch within each process", l->path);
			goto out;
		}
		why = "mmap";
		f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED,
		    l->fd, 0);
		if (f == MAP_FAILED) {
			f = NULL;
			goto fail;
		}
		if (__atomic_load_n(&f->magic, __ATOMIC_ACQUIRE) !=
		    LANE_MAGIC || f->size != sizeof(*f)) {
			ds_log("%s: in use by processes of another version; "
			    "appends batch within each process", l->path);
			goto out;
		}
	}
	for (k = 0; k < LANE_PROCS; k++)
		if (byte_lock(l->fd, LOCK_PROC + k, F_WRLCK, 0) == 0)
			break;
	if (k == LANE_PROCS) {
		ds_log("%s: %d processes have it open; this one's appends "
		    "batch within it", l->path, LANE_PROCS);
		goto out;
	}
	l->proc = k;
	pthread_once(&lanes_atfork_once, lanes_atfork);
	l->pgen = __atomic_add_fetch(&f->pgen[k], 1, __ATOMIC_ACQ_REL);
	l->f = f;
	byte_lock(l->fd, LOCK_INIT, F_UNLCK, 0);
	return 0;
fail:
	ds_log("%s: %s: %s; appends batch within each process", l->path, why,
	    strerror(errno));
out:
	if (f)
		munmap(f, sizeof(*f));
	if (l->fd != -1)
		close(l->fd);	/* drops the locks */
	l->fd = -1;
	return -1;
}

int
ds_lanes_open(struct ds_store *s, const char *dir, int pool)
{
	struct ds_lanes *l;

	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    asprintf(&l->path, "%s/lanes", dir) == -1) {
		free(l);
		return -1;
	}
	l->fd = -1;
	l->pool = pool;
	s->lanes = l;
	return 0;
}

void
ds_lanes_close(struct ds_store *s)
{
	struct ds_lanes *l = s->lanes;

	if (l == NULL)
		return;
	if (l->f) {
		munmap(l->f, sizeof(*l->f));
		close(l->fd);
	}
	free(l->path);
	free(l);
	s->lanes = NULL;
}

/*
 * The file is opened at a store's first append, or its first commit in a
 * server's process (ds_store_cfg.pool), so that a store opened for other
 * work (ds-admin, say) leaves no file behind, nor one owned by the wrong
 * user.
 */
static struct lane_file *
lanes_get(struct ds_store *s)
{
	struct ds_lanes *l = s->lanes;
	int st;

	if ((st = __atomic_load_n(&l->state, __ATOMIC_ACQUIRE)) == 0) {
		pthread_mutex_lock(&s->aq_mu);
		if ((st = l->state) == 0)
			__atomic_store_n(&l->state, st = lanes_map(l) == 0 ?
			    1 : -1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&s->aq_mu);
	}
	/* A child of a fork would answer for its parent's slots. */
	return st == 1 && !lanes_forked ? l->f : NULL;
}

/* What take() learnt of the processes owning slots. */
struct owners {
	uint32_t	proc[LANE_SLOTS];
	uint64_t	pgen[LANE_SLOTS];
	int		gone[LANE_SLOTS];
	int		n;
};

/* The owner of slot is gone: nobody will read its result. */
static int
owner_gone(struct ds_lanes *l, const struct lslot *sl, struct owners *o)
{
	int i;

	if (sl->proc == l->proc && sl->pgen == l->pgen)
		return 0;
	for (i = 0; i < o->n; i++)
		if (o->proc[i] == sl->proc && o->pgen[i] == sl->pgen)
			return o->gone[i];
	o->proc[i] = sl->proc;
	o->pgen[i] = sl->pgen;
	o->gone[i] = __atomic_load_n(&l->f->pgen[sl->proc],
	    __ATOMIC_ACQUIRE) != sl->pgen ||
	    !byte_held(l->fd, LOCK_PROC + sl->proc, 1);
	o->n++;
	return o->gone[i];
}

static void
slot_free(struct lane *ln, struct lslot *sl)
{
	if (sl->state == L_DEPOSITED)
		__atomic_sub_fetch(&ln->ndeposited, 1, __ATOMIC_SEQ_CST);
	sl->state = L_FREE;
	sl->gen++;
	if (--ln->nused == 0) {
		ln->id = 0;
		ln->arena_used = 0;
	}
}

/* Under the lane's mutex: frees the slots of processes gone. */
static void
reclaim(struct ds_lanes *l, struct lane *ln)
{
	struct lslot *sl;
	struct owners o;

	o.n = 0;
	for (sl = ln->slot; sl < ln->slot + LANE_SLOTS; sl++)
		if (sl->state != L_FREE && owner_gone(l, sl, &o))
			slot_free(ln, sl);
}

/*
 * Ends an append whose outcome nobody knows: its leader died, or a
 * process died inside the lane's mutex. The owner answers DS_EIO.
 */
static void
slot_lost(struct lslot *sl)
{
	sl->e = DS_EIO;
	sl->state = L_DONE;
	sl->wake++;
	ds_futex_wake(&sl->wake, 1);
}

/*
 * Takes the lane's mutex. A process died holding it: whatever it was
 * doing is undone the blunt way, every append not answered is lost.
 */
static void
lane_lock(struct lane *ln)
{
	struct lslot *sl;

	if (pthread_mutex_lock(&ln->mu) != EOWNERDEAD)
		return;
	ln->nused = 0;
	for (sl = ln->slot; sl < ln->slot + LANE_SLOTS; sl++) {
		if (sl->state == L_DEPOSITED || sl->state == L_TAKEN)
			slot_lost(sl);
		if (sl->state != L_FREE)
			ln->nused++;
	}
	ln->arena_used = 0;
	ln->ndeposited = 0;
	if (ln->nused == 0)
		ln->id = 0;
	pthread_mutex_consistent(&ln->mu);
}

/* Under the lane's mutex: no room there for need bytes of stream id. */
static int
lane_refuses(const struct lane *ln, uint64_t id, size_t need)
{
	return (ln->id != id && ln->nused > 0) || ln->nused == LANE_SLOTS ||
	    ln->arena_used + need > LANE_ARENA;
}

/*
 * Copies an append into a free slot of the lane for stream id. Returns the
 * slot, or NULL when the lane is another stream's or full.
 */
static struct lslot *
deposit(struct ds_lanes *l, struct lane *ln, uint64_t id,
    const struct ds_append *req, int64_t now)
{
	const struct ds_producer *p = req->producer;
	size_t need = req->len + (req->seq ? req->seqlen : 0) +
	    (p ? p->idlen : 0);
	struct lslot *sl;
	char *at;

	/*
	 * Held, or filled, by a process that died waiting? Look once a
	 * second (a clock gone backwards counts as a second gone).
	 */
	if (lane_refuses(ln, id, need) &&
	    (now - ln->reclaimed_ms >= 1000 || now < ln->reclaimed_ms)) {
		ln->reclaimed_ms = now;
		reclaim(l, ln);
	}
	if (lane_refuses(ln, id, need))
		return NULL;
	for (sl = ln->slot; sl->state != L_FREE; sl++)
		;
	ln->id = id;
	ln->nused++;
	sl->proc = l->proc;
	sl->pgen = l->pgen;
	sl->order = ln->order++;
	sl->now = now;
	sl->off = ln->arena_used;
	sl->len = (uint32_t)req->len;
	sl->seqlen = req->seq ? (uint32_t)req->seqlen : 0;
	sl->pidlen = p ? (uint32_t)p->idlen : 0;
	sl->flags = (req->close ? LF_CLOSE : 0) |
	    (req->ctype_ok ? LF_CTYPE_OK : 0) | (req->seq ? LF_SEQ : 0) |
	    (p ? LF_PRODUCER : 0);
	sl->epoch = p ? p->epoch : 0;
	sl->pseq = p ? p->seq : 0;
	at = ln->arena + sl->off;
	if (req->len > 0)
		memcpy(at, req->body, req->len);
	if (sl->seqlen > 0)
		memcpy(at + sl->len, req->seq, sl->seqlen);
	if (sl->pidlen > 0)
		memcpy(at + sl->len + sl->seqlen, p->id, sl->pidlen);
	ln->arena_used += (uint32_t)need;
	sl->state = L_DEPOSITED;
	__atomic_add_fetch(&ln->ndeposited, 1, __ATOMIC_SEQ_CST);
	return sl;
}

/* A taken append, as batch.c sees it. */
struct taken {
	struct pending		 pd;
	struct ds_append	 req;
	struct ds_producer	 p;
	struct ds_append_res	 res;
	struct lslot		*sl;
	uint64_t		 gen;
};

/*
 * Under the lane's mutex: takes every append deposited, oldest first, into
 * a batch of memory of its own (*out, freed by the caller), after dropping
 * those of processes gone and freeing the slots they left. Returns how
 * many, or -1 when out of memory (nothing is taken).
 */
static int
take(struct ds_lanes *l, struct lane *ln, struct taken **out)
{
	struct lslot *sl, *by[LANE_SLOTS];
	struct taken *t, *tk;
	size_t used = 0, need;
	char *buf;
	int n = 0, i, j;

	reclaim(l, ln);
	for (sl = ln->slot; sl < ln->slot + LANE_SLOTS; sl++) {
		if (sl->state != L_DEPOSITED)
			continue;
		for (i = n++; i > 0 && by[i - 1]->order > sl->order; i--)
			by[i] = by[i - 1];
		by[i] = sl;
	}
	*out = NULL;
	if (n == 0)
		return 0;
	if ((t = malloc(n * sizeof(*t) + ln->arena_used)) == NULL)
		return -1;
	buf = (char *)(t + n);
	for (j = 0; j < n; j++) {
		sl = by[j];
		tk = &t[j];
		memset(tk, 0, sizeof(*tk));
		need = sl->len + sl->seqlen + sl->pidlen;
		memcpy(buf + used, ln->arena + sl->off, need);
		tk->req.id = ln->id;
		tk->req.body = buf + used;
		tk->req.len = sl->len;
		tk->req.close = (sl->flags & LF_CLOSE) != 0;
		tk->req.ctype_ok = (sl->flags & LF_CTYPE_OK) != 0;
		if (sl->flags & LF_SEQ) {
			tk->req.seq = buf + used + sl->len;
			tk->req.seqlen = sl->seqlen;
		}
		if (sl->flags & LF_PRODUCER) {
			tk->p.id = buf + used + sl->len + sl->seqlen;
			tk->p.idlen = sl->pidlen;
			tk->p.epoch = sl->epoch;
			tk->p.seq = sl->pseq;
			tk->req.producer = &tk->p;
		}
		used += need;
		tk->res.id = ln->id;
		tk->pd.req = &tk->req;
		tk->pd.now = sl->now;
		tk->pd.res = &tk->res;
		tk->pd.next = j + 1 < n ? &t[j + 1].pd : NULL;
		tk->sl = sl;
		tk->gen = sl->gen;
		sl->state = L_TAKEN;
	}
	ln->arena_used = 0;	/* nothing is deposited now */
	__atomic_store_n(&ln->ndeposited, 0, __ATOMIC_SEQ_CST);
	*out = t;
	return n;
}

/*
 * Leads one batch of the lane, of stream id at path: the caller, whose
 * append is mine, holds the lead. Each append taken gets its result,
 * unless a process's death made someone else answer it meanwhile (its
 * slot then moved on). Returns -1 when out of memory.
 */
static int
lead(struct ds_store *s, struct lane *ln, const char *path, uint64_t id,
    const struct lslot *mine)
{
	struct taken *t;
	struct lslot *sl;
	int n, i;

	lane_lock(ln);
	n = take(s->lanes, ln, &t);
	pthread_mutex_unlock(&ln->mu);
	if (n <= 0)
		return n;
	ds_batch_run(s, path, id, &t[0].pd);
	lane_lock(ln);
	for (i = 0; i < n; i++) {
		sl = t[i].sl;
		if (sl->state != L_TAKEN || sl->gen != t[i].gen) {
			t[i].sl = NULL;	/* answered as lost */
			continue;
		}
		sl->e = (int32_t)t[i].pd.e;
		sl->res = t[i].res;
		sl->state = L_DONE;
		sl->wake++;
	}
	pthread_mutex_unlock(&ln->mu);
	/* A slot freed and taken again meanwhile only wakes for nothing. */
	for (i = 0; i < n; i++)
		if (t[i].sl && t[i].sl != mine)
			ds_futex_wake(&t[i].sl->wake, 1);
	free(t);
	return 0;
}

/*
 * After a batch: the oldest append deposited meanwhile leads the next.
 * One deposited after the count was read tries the lead itself after the
 * caller let go of it.
 */
static void
hand_over(struct lane *ln)
{
	struct lslot *sl, *first = NULL;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&ln->ndeposited, __ATOMIC_SEQ_CST) == 0)
		return;
	lane_lock(ln);
	for (sl = ln->slot; sl < ln->slot + LANE_SLOTS; sl++)
		if (sl->state == L_DEPOSITED &&
		    (first == NULL || sl->order < first->order))
			first = sl;
	if (first) {
		first->wake++;
		ds_futex_wake(&first->wake, 1);
	}
	pthread_mutex_unlock(&ln->mu);
}

int
ds_lane_append(struct ds_store *s, const char *path, uint64_t id,
    const struct ds_append *req, int64_t now, struct ds_append_res *res,
    enum ds_err *e)
{
	struct ds_lanes *l = s->lanes;
	const struct ds_producer *p = req->producer;
	struct lane *ln;
	struct lslot *sl, *o;
	uint64_t gen;
	uint32_t w;
	int rc;

	if (req->len + (req->seq ? req->seqlen : 0) + (p ? p->idlen : 0) >
	    LANE_ONE_MAX || lanes_get(s) == NULL)
		return 0;
	ln = &l->f->lane[ds_id_hash(id) % LANE_N];
	lane_lock(ln);
	if ((sl = deposit(l, ln, id, req, now)) != NULL) {
		w = sl->wake;
		gen = sl->gen;
	}
	pthread_mutex_unlock(&ln->mu);
	if (sl == NULL)
		return 0;
	for (;;) {
		/*
		 * The wake count was read before the lead is tried: a leader
		 * that lets go after this try bumps it when it hands over.
		 */
		rc = pthread_mutex_trylock(&ln->lead);
		if (rc == EOWNERDEAD) {
			/* Its leader was killed inside a batch. */
			lane_lock(ln);
			for (o = ln->slot; o < ln->slot + LANE_SLOTS; o++)
				if (o->state == L_TAKEN)
					slot_lost(o);
			pthread_mutex_unlock(&ln->mu);
			pthread_mutex_consistent(&ln->lead);
			rc = 0;
		}
		if (rc == 0) {
			if (lead(s, ln, path, id, sl) == -1) {
				lane_lock(ln);
				if (sl->state == L_DEPOSITED) {
					sl->e = DS_ENOMEM;
					sl->state = L_DONE;
					__atomic_sub_fetch(&ln->ndeposited, 1,
					    __ATOMIC_SEQ_CST);
				}
				pthread_mutex_unlock(&ln->mu);
			}
			pthread_mutex_unlock(&ln->lead);
			hand_over(ln);
		} else {
			if (rc != EBUSY)
				ds_log("lane lead: %s", strerror(rc));
			ds_futex_wait(&sl->wake, w, LANE_NAP_MS, 1);
		}
		lane_lock(ln);
		if (sl->gen != gen) {
			/* Taken for a process gone: this one must not be. */
			pthread_mutex_unlock(&ln->mu);
			ds_log("lane: an append's slot was reclaimed under it");
			*e = DS_EIO;
			return 1;
		}
		if (sl->state == L_DONE)
			break;
		w = sl->wake;
		pthread_mutex_unlock(&ln->mu);
	}
	*e = (enum ds_err)sl->e;
	*res = sl->res;
	slot_free(ln, sl);
	pthread_mutex_unlock(&ln->mu);
	return 1;
}

/*
 * The device flushes and LMDB syncs of the shared commits (commit.c),
 * shared between processes too. Without the lane file, each process makes
 * its own; a commit opens it only in a server's process (see lanes_get()).
 */
static struct lane_file *
lanes_peek(struct ds_store *s)
{
	if (s->lanes && s->lanes->pool)
		return lanes_get(s);
	return s->lanes && __atomic_load_n(&s->lanes->state,
	    __ATOMIC_ACQUIRE) == 1 ? s->lanes->f : NULL;
}

static void
robust_lock(pthread_mutex_t *m)
{
	if (pthread_mutex_lock(m) == EOWNERDEAD)
		pthread_mutex_consistent(m);	/* its counts are still true */
}

/*
 * Device flushes are numbered as they begin, in any process: the shared
 * flushes (ds_lanes_flush()) and, where an fdatasync() of the LMDB file is
 * known to flush the device the segments are on (s->sync_flush: see
 * ds_seg_sync_flush()), the LMDB syncs (ds_lanes_env_sync()). flush_done
 * is the highest number of a flush that has finished. A range written and
 * waited for before flush_started read m is on stable storage once
 * flush_done > m: that flush began after the range was in the device's
 * cache. Before the file is mapped there is no mark (DS_FLUSH_NOMARK),
 * and a flush must begin after ds_lanes_flush().
 */
uint64_t
ds_lanes_flush_mark(struct ds_store *s)
{
	struct lane_file *f = lanes_peek(s);

	return f ? __atomic_load_n(&f->flush_started, __ATOMIC_SEQ_CST) :
	    DS_FLUSH_NOMARK;
}

static uint64_t
flush_begin(struct lane_file *f)
{
	return __atomic_add_fetch(&f->flush_started, 1, __ATOMIC_SEQ_CST);
}

static void
flush_end(struct lane_file *f, uint64_t n)
{
	uint64_t done = __atomic_load_n(&f->flush_done, __ATOMIC_ACQUIRE);

	while (done < n && !__atomic_compare_exchange_n(&f->flush_done,
	    &done, n, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
		;
}

/*
 * ds_seg_flush() for ranges written and waited for before
 * ds_lanes_flush_mark() returned mark: a flush that began after that, in
 * any process, serves, an LMDB sync included. The shared flushes run one
 * at a time, so a caller that waited for another's finds its work done.
 */
int
ds_lanes_flush(struct ds_store *s, uint64_t mark)
{
	struct lane_file *f = lanes_peek(s);
	uint64_t n;
	int rc, saved;

	if (f == NULL) {
		/* The commit leader and a checkpoint may both be here. */
		pthread_mutex_lock(&s->flush_mu);
		rc = ds_seg_flush(s);
		saved = errno;
		pthread_mutex_unlock(&s->flush_mu);
		errno = saved;
		return rc;
	}
	if (mark == DS_FLUSH_NOMARK)
		mark = __atomic_load_n(&f->flush_started, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&f->flush_done, __ATOMIC_ACQUIRE) > mark)
		return 0;
	robust_lock(&f->flush_mu);
	if (__atomic_load_n(&f->flush_done, __ATOMIC_ACQUIRE) > mark) {
		pthread_mutex_unlock(&f->flush_mu);
		return 0;
	}
	n = flush_begin(f);
	rc = ds_seg_flush(s);
	saved = errno;
	if (rc == 0)
		flush_end(f, n);
	pthread_mutex_unlock(&f->flush_mu);
	errno = saved;
	return rc;
}

/*
 * mdb_env_sync() for transaction txnid, committed before the call: a sync
 * by any process that began after it was committed serves. Returns 0 or
 * an LMDB error. Where it is a flush of the segments' device, the sync
 * counts as one for the ranges that wait for a shared flush (see above).
 */
int
ds_lanes_env_sync(struct ds_store *s, uint64_t txnid)
{
	struct lane_file *f = lanes_peek(s);
	MDB_envinfo ei;
	uint64_t n = 0;
	int rc;

	if (f == NULL)
		return ds_stats_env_sync(s->env);
	robust_lock(&f->sync_mu);
	if (f->synced_txn >= txnid) {
		pthread_mutex_unlock(&f->sync_mu);
		return 0;
	}
	/* Every transaction up to the last one is in the file's pages. */
	if ((rc = mdb_env_info(s->env, &ei)) == 0) {
		if (s->sync_flush)
			n = flush_begin(f);
		if ((rc = ds_stats_env_sync(s->env)) == 0) {
			if (ei.me_last_txnid > f->synced_txn)
				f->synced_txn = ei.me_last_txnid;
			if (n != 0)
				flush_end(f, n);
		}
	}
	pthread_mutex_unlock(&f->sync_mu);
	return rc;
}

/*
 * Whether a journal checkpoint (journal.c) is due, every_us after the last
 * one any process began; if so, the caller's begins now. Without the lane
 * file, each store keeps its own time.
 */
int
ds_lanes_ckpt_due(struct ds_store *s, int64_t every_us)
{
	struct lane_file *f = lanes_peek(s);
	int64_t now = ds_mono_us(), *last = f ? &f->ckpt_us : &s->ck_last_us;
	int64_t was = __atomic_load_n(last, __ATOMIC_ACQUIRE);

	return now - was >= every_us && __atomic_compare_exchange_n(last,
	    &was, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
