/*
 * id_adopt_test.c: a create with a body that draws the id of a stream
 * created empty must draw again before it makes a segment file.
 *
 * Stream A is created empty with id X (no segment file). A create of B
 * with a body draws X too. Were B to make segments/../X (O_EXCL succeeds:
 * A has no file), an append to A before B's commit would open X, write
 * and commit A's tail; B's commit would then fail at the ids database and
 * unlink X, the file that holds A's acknowledged bytes. create_once()
 * looks the id up first (id_taken()).
 *
 * The interleaving is forced in one thread: getrandom() and clock_gettime()
 * are pinned so that A's and B's first draws give the same id, and the
 * fdatasync() of B's new segment runs A's append first.
 */
#include <sys/syscall.h>
#include <sys/random.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_int.h"
#include "t/tap.h"
#include "t/unit/store_util.h"

static int pin_draws;		/* draws still pinned */
static int pin_clock;
static int hook_armed;
static struct ds_store *hook_store;
static enum ds_err hook_e = DS_EIO;

ssize_t
getrandom(void *buf, size_t len, unsigned int flags)
{
	if (pin_draws > 0) {
		pin_draws--;
		memset(buf, 0x5a, len);
		return (ssize_t)len;
	}
	return syscall(SYS_getrandom, buf, len, flags);
}

int
clock_gettime(clockid_t clk, struct timespec *ts)
{
	if (pin_clock && clk == CLOCK_REALTIME) {
		ts->tv_sec = 1700000000;
		ts->tv_nsec = 0;
		return 0;
	}
	return (int)syscall(SYS_clock_gettime, clk, ts);
}

int
fdatasync(int fd)
{
	char link[64], target[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n > 0) {
		target[n] = '\0';
		if (hook_armed && strstr(target, "/segments/") != NULL) {
			struct ds_append_res res;

			hook_armed = 0;
			/* A's append, between B's file and B's commit. */
			hook_e = append(hook_store, "a", "hello", 0, NULL,
			    NULL, &res);
		}
	}
	return (int)syscall(SYS_fdatasync, fd);
}

int
main(void)
{
	struct ds_create empty = { .ctype = "text/plain" };
	struct ds_create body = { .ctype = "text/plain", .body = "abc",
	    .len = 3 };
	struct ds_stream_info a, b, info;
	struct ds_store *s;
	char *data = NULL;
	size_t len = 0;
	enum ds_err e;

	s = store_begin("idadopt", "adopt");
	hook_store = s;
	pin_clock = 1;
	pin_draws = 1;
	must_ds(ds_store_create(s, "a", &empty, 1000, &a));
	pin_draws = 1;		/* B's first draw: A's id */
	hook_armed = 1;
	e = ds_store_create(s, "b", &body, 1000, &b);
	pin_clock = 0;
	is_int(e, DS_OK, "B is created (after drawing again)");
	ok(b.id != a.id, "B got another id");
	is_int(hook_e, DS_OK, "A's append, made meanwhile, was answered 2xx");
	e = ds_store_read(s, "a", 0, 100, 1000, &info, &data, &len);
	is_int(e, DS_OK, "A reads back");
	ok(e == DS_OK && len == 5 && memcmp(data, "hello", 5) == 0,
	    "A holds its committed append");
	free(data);
	store_end(s);
	return done_testing();
}
