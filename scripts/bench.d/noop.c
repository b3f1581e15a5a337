/*
 * noop.c: the cheapest possible FastCGI responder, to measure the ceiling of the front server
 * and libfcgi on this machine (scripts/bench, case "noop").  T threads each loop on
 * FCGX_Accept_r, read the request body to its end and answer "Status: 204 No Content".
 *
 * It takes ds-fcgi's command line so that scripts/run can start it through DS_FCGI_BIN:
 * "--threads N" is used, "--check" and "--recover" exit 0 at once, every other argument is
 * ignored.
 * SIGTERM and SIGINT end the process (blocked in every thread, taken by sigwait in main).
 *
 * Build: cc -O2 -pthread -o noop noop.c -lfcgi
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcgiapp.h>

static void *noop_serve(void *);

/*
 * noop_serve: one worker thread.  Accept errors that a busy machine produces (out of
 * descriptors, interrupted) are retried after a short pause; the thread never dies on them.
 * Any other accept error ends the process.
 */
static void *
noop_serve(void *arg)
{
	FCGX_Request req;
	char buf[65536];
	int rc;

	(void)arg;
	if (FCGX_InitRequest(&req, 0, 0) != 0) {
		fprintf(stderr, "noop: %s: FCGX_InitRequest failed\n", __func__);
		return NULL;
	}
	for (;;) {
		rc = FCGX_Accept_r(&req);
		if (rc < 0) {
			if (rc == -EMFILE || rc == -ENFILE || rc == -EINTR ||
			    rc == -ECONNABORTED || rc == -EAGAIN) {
				usleep(1000);
				continue;
			}
			/* Anything else (not started under a FastCGI listener, say) is fatal;
			 * multiwatch starts a new process. */
			fprintf(stderr, "noop: %s: FCGX_Accept_r: %s\n", __func__,
			    -rc < 4096 ? strerror(-rc) : "error");
			exit(1);
		}
		while (FCGX_GetStr(buf, sizeof buf, req.in) > 0)
			;
		FCGX_PutS("Status: 204 No Content\r\n\r\n", req.out);
		FCGX_Finish_r(&req);
	}
	return NULL;
}

int
main(int argc, char *argv[])
{
	sigset_t set;
	pthread_t tid;
	long threads = 32;
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

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((rc = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0) {
		fprintf(stderr, "noop: pthread_sigmask: %s\n", strerror(rc));
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
