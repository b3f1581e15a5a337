/*
 * tap.h: a tiny Test Anything Protocol producer for the C unit tests.
 *
 *	plan(n);			or no plan, and done_testing() prints it
 *	ok(cond, "fmt", ...);
 *	is_int(got, want, "fmt", ...);
 *	is_str(got, want, "fmt", ...);
 *	is_mem(got, gotlen, want, wantlen, "fmt", ...);
 *	must(cond, "fmt", ...);		a setup step: bail out unless cond
 *	diag("fmt", ...);		a '#' line on stderr
 *	note("fmt", ...);		a '#' line on stdout (quiet under prove)
 *	seed = tap_seed();		DS_SEED or the clock, printed for replay
 *	x = tap_rand();			deterministic given the seed
 *	return done_testing();
 *
 * Failures print file:line and, when errno is set, its text. Every check
 * clears errno afterwards, so the errno a failure reports was set since the
 * previous check. Header-only and single-threaded, like the tests.
 */
#ifndef DS_TAP_H
#define DS_TAP_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAP_UNUSED	__attribute__((unused))
#define TAP_PRINTF(f, a) __attribute__((format(printf, f, a)))

static TAP_UNUSED int		 tap_planned = -1;	/* -1: no plan */
static TAP_UNUSED int		 tap_run;		/* checks so far */
static TAP_UNUSED int		 tap_failed;		/* failed checks */
static TAP_UNUSED int		 tap_seeded;		/* tap_seed called */
static TAP_UNUSED uint64_t	 tap_seed_value;	/* for the summary */
static TAP_UNUSED uint64_t	 tap_rng;		/* tap_rand state */

static TAP_UNUSED TAP_PRINTF(2, 0) void
tap_vline(FILE *fp, const char *fmt, va_list ap)
{

	fputs("# ", fp);
	vfprintf(fp, fmt, ap);
	fputc('\n', fp);
	fflush(fp);
}

/* A diagnostic line on stderr, where prove shows it. */
static TAP_UNUSED TAP_PRINTF(1, 2) void
diag(const char *fmt, ...)
{
	va_list	 ap;

	fflush(stdout);
	va_start(ap, fmt);
	tap_vline(stderr, fmt, ap);
	va_end(ap);
}

/* A comment on stdout, seen only with prove -v. */
static TAP_UNUSED TAP_PRINTF(1, 2) void
note(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	tap_vline(stdout, fmt, ap);
	va_end(ap);
}

static TAP_UNUSED void
plan(int n)
{

	tap_planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

/* Stops the whole run: prove reports the reason and fails the file. */
static TAP_UNUSED TAP_PRINTF(1, 2) __attribute__((noreturn)) void
bail_out(const char *fmt, ...)
{
	va_list	 ap;

	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(255);
}

/*
 * Records one check and prints its "ok N - name" line. Returns cond so that
 * callers can skip dependent checks. On failure the diagnostic carries
 * file:line and errno's text; err is errno as it was before the check
 * macro evaluated anything of its own.
 */
static TAP_UNUSED TAP_PRINTF(5, 0) int
tap_vok(int cond, const char *file, int line, int err, const char *fmt,
    va_list ap)
{

	tap_run++;
	if (!cond) {
		tap_failed++;
		printf("not ");
	}
	printf("ok %d - ", tap_run);
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
	if (!cond) {
		if (err != 0)
			diag("  Failed test at %s:%d (errno: %s)", file, line,
			    strerror(err));
		else
			diag("  Failed test at %s:%d", file, line);
	}
	errno = 0;
	return cond;
}

static TAP_UNUSED TAP_PRINTF(5, 6) int
tap_ok(int cond, const char *file, int line, int err, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	rc = tap_vok(cond, file, line, err, fmt, ap);
	va_end(ap);
	return rc;
}

static TAP_UNUSED TAP_PRINTF(6, 7) int
tap_is_int(intmax_t got, intmax_t want, const char *file, int line, int err,
    const char *fmt, ...)
{
	va_list	 ap;
	int	 rc;

	va_start(ap, fmt);
	rc = tap_vok(got == want, file, line, err, fmt, ap);
	va_end(ap);
	if (!rc) {
		diag("         got: %jd", got);
		diag("    expected: %jd", want);
	}
	return rc;
}

/* Prints p[0..n) as a C string literal, at most 200 bytes of it. */
static TAP_UNUSED void
tap_diag_mem(const char *label, const void *p, size_t n)
{
	const unsigned char	*s = p;
	char			 buf[1024];
	size_t			 i, o = 0, lim = n < 200 ? n : 200;

	if (p == NULL) {
		diag("%s: NULL", label);
		return;
	}
	for (i = 0; i < lim; i++) {
		if (s[i] == '"' || s[i] == '\\')
			o += (size_t)snprintf(buf + o, sizeof(buf) - o,
			    "\\%c", s[i]);
		else if (s[i] >= 0x20 && s[i] < 0x7f)
			buf[o++] = (char)s[i];
		else
			o += (size_t)snprintf(buf + o, sizeof(buf) - o,
			    "\\x%02x", s[i]);
	}
	buf[o] = '\0';
	diag("%s: \"%s\"%s (%zu bytes)", label, buf, n > lim ? "..." : "", n);
}

static TAP_UNUSED TAP_PRINTF(8, 9) int
tap_is_mem(const void *got, size_t gotlen, const void *want, size_t wantlen,
    const char *file, int line, int err, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc, same;

	if (got == NULL || want == NULL)
		same = got == want;
	else
		same = gotlen == wantlen &&
		    (gotlen == 0 || memcmp(got, want, gotlen) == 0);
	va_start(ap, fmt);
	rc = tap_vok(same, file, line, err, fmt, ap);
	va_end(ap);
	if (!rc) {
		tap_diag_mem("         got", got, gotlen);
		tap_diag_mem("    expected", want, wantlen);
	}
	return rc;
}

static TAP_UNUSED TAP_PRINTF(6, 7) int
tap_is_str(const char *got, const char *want, const char *file, int line,
    int err, const char *fmt, ...)
{
	va_list	 ap;
	int	 rc, same;

	if (got == NULL || want == NULL)
		same = got == want;
	else
		same = strcmp(got, want) == 0;
	va_start(ap, fmt);
	rc = tap_vok(same, file, line, err, fmt, ap);
	va_end(ap);
	if (!rc) {
		tap_diag_mem("         got", got, got ? strlen(got) : 0);
		tap_diag_mem("    expected", want, want ? strlen(want) : 0);
	}
	return rc;
}

/*
 * The checks are macros so that they can capture __FILE__ and __LINE__.
 * The comma operators make the checked values be computed before errno is
 * read, so "ok(write(fd, p, n) == n, ...)" reports write's errno. (The
 * scratch variables make the macros non-reentrant; the tests are not.)
 */
static TAP_UNUSED int		 tap_c_;
static TAP_UNUSED intmax_t	 tap_gi_, tap_wi_;
static TAP_UNUSED const char	*tap_gs_, *tap_ws_;
static TAP_UNUSED const void	*tap_gm_, *tap_wm_;
static TAP_UNUSED size_t	 tap_gn_, tap_wn_;

#define ok(cond, ...) \
	(tap_c_ = !!(cond), \
	 tap_ok(tap_c_, __FILE__, __LINE__, errno, __VA_ARGS__))
#define is_int(got, want, ...) \
	(tap_gi_ = (intmax_t)(got), tap_wi_ = (intmax_t)(want), \
	 tap_is_int(tap_gi_, tap_wi_, __FILE__, __LINE__, errno, __VA_ARGS__))
#define is_str(got, want, ...) \
	(tap_gs_ = (got), tap_ws_ = (want), \
	 tap_is_str(tap_gs_, tap_ws_, __FILE__, __LINE__, errno, __VA_ARGS__))
#define is_mem(got, gotlen, want, wantlen, ...) \
	(tap_gm_ = (got), tap_gn_ = (gotlen), \
	 tap_wm_ = (want), tap_wn_ = (wantlen), \
	 tap_is_mem(tap_gm_, tap_gn_, tap_wm_, tap_wn_, __FILE__, __LINE__, \
	    errno, __VA_ARGS__))

/*
 * A setup step the checks after it depend on (a temporary directory, a
 * store, the streams a test reads): must(cond, "fmt", ...) counts as no
 * check; when cond is false it prints file:line, the message and errno's
 * text as a '#' line and bails out, so that a broken setup stops the run at
 * once instead of surfacing later as a confusing mismatch. Like the
 * checks, it clears errno when it passes.
 */
static TAP_UNUSED TAP_PRINTF(4, 5) __attribute__((noreturn)) void
tap_must_fail(const char *file, int line, int err, const char *fmt, ...)
{
	va_list	 ap;
	char	 msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err != 0)
		diag("  Setup failed at %s:%d: %s (errno: %s)", file, line,
		    msg, strerror(err));
	else
		diag("  Setup failed at %s:%d: %s", file, line, msg);
	bail_out("setup failed at %s:%d: %s", file, line, msg);
}

#define must(cond, ...) \
	((cond) ? (void)(errno = 0) : \
	 tap_must_fail(__FILE__, __LINE__, errno, __VA_ARGS__))

/*
 * Seeds tap_rand() from DS_SEED, or from the clock and pid when it is
 * unset, and prints "# seed: N" so that a failing run can be replayed with
 * DS_SEED=N. done_testing() repeats the seed on stderr if anything failed.
 */
static TAP_UNUSED uint64_t
tap_seed(void)
{
	const char		*env = getenv("DS_SEED");
	char			*end;
	unsigned long long	 v;
	struct timespec		 ts;

	if (env != NULL && *env != '\0') {
		errno = 0;
		v = strtoull(env, &end, 10);
		if (errno != 0 || *end != '\0' || *env == '-')
			bail_out("DS_SEED is not a decimal number: %s", env);
		tap_seed_value = v;
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		tap_seed_value = ((uint64_t)ts.tv_sec * 1000000000u +
		    (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
	}
	tap_seeded = 1;
	tap_rng = tap_seed_value;
	note("seed: %" PRIu64, tap_seed_value);
	errno = 0;
	return tap_seed_value;
}

/*
 * splitmix64: fixed, so a seed replays the same run with any libc, which
 * rand() would not promise.
 */
static TAP_UNUSED uint64_t
tap_rand(void)
{
	uint64_t	 z;

	z = (tap_rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A uniform-enough integer in [0, n); n > 0. */
static TAP_UNUSED uint64_t
tap_rand_below(uint64_t n)
{

	return tap_rand() % n;
}

/*
 * Ends the run: prints the plan if none was given, reports a count that
 * does not match the plan, and returns the exit status for main (0 only
 * when every planned check ran and passed).
 */
static TAP_UNUSED int
done_testing(void)
{

	if (tap_planned < 0) {
		printf("1..%d\n", tap_run);
		fflush(stdout);
	} else if (tap_planned != tap_run)
		diag("Looks like you planned %d tests but ran %d.",
		    tap_planned, tap_run);
	if (tap_failed > 0) {
		diag("Looks like you failed %d test%s of %d.", tap_failed,
		    tap_failed == 1 ? "" : "s", tap_run);
		if (tap_seeded)
			diag("Replay with DS_SEED=%" PRIu64, tap_seed_value);
	}
	if (tap_failed > 0)
		return tap_failed > 254 ? 254 : tap_failed;
	return (tap_planned >= 0 && tap_planned != tap_run) ? 255 : 0;
}

#endif /* DS_TAP_H */
