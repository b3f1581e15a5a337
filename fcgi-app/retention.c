/*
 * retention.c: retention policies (--retention FILE) and the thread that
 * applies them (PROTOCOL 4: data older than a policy may be dropped while
 * the stream goes on; store.h says how a trim works).
 *
 * The file holds one policy a line: a stream path prefix, as in the URL
 * after /v1/stream/ ("*" for every stream), then one or both rules:
 *
 *	# prefix	rules
 *	logs/		max-bytes=64MiB
 *	tokens/		max-age=7d max-bytes=1GiB
 *	*		max-age=30d
 *
 * max-bytes takes a byte count with an optional K, M, G (powers of 1000)
 * or KiB, MiB, GiB suffix; max-age a number of ms, s, m, h or d. The
 * longest prefix that matches a stream's path wins; a stream that no
 * prefix matches keeps everything. '#' starts a comment.
 *
 * Every worker runs the thread; the one that holds an flock() on
 * DATA/retention.lock does the work (another takes over when it dies).
 * Each pass, every interval (--retention-interval, 1 s), it re-reads the file when it changed (a file
 * with errors is logged and the policies before it stay), punches out the
 * bytes the previous pass trimmed and trims each stream a policy matches.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fcgi-app/app.h"
#include "fcgi-app/log.h"
#include "fcgi-app/parse.h"

#define GRACE_MS	2000	/* a read in flight is done by then */

struct policy {
	char			*prefix;	/* "" for "*" */
	size_t			 len;
	struct ds_retention	 r;
};

struct policies {
	struct policy	*v;
	size_t		 n;
};

static void
policies_free(struct policies *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		free(p->v[i].prefix);
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

/* A number and a unit from units (name, factor), none: factor 1. */
static int
parse_scaled(const char *s, const char *const *names, const uint64_t *factors,
    uint64_t *out)
{
	const char *u = s;
	uint64_t n;
	int i;

	while (isdigit((unsigned char)*u))
		u++;
	if (u == s || ds_parse_uint(s, (size_t)(u - s), UINT64_MAX / 2, &n) ==
	    -1)
		return -1;
	for (i = 0; names[i]; i++)
		if (strcmp(u, names[i]) == 0) {
			if (n > UINT64_MAX / 2 / factors[i])
				return -1;
			*out = n * factors[i];
			return *out > 0 ? 0 : -1;
		}
	return -1;
}

static const char *const size_names[] = { "", "K", "M", "G", "KiB", "MiB",
    "GiB", NULL };
static const uint64_t size_factors[] = { 1, 1000, 1000000, 1000000000,
    1 << 10, 1 << 20, 1 << 30 };
static const char *const age_names[] = { "ms", "s", "m", "h", "d", NULL };
static const uint64_t age_factors[] = { 1, 1000, 60000, 3600000, 86400000 };

/*
 * Parses one line into p. Returns 0 (a policy), 1 (nothing: blank or a
 * comment) or -1 with the problem in err.
 */
static int
parse_line(char *line, struct policy *p, char *err, size_t errsz)
{
	char *save, *tok, *eq;
	uint64_t v;

	if ((tok = strchr(line, '#')) != NULL)
		*tok = '\0';
	if ((tok = strtok_r(line, " \t\r\n", &save)) == NULL)
		return 1;
	memset(p, 0, sizeof(*p));
	if (strcmp(tok, "*") == 0)
		tok[0] = '\0';
	if (strlen(tok) > DS_PATH_MAX || strchr(tok, '=')) {
		snprintf(err, errsz, "the line must start with a stream path "
		    "prefix or *");
		return -1;
	}
	if (tok[0] == '/') {
		snprintf(err, errsz, "prefix \"%.64s\" can match no stream: "
		    "a prefix is the path after /v1/stream/, with no / first",
		    tok);
		return -1;
	}
	if ((p->prefix = strdup(tok)) == NULL) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	p->len = strlen(p->prefix);
	while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
		if ((eq = strchr(tok, '=')) == NULL) {
			snprintf(err, errsz, "\"%s\" is no rule "
			    "(max-bytes=SIZE or max-age=DURATION)", tok);
			goto bad;
		}
		*eq++ = '\0';
		if (strcmp(tok, "max-bytes") == 0 && !p->r.max_bytes &&
		    parse_scaled(eq, size_names, size_factors, &v) == 0)
			p->r.max_bytes = v;
		else if (strcmp(tok, "max-age") == 0 && !p->r.max_age_ms &&
		    parse_scaled(eq, age_names, age_factors, &v) == 0)
			p->r.max_age_ms = (int64_t)v;
		else {
			snprintf(err, errsz, "bad rule \"%s=%s\" (max-bytes="
			    "SIZE[K|M|G|KiB|MiB|GiB] or max-age=N(ms|s|m|h|d), "
			    "each at most once, above 0)", tok, eq);
			goto bad;
		}
	}
	if (!p->r.max_bytes && !p->r.max_age_ms) {
		snprintf(err, errsz, "prefix \"%s\" has no rule", p->prefix);
		goto bad;
	}
	return 0;
bad:
	free(p->prefix);
	p->prefix = NULL;
	return -1;
}

/*
 * Reads the policy file into out. Each error is logged with its line;
 * returns their count (out is then empty) or 0.
 */
static int
load(const char *file, struct policies *out)
{
	char line[8192], err[256];
	struct policy p, *nv;
	unsigned lineno = 0;
	size_t i;
	FILE *f;
	int errors = 0, rc;

	out->v = NULL;
	out->n = 0;
	if ((f = fopen(file, "r")) == NULL) {
		ds_app_log("retention %s: %s", file, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			ds_app_log("retention %s:%u: line too long", file,
			    lineno);
			errors++;
			break;
		}
		if ((rc = parse_line(line, &p, err, sizeof(err))) == 1)
			continue;
		if (rc == -1) {
			ds_app_log("retention %s:%u: %s", file, lineno, err);
			errors++;
			continue;
		}
		for (i = 0; i < out->n; i++)
			if (strcmp(out->v[i].prefix, p.prefix) == 0)
				break;
		if (i < out->n) {
			ds_app_log("retention %s:%u: prefix \"%s\" given "
			    "twice", file, lineno, p.prefix);
			free(p.prefix);
			errors++;
			continue;
		}
		if ((nv = realloc(out->v, (out->n + 1) * sizeof(*nv))) ==
		    NULL) {
			free(p.prefix);
			errors++;
			break;
		}
		out->v = nv;
		out->v[out->n++] = p;
	}
	if (ferror(f)) {
		ds_app_log("retention %s: read error", file);
		errors++;
	}
	fclose(f);
	if (errors)
		policies_free(out);
	return errors;
}

int
ds_retention_check(const char *file)
{
	struct policies p;

	if (load(file, &p) != 0)
		return -1;
	policies_free(&p);
	return 0;
}

/* The policy for path: the longest matching prefix, or NULL. */
static const struct policy *
match(const struct policies *ps, const char *path)
{
	const struct policy *best = NULL;
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (strncmp(path, ps->v[i].prefix, ps->v[i].len) == 0 &&
		    (best == NULL || ps->v[i].len > best->len))
			best = &ps->v[i];
	return best;
}

struct work {
	char		**paths;
	const struct policy **pol;
	size_t		  n, cap;
	const struct policies *ps;
	const struct policy *only;	/* the policy being scanned */
};

static int
collect(const char *path, const struct ds_stream_info *i, void *arg)
{
	struct work *w = arg;
	const struct policy *p;
	void *np, *npol;

	/* A longer prefix's policy has it (scanned in its own turn). */
	if ((i->flags & DS_F_DELETED) || (p = match(w->ps, path)) != w->only)
		return 0;
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		np = realloc(w->paths, w->cap * sizeof(*w->paths));
		if (np)
			w->paths = np;
		npol = realloc(w->pol, w->cap * sizeof(*w->pol));
		if (npol)
			w->pol = npol;
		if (np == NULL || npol == NULL)
			return 1;	/* this pass does what it has */
	}
	if ((w->paths[w->n] = strdup(path)) == NULL)
		return 1;
	w->pol[w->n++] = p;
	return 0;
}

struct trimmer {
	struct ds_store	*store;
	char		*file;
	char		*lock;
	unsigned	 interval_ms;
	struct policies	 ps;
	struct stat	 seen;		/* the file as last loaded */
	int		 lockfd;
};

/* Re-reads the policy file when it changed. */
static void
reload(struct trimmer *t)
{
	struct policies np;
	struct stat st;

	if (stat(t->file, &st) == -1) {
		if (t->seen.st_ino != 0)
			ds_app_log("retention %s: %s (policies kept)",
			    t->file, strerror(errno));
		memset(&t->seen, 0, sizeof(t->seen));
		return;
	}
	if (st.st_ino == t->seen.st_ino && st.st_size == t->seen.st_size &&
	    st.st_mtim.tv_sec == t->seen.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == t->seen.st_mtim.tv_nsec)
		return;
	t->seen = st;
	if (load(t->file, &np) != 0) {
		ds_app_log("retention %s: not reloaded, the policies before "
		    "it stay", t->file);
		return;
	}
	policies_free(&t->ps);
	t->ps = np;
}

static void
pass(struct trimmer *t)
{
	struct work w;
	struct timespec ts;
	int64_t now;
	uint64_t first;
	enum ds_err e;
	size_t i;

	reload(t);
	memset(&w, 0, sizeof(w));
	w.ps = &t->ps;
	/* Only the streams under a policy's prefix are looked at. */
	for (i = 0; i < t->ps.n; i++) {
		w.only = &t->ps.v[i];
		if ((e = ds_store_foreach_prefix(t->store, w.only->prefix,
		    collect, &w)) != DS_OK) {
			ds_app_log("retention: listing streams: %s",
			    ds_strerror(e));
			goto out;
		}
	}
	for (i = 0; i < w.n; i++) {
		clock_gettime(CLOCK_REALTIME, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		/* What the last pass trimmed, no reader is on any more. */
		e = ds_store_punch(t->store, w.paths[i], now, GRACE_MS);
		if (e == DS_OK)
			e = ds_store_trim(t->store, w.paths[i], &w.pol[i]->r,
			    now, &first);
		if (e != DS_OK && e != DS_ENOTFOUND)
			ds_app_log("retention: %s: %s", w.paths[i],
			    ds_strerror(e));
	}
out:
	for (i = 0; i < w.n; i++)
		free(w.paths[i]);
	free(w.paths);
	free(w.pol);
}

static void *
run(void *arg)
{
	struct trimmer *t = arg;
	struct timespec d = { t->interval_ms / 1000,
	    (long)(t->interval_ms % 1000) * 1000000L };

	for (;;) {
		nanosleep(&d, NULL);
		if (t->lockfd == -1) {
			t->lockfd = open(t->lock, O_RDWR | O_CREAT | O_CLOEXEC,
			    0640);
			if (t->lockfd == -1) {
				ds_app_log("retention: open %s: %s", t->lock,
				    strerror(errno));
				continue;
			}
		}
		if (flock(t->lockfd, LOCK_EX | LOCK_NB) == -1)
			continue;	/* another worker trims */
		pass(t);
	}
	return NULL;
}

int
ds_retention_start(struct ds_store *s, const char *file,
    const char *data_dir, unsigned interval_ms)
{
	struct trimmer *t;
	pthread_attr_t attr;
	pthread_t tid;
	size_t n;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return -1;
	n = strlen(data_dir) + sizeof("/retention.lock");
	t->store = s;
	t->interval_ms = interval_ms;
	t->lockfd = -1;
	if ((t->file = strdup(file)) == NULL || (t->lock = malloc(n)) == NULL)
		goto fail;
	snprintf(t->lock, n, "%s/retention.lock", data_dir);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	errno = pthread_create(&tid, &attr, run, t);
	pthread_attr_destroy(&attr);
	if (errno == 0)
		return 0;
fail:
	free(t->file);
	free(t->lock);
	free(t);
	return -1;
}
