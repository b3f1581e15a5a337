/*
 * noop.c: the cheapest possible FastCGI responder, to measure the ceiling of the front server
 * and libfcgi on this machine (scripts/bench, case "noop").  T threads each loop on
 * FCGX_Accept_r, read the request body to its end and answer "Status: 204 No Content".
 *
 * With NOOP_PARK_FILE set (scripts/bench, the fan-out floor) it also stands in for the live
 * reads, to measure what the front server alone costs a fan-out: a GET with "live=long-poll"
 * is parked until the next POST and then answered "tick" (with the headers ds-fcgi sends); a
 * GET with "live=sse" gets a control event at once and "tick" as a data event then. As in
 * ds-fcgi, one thread per process answers all its parked requests; the POSTs of every worker
 * process wake the answerers of every other through a generation counter in that file (mapped
 * shared, a futex across processes). A parked request waits for as long as it takes.
 *
 * It takes ds-fcgi's command line so that scripts/run can start it through DS_FCGI_BIN:
 * "--threads N" is used, "--check" and "--recover" exit 0 at once, every other argument is
 * ignored.
 * SIGTERM and SIGINT end the process (blocked in every thread, taken by sigwait in main).
 *
 * Build: cc -O2 -pthread -o noop noop.c -lfcgi
 */
#include <sys/mman.h>
#include <sys/syscall.h>

#include <linux/futex.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>

static void *noop_serve(void *);

static _Atomic unsigned *park_gen;	/* NOOP_PARK_FILE, mapped shared */

/*
 * A long-poll answer carries the headers ds-fcgi's does (PROTOCOL 12.7, CORS, the stream's
 * position and caching): what they cost the front server is part of its floor.
 */
#define PARK_HEADERS \
	"X-Content-Type-Options: nosniff\r\n" \
	"Cross-Origin-Resource-Policy: cross-origin\r\n" \
	"Access-Control-Allow-Origin: *\r\n" \
	"Access-Control-Expose-Headers: Stream-Next-Offset, Stream-Cursor, " \
	"Stream-Up-To-Date, Stream-Closed, Stream-TTL, Stream-Expires-At, " \
	"Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, " \
	"Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, " \
	"Content-Type\r\n"

/* The parked live GETs of this process, answered by park_run(). */
struct parked {
	FCGX_Request	*req;
	int		 sse;
	struct parked	*next;
};
static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static struct parked *park_list;

/* park_tick: the answer a parked request gets when the POST comes. */
static void
park_tick(FCGX_Request *req, int sse)
{
	FCGX_PutS(sse ? "event: data\ndata: tick\n\n" : "Status: 200 OK\r\n"
	    PARK_HEADERS "Content-Type: text/plain\r\nContent-Length: 4\r\n"
	    "Cache-Control: public, max-age=60, stale-while-revalidate=300\r\n"
	    "ETag: \"1:1:5\"\r\nStream-Cursor: 1\r\n"
	    "Stream-Next-Offset: 0000000000000000_0000000000000005\r\n"
	    "Stream-Up-To-Date: true\r\n\r\ntick", req->out);
}

/*
 * park_run: the process's one answering thread. It sleeps on the shared generation; when a
 * POST (of any process) moves it, it answers every request parked here with "tick" from this
 * thread, as ds-fcgi's lot does, so the fan-out costs the app one write and close per reader.
 */
static void *
park_run(void *arg)
{
	struct parked *p, *next;
	unsigned g;

	(void)arg;
	g = atomic_load(park_gen);
	for (;;) {
		while (atomic_load(park_gen) == g)
			syscall(SYS_futex, (unsigned *)park_gen, FUTEX_WAIT, g, NULL, NULL, 0);
		/*
		 * The generation is read with the list: a POST while the list is
		 * answered is seen on the next turn, and what parked before it is
		 * on the list then.
		 */
		pthread_mutex_lock(&park_mu);
		g = atomic_load(park_gen);
		p = park_list;
		park_list = NULL;
		pthread_mutex_unlock(&park_mu);
		for (; p != NULL; p = next) {
			next = p->next;
			park_tick(p->req, p->sse);
			/* As ds-fcgi's lot: detached, libfcgi closes at once instead of
			 * waiting (up to 2 s) for the front server to close first. */
			FCGX_Detach(p->req);
			FCGX_Finish_r(p->req);
			free(p->req);
			free(p);
		}
	}
	return NULL;
}

/*
 * park_answer: the live GETs and the POST of park mode. Returns 0 when the request was none
 * of them, 1 when it was answered, 2 when it was parked (park_run() owns it now).
 */
static int
park_answer(FCGX_Request *req, unsigned g)
{
	const char *m = FCGX_GetParam("REQUEST_METHOD", req->envp);
	const char *q = FCGX_GetParam("QUERY_STRING", req->envp);
	struct parked *p;
	int sse;

	if (m != NULL && strcmp(m, "POST") == 0) {
		atomic_fetch_add(park_gen, 1);
		syscall(SYS_futex, (unsigned *)park_gen, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
		FCGX_PutS("Status: 204 No Content\r\nStream-Next-Offset: 1\r\n\r\n", req->out);
		return 1;
	}
	if (m == NULL || strcmp(m, "GET") != 0 || q == NULL)
		return 0;
	if (strstr(q, "live=long-poll") != NULL)
		sse = 0;
	else if (strstr(q, "live=sse") != NULL)
		sse = 1;
	else
		return 0;
	if ((p = malloc(sizeof(*p))) == NULL)
		return 0;
	p->req = req;
	p->sse = sse;
	/*
	 * Under the lock park_run() takes the list with: a POST since the request came in
	 * (g) is answered here, a later one finds the request on the list.
	 */
	/* Closed when answered, whatever the front server asked (as ds-fcgi's lot). */
	req->keepConnection = 0;
	if (sse) {
		FCGX_PutS("Status: 200 OK\r\n" PARK_HEADERS
		    "Content-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
		    "event: control\ndata: {}\n\n", req->out);
		FCGX_FFlush(req->out);
	}
	pthread_mutex_lock(&park_mu);
	if (atomic_load(park_gen) != g) {
		pthread_mutex_unlock(&park_mu);
		free(p);
		park_tick(req, sse);
		return 1;
	}
	p->next = park_list;
	park_list = p;
	pthread_mutex_unlock(&park_mu);
	return 2;
}

/*
 * noop_serve: one worker thread.  Accept errors that a busy machine produces (out of
 * descriptors, interrupted) are retried after a short pause; the thread never dies on them.
 * Any other accept error ends the process.
 */
static void *
noop_serve(void *arg)
{
	FCGX_Request *req;
	char buf[65536];
	unsigned g;
	int rc, done;

	(void)arg;
	for (;;) {
		/* Each request is on the heap: a parked one moves to park_run(). */
		if ((req = malloc(sizeof(*req))) == NULL || FCGX_InitRequest(req, 0, 0) != 0) {
			fprintf(stderr, "noop: %s: FCGX_InitRequest failed\n", __func__);
			return NULL;
		}
		for (done = 0; !done;) {
			rc = FCGX_Accept_r(req);
			if (rc < 0) {
				if (rc == -EMFILE || rc == -ENFILE || rc == -EINTR ||
				    rc == -ECONNABORTED || rc == -EAGAIN) {
					usleep(1000);
					continue;
				}
				/* Anything else (not started under a FastCGI listener, say) is
				 * fatal; multiwatch starts a new process. */
				fprintf(stderr, "noop: %s: FCGX_Accept_r: %s\n", __func__,
				    -rc < 4096 ? strerror(-rc) : "error");
				exit(1);
			}
			g = park_gen != NULL ? atomic_load(park_gen) : 0;
			while (FCGX_GetStr(buf, sizeof buf, req->in) > 0)
				;
			rc = park_gen != NULL ? park_answer(req, g) : 0;
			if (rc == 0)
				FCGX_PutS("Status: 204 No Content\r\n\r\n", req->out);
			if (rc == 2)
				done = 1;
			else
				FCGX_Finish_r(req);
		}
	}
	return NULL;
}

int
main(int argc, char *argv[])
{
	sigset_t set;
	pthread_t tid;
	long threads = 32;
	const char *park;
	int i, sig, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check") == 0 ||
		    strcmp(argv[i], "--recover") == 0)
			return 0;
		if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			threads = strtol(argv[++i], NULL, 10);
			if (threads < 1 || threads > 4096) {
				fprintf(stderr, "noop: --threads must be 1..4096\n");
				return 2;
			}
		}
	}

	if ((park = getenv("NOOP_PARK_FILE")) != NULL && *park) {
		int fd = open(park, O_RDWR | O_CREAT, 0600);
		void *p;

		if (fd == -1 || ftruncate(fd, 4096) == -1 ||
		    (p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
		    MAP_FAILED) {
			fprintf(stderr, "noop: %s: %s\n", park, strerror(errno));
			return 1;
		}
		close(fd);
		park_gen = p;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((rc = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0) {
		fprintf(stderr, "noop: pthread_sigmask: %s\n", strerror(rc));
		return 1;
	}
	/* After the signal mask: every thread leaves SIGTERM to sigwait. */
	if (park_gen != NULL && (rc = pthread_create(&tid, NULL, park_run, NULL)) != 0) {
		fprintf(stderr, "noop: pthread_create: %s\n", strerror(rc));
		return 1;
	}
	if (FCGX_Init() != 0) {
		fprintf(stderr, "noop: FCGX_Init failed\n");
		return 1;
	}
	for (i = 0; i < threads; i++) {
		if ((rc = pthread_create(&tid, NULL, noop_serve, NULL)) != 0) {
			fprintf(stderr, "noop: pthread_create: %s\n", strerror(rc));
			return 1;
		}
		pthread_detach(tid);
	}
	do {
		rc = sigwait(&set, &sig);
	} while (rc == EINTR);
	_exit(0);
}
