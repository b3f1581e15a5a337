/*
 * main.c: the ds-fcgi worker process.
 *
 * spawn-fcgi (through multiwatch, which respawns dead workers) hands every
 * worker the listening socket on fd 0. A worker runs --threads threads, each
 * accepting and serving one request at a time; a long-poll that has to wait
 * is handed to the worker's lot (lot.c) with its FastCGI request, and the
 * thread takes fresh ones for the next accept. The main thread only waits
 * for SIGTERM/SIGINT: libfcgi's own SIGTERM handling merely sets a flag that
 * accept never sees, so signals are blocked everywhere and taken with
 * sigwait() here; then the worker lets in-flight requests finish (bounded)
 * and exits.
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <fcgiapp.h>

#include "fcgi-app/app.h"
#include "fcgi-app/live.h"
#include "fcgi-app/json.h"
#include "fcgi-app/log.h"
#include "fcgi-app/metrics.h"
#include "fcgi-app/notify.h"
#include "fcgi-app/parse.h"
#include "fcgi-app/privdrop.h"
#include "fcgi-app/subs.h"

static struct ds_cfg	 cfg = {
	.threads = 256,
	.max_body = 16u << 20,
	.chunk = 1u << 20,
	.longpoll_ms = 30000,
	.sse_ms = 60000,
	.heartbeat_ms = 15000,
	.retry_base_ms = 1000,
	.retry_max_ms = 60000,
};
static struct ds_store	*store;
static int		 listen_fd;
static atomic_int	 busy;		/* requests being served */
static atomic_int	 stopping;
static atomic_int	 accepting;	/* threads in FCGX_Accept_r() */
static pthread_t	*servers;	/* the --threads threads */
static sigset_t		 wake_set;	/* SIGUSR1: out of accept() */

/*
 * A worker told to stop must not accept another connection: the listening
 * socket is the whole pool's, and a request it took now would die with
 * it. Its threads wait in accept() with SIGUSR1 unblocked (and blocked
 * while they serve, so that no request's I/O is interrupted); on stop the
 * main thread sends them SIGUSR1, which (no SA_RESTART, and
 * FCGI_FAIL_ACCEPT_ON_INTR) makes accept() fail with EINTR.
 */
static void
wake_noop(int sig)
{
	(void)sig;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: ds-fcgi --data DIR [--threads N] [--max-body BYTES] "
	    "[--chunk BYTES]\n"
	    "               [--notify PATH] [--long-poll-timeout MS] "
	    "[--sse-lifetime MS]\n"
	    "               [--sse-heartbeat MS] [--listen PATH] "
	    "[-n|--check]\n"
	    "               [--retention FILE [--retention-interval MS]] "
	    "[--metrics FILE] [--user NAME]\n"
	    "               [--rotate-webhook-key] [--[no-]webhook-loopback] "
	    "[--public-url URL]\n"
	    "               [--webhook-retry-base MS] "
	    "[--webhook-retry-max MS] [--test-hooks]\n"
	    "(listing, checking and repairing a store: ds-admin)\n");
	exit(2);
}

static size_t
parse_size(const char *opt, const char *v, uint64_t min, uint64_t max)
{
	uint64_t n;

	if (ds_parse_uint(v, strlen(v), max, &n) == -1 || n < min) {
		ds_app_log("%s must be an integer from %llu to "
		    "%llu, not \"%s\"", opt, (unsigned long long)min,
		    (unsigned long long)max, v);
		exit(2);
	}
	return (size_t)n;
}

/*
 * --public-url: the stream root URL as clients reach it behind a proxy
 * (callback and JWKS URLs are made from it). http(s), no query, no
 * trailing slash (one is dropped).
 */
static const char *
public_url(char *v)
{
	size_t n = strlen(v);

	if (n > 0 && v[n - 1] == '/')
		v[--n] = '\0';
	if ((strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) ||
	    n > 1024 || strpbrk(v, "?# \t\r\n\"\\") != NULL) {
		ds_app_log("--public-url must be an http(s) URL without query, "
		    "not \"%s\"", v);
		exit(2);
	}
	return v;
}

static void *
serve(void *arg)
{
	FCGX_Request *fr = NULL;
	struct ds_req *r = NULL;
	const char *cl;
	int rc, backoff = 0;

	(void)arg;
	while (!atomic_load(&stopping)) {
		/* Fresh ones at first and when the lot kept the last. */
		if (fr == NULL && (fr = malloc(sizeof(*fr))) != NULL &&
		    FCGX_InitRequest(fr, listen_fd,
		    FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
			free(fr);
			fr = NULL;
		}
		if (r == NULL)
			r = malloc(sizeof(*r));
		if (fr == NULL || r == NULL) {
			ds_app_log("cannot set up a request");
			sleep(1);
			continue;
		}
		atomic_fetch_add(&accepting, 1);
		pthread_sigmask(SIG_UNBLOCK, &wake_set, NULL);
		rc = atomic_load(&stopping) ? -EINTR : FCGX_Accept_r(fr);
		pthread_sigmask(SIG_BLOCK, &wake_set, NULL);
		atomic_fetch_sub(&accepting, 1);
		if (rc < 0) {
			/*
			 * EMFILE and friends: wait and retry; a thread
			 * that dies here shrinks the pool for good.
			 */
			if (atomic_load(&stopping))
				break;
			if (backoff == 0)
				ds_app_log("accept: %s", strerror(-rc));
			backoff = backoff ? (backoff < 500 ? backoff * 2 :
			    500) : 10;
			nanosleep(&(struct timespec){ 0, backoff * 1000000L },
			    NULL);
			continue;
		}
		backoff = 0;
		atomic_fetch_add(&busy, 1);
		memset(r, 0, offsetof(struct ds_req, hdr));
		r->hdrlen = 0;
		r->hdr_overflow = 0;
		r->hdr[0] = '\0';
		r->fr = fr;
		r->cfg = &cfg;
		r->store = store;
		r->now = ds_now_ms();
		cl = FCGX_GetParam("CONTENT_LENGTH", fr->envp);
		r->input_done = cl == NULL || *cl == '\0' ||
		    strcmp(cl, "0") == 0;
		if (!ds_scrape(r))
			ds_handle(r);
		if (r->parked) {
			ds_lot_handover(r);
			r = NULL;
			fr = NULL;
		} else {
			free(r->body);
			r->body = NULL;
			ds_finish(fr, r->input_done);
		}
		atomic_fetch_sub(&busy, 1);
	}
	free(r);
	if (fr)
		FCGX_Free(fr, 1);
	free(fr);
	return NULL;
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "threads", required_argument, NULL, 't' },
		{ "max-body", required_argument, NULL, 'b' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "notify", required_argument, NULL, 'N' },
		{ "long-poll-timeout", required_argument, NULL, 'L' },
		{ "sse-lifetime", required_argument, NULL, 'S' },
		{ "sse-heartbeat", required_argument, NULL, 'H' },
		{ "check", no_argument, NULL, 'n' },
		{ "metrics", required_argument, NULL, 'm' },
		{ "user", required_argument, NULL, 'u' },
		{ "test-hooks", no_argument, NULL, 'T' },
		{ "webhook-loopback", no_argument, NULL, 'W' },
		{ "no-webhook-loopback", no_argument, NULL, 'w' },
		{ "rotate-webhook-key", no_argument, NULL, 'K' },
		{ "public-url", required_argument, NULL, 'U' },
		{ "webhook-retry-base", required_argument, NULL, 'B' },
		{ "webhook-retry-max", required_argument, NULL, 'M' },
		{ "retention", required_argument, NULL, 'P' },
		{ "retention-interval", required_argument, NULL, 'I' },
		{ NULL, 0, NULL, 0 }
	};
	struct ds_store_cfg scfg;
	struct rlimit rl;
	struct stat st;
	pthread_attr_t attr;
	sigset_t set;
	enum ds_err e;
	const char *metrics = NULL, *user = NULL, *retention = NULL;
	uid_t uid = 0;
	gid_t gid = 0;
	unsigned i, retention_ms = 1000;
	int ch, sig, check = 0, waited, rotate = 0;
	char kid[DS_KID_MAX];

	/*
	 * One malloc arena for the process, before any thread starts. With
	 * one arena per thread (up to 8 per core) each kept the top of its
	 * heap, up to twice glibc's mmap threshold, which it raises to the
	 * largest block freed (read answers of up to 1 MiB), and malloc_trim()
	 * below gives back only the main arena's top. scripts/soak saw the
	 * workers grow from 60 to 127 MiB in ten minutes; with one arena they
	 * stay near 60. Fixing the mmap threshold at 128 KiB instead kept them
	 * flat too, but made every 1 MiB read fault in a fresh mapping (3x the
	 * CPU per read). One arena cost nothing measurable in CPU per append
	 * or per read: two cores run two threads at a time, and glibc's
	 * per-thread caches serve the small blocks without its lock.
	 */
	mallopt(M_ARENA_MAX, 1);

	while ((ch = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			cfg.data_dir = optarg;
			break;
		case 't':
			/*
			 * The cap is memory: each thread reserves a 256 KiB
			 * stack, 900 of them 225 MiB a worker. Descriptors
			 * are no limit: libfcgi accepts and closes with
			 * poll(), not select().
			 */
			cfg.threads = (unsigned)parse_size("--threads", optarg,
			    1, 900);
			break;
		case 'b':
			cfg.max_body = parse_size("--max-body", optarg, 1,
			    (uint64_t)1 << 32);
			break;
		case 'c':
			cfg.chunk = parse_size("--chunk", optarg, 1024,
			    (uint64_t)64 << 20);
			break;
		case 'l':
			cfg.listen = optarg;
			break;
		case 'N':
			cfg.notify = optarg;
			break;
		case 'L':
			cfg.longpoll_ms = (unsigned)parse_size(
			    "--long-poll-timeout", optarg, 100, 3600000);
			break;
		case 'S':
			cfg.sse_ms = (unsigned)parse_size("--sse-lifetime",
			    optarg, 100, 3600000);
			break;
		case 'H':
			cfg.heartbeat_ms = (unsigned)parse_size(
			    "--sse-heartbeat", optarg, 100, 15000);
			break;
		case 'n':
			check = 1;
			break;
		case 'm':
			metrics = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		case 'T':
			cfg.test_hooks = 1;
			break;
		case 'W':
			cfg.webhook_loopback = 1;
			break;
		case 'w':	/* the last of the two wins */
			cfg.webhook_loopback = 0;
			break;
		case 'K':
			rotate = 1;
			break;
		case 'U':
			cfg.public_url = public_url(optarg);
			break;
		case 'B':
			cfg.retry_base_ms = (unsigned)parse_size(
			    "--webhook-retry-base", optarg, 10, 3600000);
			break;
		case 'M':
			cfg.retry_max_ms = (unsigned)parse_size(
			    "--webhook-retry-max", optarg, 10, 86400000);
			break;
		case 'P':
			retention = optarg;
			break;
		case 'I':
			retention_ms = (unsigned)parse_size(
			    "--retention-interval", optarg, 100, 86400000);
			break;
		default:
			usage();
		}
	}
	if (optind != argc || cfg.data_dir == NULL)
		usage();
	if (cfg.retry_max_ms < cfg.retry_base_ms) {
		ds_app_log("--webhook-retry-max must not be below "
		    "--webhook-retry-base");
		return 2;
	}
	if (stat(cfg.data_dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
		ds_app_log("--data %s is not a directory", cfg.data_dir);
		return 2;
	}

	if (retention && ds_retention_check(retention) == -1) {
		ds_app_log("--retention %s has errors (above)", retention);
		return 2;
	}

	if (user && ds_priv_lookup(user, &uid, &gid) == -1)
		return 2;

	/*
	 * What may need root comes first: the descriptor limit, the
	 * listening socket, the metrics file in the run directory. Then
	 * the worker drops to --user for good, and opens the store as that
	 * user, so that every file it makes is that user's.
	 */
	/* Parked readers hold descriptors: take all the kernel allows. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	listen_fd = 0;
	if (!check) {
		if (FCGX_Init() != 0) {
			ds_app_log("FCGX_Init failed");
			return 1;
		}
		if (cfg.listen &&
		    (listen_fd = FCGX_OpenSocket(cfg.listen, 1024)) < 0) {
			ds_app_log("cannot listen on %s", cfg.listen);
			return 1;
		}
		/* Accepted connections are of the listening socket's family. */
		cfg.splice = ds_put_can_splice(listen_fd);
		if (ds_metrics_open(metrics) == -1 && metrics)
			ds_app_log("metrics: this worker's counts stay "
			    "private; a scrape shows the worker it reaches");
	}
	if (user && ds_priv_drop(uid, gid) == -1)
		return 1;

	memset(&scfg, 0, sizeof(scfg));
	scfg.dir = cfg.data_dir;
	scfg.pool = 1;
	if ((e = ds_store_open(&scfg, &store)) != DS_OK) {
		ds_app_log("cannot open the store in %s: %s",
		    cfg.data_dir, ds_strerror(e));
		return 1;
	}
	if (check) {
		printf("ds-fcgi: configuration and store in %s are fine",
		    cfg.data_dir);
		if (user)
			printf("; running as %s (uid %ld, gid %ld), root "
			    "cannot be regained", user, (long)uid, (long)gid);
		printf("\n");
		ds_store_close(store);
		return 0;
	}

	if (rotate) {
		if (ds_keys_rotate(store, ds_now_ms(), DS_KEY_KEEP_MS, kid) ==
		    -1)
			return 1;
		printf("ds-fcgi: webhook signing key %s made; the old one stays "
		    "in the JWK Set for %lld minutes: restart the workers "
		    "now\n", kid, DS_KEY_KEEP_MS / 60000);
		ds_store_close(store);
		return 0;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 ||
	    ds_keys_load(store) == -1) {
		ds_app_log("cannot set up webhook signing and tokens");
		return 1;
	}

	/* Every thread inherits this mask; only sigwait() below sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	sigemptyset(&wake_set);
	sigaddset(&wake_set, SIGUSR1);
	sigaddset(&set, SIGUSR1);	/* unblocked only around accept() */
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
	    sigaction(SIGUSR1, &(struct sigaction){ .sa_handler = wake_noop },
	    NULL) != 0) {
		ds_app_log("pthread_sigmask failed");
		return 1;
	}
	if (retention && ds_retention_start(store, retention, cfg.data_dir,
	    retention_ms) == -1) {
		ds_app_log("cannot start the retention thread");
		return 1;
	}
	if (ds_lot_start() == -1)
		ds_app_log("cannot start the long-poll lot: %s; "
		    "long-polls wait in their threads", strerror(errno));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	/* Joinable, never joined: pthread_kill() must stay valid on them. */
	if ((servers = calloc(cfg.threads, sizeof(*servers))) == NULL) {
		ds_app_log("out of memory");
		return 1;
	}
	for (i = 0; i < cfg.threads; i++) {
		if ((errno = pthread_create(&servers[i], &attr, serve, NULL)) !=
		    0) {
			ds_app_log("pthread_create: %s", strerror(errno));
			return 1;
		}
	}
	pthread_attr_destroy(&attr);
	if (notify_start(cfg.notify) == -1) {
		ds_app_log("cannot start the notifier client");
		return 1;
	}
	if (ds_deliver_start(store, &cfg) == -1) {
		ds_app_log("cannot start subscription delivery");
		return 1;
	}

	/*
	 * Every 10 s, give the memory freed in malloc's per-thread arenas
	 * back to the kernel: a burst of large reads leaves megabytes in
	 * each arena that glibc keeps for reuse, which looked like a worker
	 * growing without bound (98 MiB after scripts/bench, 14 MiB idle).
	 */
	for (;;) {
		sig = sigtimedwait(&set, NULL, &(struct timespec){ 10, 0 });
		if (sig == -1 && errno == EAGAIN)
			malloc_trim(0);
		if (sig == SIGTERM || sig == SIGINT)
			break;
	}
	atomic_store(&stopping, 1);
	FCGX_ShutdownPending();
	/*
	 * Out of accept(), every thread waiting there (see wake_noop()):
	 * again every 10 ms, for one that was on its way in, for 1 s at most.
	 */
	for (waited = 0; atomic_load(&accepting) > 0 && waited < 100;
	    waited++) {
		for (i = 0; i < cfg.threads; i++)
			pthread_kill(servers[i], SIGUSR1);
		nanosleep(&(struct timespec){ 0, 10 * 1000000L }, NULL);
	}
	ds_lot_drain(1000);
	/* Let requests in flight finish, for at most five seconds. */
	for (waited = 0; atomic_load(&busy) > 0 && waited < 500; waited++)
		nanosleep(&(struct timespec){ 0, 10 * 1000000L }, NULL);
	/* Threads are still blocked in accept: leave without joining. */
	ds_metrics_close();
	_exit(0);
}
