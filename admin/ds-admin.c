/*
 * ds-admin.c: ds-admin, the store's admin tool (as LMDB ships mdb_stat and
 * mdb_dump), over store/store.h only.
 *
 *   ds-admin --data DIR [--json] list
 *   ds-admin --data DIR [--json] stat PATH
 *   ds-admin --data DIR [--json] verify
 *   ds-admin --data DIR [--json] recover [--orphan-age S]
 *   ds-admin --data DIR [--json] delete PATH
 *   ds-admin --data DIR [--json] dump PATH [--from OFFSET]
 *   ds-admin --data DIR [--json] trim PATH --before OFFSET
 *
 * PATH is a stream path as the store keeps it: the URL path after
 * /v1/stream/, percent-decoded. Safe while the server runs: list, stat,
 * verify and dump only read (dump reads as of the stream's last access, so
 * it neither renews a sliding TTL nor expires the stream), delete is
 * the server's own DELETE and trim the retention thread's own trim. recover refuses while another process has the
 * store open: it cuts bytes past segments' rooms and zero-fills rooms, where
 * an append in flight may be writing.
 *
 * Exit status: 0 done; 1 verify found problems; 2 bad usage; 3 no such
 * stream (or soft-deleted, for delete and dump); 4 refused: the store is
 * in use; 5 the store failed (no store, I/O, corrupt record).
 */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "admin/admin.h"
#include "fcgi-app/json.h"
#include "fcgi-app/parse.h"

enum {
	EX_OK = 0, EX_PROBLEMS = 1, EX_USAGE = 2, EX_NOSTREAM = 3,
	EX_INUSE = 4, EX_STORE = 5
};

#define DUMP_CHUNK	(1u << 20)

static void
usage(void)
{
	fprintf(stderr,
	    "usage: ds-admin --data DIR [--json] COMMAND\n"
	    "  list                        every stream: path, content type, "
	    "size, tail, closed, TTL, forks\n"
	    "  stat PATH                   one stream's metadata\n"
	    "  verify                      check the store's invariants\n"
	    "  recover [--orphan-age S]    cut torn tails, remove orphan "
	    "segments (server stopped)\n"
	    "  delete PATH                 delete a stream (as HTTP DELETE)\n"
	    "  dump PATH [--from OFFSET]   the stream's bytes (JSON streams: "
	    "one message a line)\n"
	    "  trim PATH --before OFFSET   drop the data before OFFSET, "
	    "in whole appends (retention)\n"
	    "exit: 0 done, 1 verify found problems, 2 usage, 3 no such stream, "
	    "4 store in use, 5 store failed\n");
	exit(EX_USAGE);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes s as a JSON string. */
void
admin_json_str(FILE *o, const char *s)
{
	const unsigned char *p;

	putc('"', o);
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(o, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(o, "\\u%04x", *p);
		else
			putc(*p, o);
	}
	putc('"', o);
}

/* ---- list and stat ---------------------------------------------------- */

static int
collect(const char *path, const struct ds_stream_info *i, void *arg)
{
	struct admin_list *l = arg;
	struct admin_stream *ns;

	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		if ((ns = realloc(l->v, l->cap * sizeof(*ns))) == NULL) {
			l->oom = 1;
			return 1;
		}
		l->v = ns;
	}
	ns = &l->v[l->n++];
	memset(ns, 0, sizeof(*ns));
	if ((ns->path = strdup(path)) == NULL) {
		l->n--;
		l->oom = 1;
		return 1;
	}
	ns->info = *i;
	return 0;
}

/* Every stream, with its forks counted and its source named. */
static enum ds_err
load(struct ds_store *s, struct admin_list *l)
{
	enum ds_err e;
	size_t i, j;

	memset(l, 0, sizeof(*l));
	if ((e = ds_store_foreach(s, collect, l)) != DS_OK)
		return e;
	if (l->oom)
		return DS_ENOMEM;
	/* Few streams have forks: a quadratic pass is fine for a tool. */
	for (i = 0; i < l->n; i++) {
		if (l->v[i].info.src_id == 0)
			continue;
		for (j = 0; j < l->n; j++)
			if (l->v[j].info.id == l->v[i].info.src_id) {
				l->v[j].forks++;
				l->v[i].src = l->v[j].path;
			}
	}
	return DS_OK;
}

static void
list_free(struct admin_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i].path);
	free(l->v);
}

static int
cmd_list(struct ds_store *s, int json)
{
	struct admin_list l;
	enum ds_err e;
	size_t i;

	if ((e = load(s, &l)) != DS_OK) {
		fprintf(stderr, "ds-admin: list: %s\n", ds_strerror(e));
		return EX_STORE;
	}
	if (json)
		printf("{\"count\":%zu,\"streams\":[", l.n);
	else
		admin_print_header();
	for (i = 0; i < l.n; i++) {
		if (json) {
			if (i)
				putchar(',');
			admin_print_json(stdout, &l.v[i], now_ms());
		} else
			admin_print_row(&l.v[i], now_ms());
	}
	if (json)
		printf("]}\n");
	list_free(&l);
	return EX_OK;
}

static int
cmd_stat(struct ds_store *s, const char *path, int json)
{
	struct admin_list l;
	enum ds_err e;
	size_t i;
	int rc = EX_NOSTREAM;

	if ((e = load(s, &l)) != DS_OK) {
		fprintf(stderr, "ds-admin: stat: %s\n", ds_strerror(e));
		return EX_STORE;
	}
	for (i = 0; i < l.n; i++)
		if (strcmp(l.v[i].path, path) == 0)
			break;
	if (i == l.n)
		fprintf(stderr, "ds-admin: stat %s: no such stream\n", path);
	else {
		if (json) {
			admin_print_json(stdout, &l.v[i], now_ms());
			putchar('\n');
		} else
			admin_print_stat(&l.v[i], now_ms());
		rc = EX_OK;
	}
	list_free(&l);
	return rc;
}

/* ---- verify, recover, delete ------------------------------------------- */

static int
cmd_verify(struct ds_store *s, int json)
{
	unsigned n = 0, problems = 0;
	enum ds_err e;

	if ((e = ds_store_verify(s, ds_json_record_ok, &n, &problems)) !=
	    DS_OK) {
		fprintf(stderr, "ds-admin: verify: %s\n", ds_strerror(e));
		return EX_STORE;
	}
	if (json)
		printf("{\"streams\":%u,\"problems\":%u,\"ok\":%s}\n", n,
		    problems, problems ? "false" : "true");
	else
		printf("verify: %u streams, %u problems%s\n", n, problems,
		    problems ? " (logged above)" : "");
	return problems ? EX_PROBLEMS : EX_OK;
}

static int
cmd_recover(struct ds_store *s, unsigned orphan_age, int json)
{
	unsigned truncated = 0, removed = 0;
	enum ds_err e;

	if ((e = ds_store_recover(s, orphan_age, &truncated, &removed)) !=
	    DS_OK) {
		fprintf(stderr, "ds-admin: recover: %s\n", ds_strerror(e));
		return EX_STORE;
	}
	if (json)
		printf("{\"truncated\":%u,\"removed\":%u}\n", truncated,
		    removed);
	else
		printf("recover: %u torn tails truncated, %u orphan segments "
		    "removed\n", truncated, removed);
	return EX_OK;
}

static int
cmd_delete(struct ds_store *s, const char *path, int json)
{
	enum ds_err e = ds_store_delete(s, path);

	if (e != DS_OK) {
		fprintf(stderr, "ds-admin: delete %s: %s\n", path,
		    ds_strerror(e));
		return e == DS_ENOTFOUND || e == DS_EGONE ? EX_NOSTREAM :
		    EX_STORE;
	}
	if (json) {
		printf("{\"deleted\":");
		admin_json_str(stdout, path);
		printf("}\n");
	} else
		printf("deleted %s\n", path);
	return EX_OK;
}

/*
 * trim: a one-off retention trim up to the last index point at or below
 * the offset (the rules of store.h: whole appends only), then the punch
 * that frees the space, after the same grace the server gives readers
 * that looked before a stream's first trim.
 */
static int
cmd_trim(struct ds_store *s, const char *path, const char *before_arg,
    int json)
{
	struct ds_retention pol;
	struct ds_stream_info info;
	enum ds_offset_kind kind;
	char off[DS_OFFSET_LEN + 1];
	uint64_t before, first;
	enum ds_err e;

	if (ds_offset_parse(before_arg, strlen(before_arg), &kind, &before) ==
	    -1 || kind == DS_OFFSET_START) {
		fprintf(stderr, "ds-admin: trim: --before %s is not an offset "
		    "(now, or 16 digits _ 16 digits)\n", before_arg);
		return EX_USAGE;
	}
	if ((e = ds_store_stat(s, path, now_ms(), &info)) != DS_OK) {
		fprintf(stderr, "ds-admin: trim %s: %s\n", path,
		    ds_strerror(e));
		return e == DS_ENOTFOUND || e == DS_EGONE ? EX_NOSTREAM :
		    EX_STORE;
	}
	if (kind == DS_OFFSET_NOW)
		before = info.tail;
	else if (before > info.tail) {
		fprintf(stderr, "ds-admin: trim: --before %s is past the tail "
		    "of %s\n", before_arg, path);
		return EX_USAGE;
	}
	memset(&pol, 0, sizeof(pol));
	pol.before = before;
	/* (A fork's inherited data is its source's to trim.) */
	if ((e = ds_store_trim(s, path, &pol, now_ms(), &first)) == DS_OK &&
	    first > info.first) {
		nanosleep(&(struct timespec){ 2, 0 }, NULL);
		e = ds_store_punch(s, path, now_ms(), 2000);
	}
	if (e == DS_OK)
		e = ds_store_stat(s, path, now_ms(), &info);
	if (e != DS_OK) {
		fprintf(stderr, "ds-admin: trim %s: %s\n", path,
		    ds_strerror(e));
		return EX_STORE;
	}
	ds_offset_format(info.first, off);
	if (json) {
		printf("{\"path\":");
		admin_json_str(stdout, path);
		printf(",\"earliest_offset\":\"%s\"}\n", off);
	} else
		printf("trimmed %s: earliest offset %s\n", path, off);
	return EX_OK;
}

/* ---- dump ------------------------------------------------------------- */

/*
 * Writes one chunk: bytes as they are, or in JSON base64; a message
 * stream's records (each ends in '\n') one a line, or as array elements.
 */
static int
dump_chunk(const struct ds_stream_info *i, const char *data, size_t len,
    int json, int *first)
{
	char *b64;
	size_t n, k, start;

	if (!json)
		return fwrite(data, 1, len, stdout) == len ? 0 : -1;
	if (i->flags & DS_F_MSG) {
		for (start = 0, k = 0; k < len; k++) {
			if (data[k] != '\n')
				continue;
			printf("%s%.*s", *first ? "" : ",", (int)(k - start),
			    data + start);
			*first = 0;
			start = k + 1;
		}
		return 0;
	}
	n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	if ((b64 = malloc(n)) == NULL)
		return -1;
	sodium_bin2base64(b64, n, (const unsigned char *)data, len,
	    sodium_base64_VARIANT_ORIGINAL);
	fputs(b64, stdout);
	free(b64);
	return 0;
}

static int
cmd_dump(struct ds_store *s, const char *path, const char *from_arg,
    int json)
{
	struct admin_list l;
	struct ds_stream_info info;
	enum ds_offset_kind kind;
	char off[DS_OFFSET_LEN + 1], *data = NULL;
	uint64_t from = 0, pos;
	int64_t as_of;
	size_t i, len;
	enum ds_err e;
	int first = 1, rc = EX_OK, b64 = 0;

	if (from_arg) {
		if (ds_offset_parse(from_arg, strlen(from_arg), &kind, &from) ==
		    -1) {
			fprintf(stderr, "ds-admin: dump: --from %s is not an "
			    "offset (-1, now, or 16 digits _ 16 digits)\n",
			    from_arg);
			return EX_USAGE;
		}
		if (kind == DS_OFFSET_START)
			from = 0;
		else if (kind == DS_OFFSET_NOW)
			from = DS_POS_NOW;
	}
	if ((e = load(s, &l)) != DS_OK) {
		fprintf(stderr, "ds-admin: dump: %s\n", ds_strerror(e));
		return EX_STORE;
	}
	for (i = 0; i < l.n && strcmp(l.v[i].path, path) != 0; i++)
		;
	if (i == l.n || (l.v[i].info.flags & DS_F_DELETED)) {
		fprintf(stderr, "ds-admin: dump %s: %s\n", path, i == l.n ?
		    "no such stream" : "the stream is deleted (kept for its "
		    "forks)");
		list_free(&l);
		return EX_NOSTREAM;
	}
	/* As of its last access: no TTL renewed, nothing expired. */
	as_of = l.v[i].info.access_ms;
	list_free(&l);
	pos = from;
	for (;;) {
		e = ds_store_read(s, path, pos, DUMP_CHUNK, as_of, &info,
		    &data, &len);
		if (e != DS_OK)
			break;
		if (pos == DS_POS_NOW)
			pos = from = info.tail;
		if (json && pos == from) {
			b64 = !(info.flags & DS_F_MSG);
			printf("{\"path\":");
			admin_json_str(stdout, path);
			ds_offset_format(from, off);
			printf(",\"from\":\"%s\",\"content_type\":", off);
			admin_json_str(stdout, info.ctype);
			printf(b64 ? ",\"encoding\":\"base64\",\"data\":\"" :
			    ",\"messages\":[");
		}
		/* base64 of a whole stream: one chunk, or padding inside. */
		if (len > 0 && dump_chunk(&info, data, len, json, &first) ==
		    -1) {
			free(data);
			e = DS_EIO;
			break;
		}
		free(data);
		data = NULL;
		pos += len;
		if (len == 0 || pos >= info.tail || (b64 && json))
			break;
	}
	if (e != DS_OK) {
		fprintf(stderr, "ds-admin: dump %s: %s\n", path,
		    ds_strerror(e));
		return e == DS_ENOTFOUND || e == DS_EGONE ? EX_NOSTREAM :
		    e == DS_EOFFSET ? EX_USAGE : EX_STORE;
	}
	if (json) {
		ds_offset_format(pos, off);
		printf(b64 ? "\",\"next\":\"%s\",\"complete\":%s}\n" :
		    "],\"next\":\"%s\",\"complete\":%s}\n", off,
		    pos >= info.tail ? "true" : "false");
	}
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "ds-admin: dump: %s\n", strerror(errno));
		rc = EX_STORE;
	}
	return rc;
}

/* ---- main ------------------------------------------------------------- */

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "from", required_argument, NULL, 'f' },
		{ "before", required_argument, NULL, 'b' },
		{ "orphan-age", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct ds_store_cfg cfg;
	struct ds_store *s;
	struct stat st;
	const char *dir = NULL, *from = NULL, *before = NULL, *cmd;
	const char *path = NULL;
	char meta[4096];
	unsigned long age = 60;
	char *end;
	long pid;
	enum ds_err e;
	int ch, json = 0, nargs, rc;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			dir = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'f':
			from = optarg;
			break;
		case 'b':
			before = optarg;
			break;
		case 'o':
			errno = 0;
			age = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg ||
			    age > 86400UL * 365) {
				fprintf(stderr, "ds-admin: --orphan-age must "
				    "be seconds from 0 to 31536000\n");
				return EX_USAGE;
			}
			break;
		default:
			usage();
		}
	}
	if (dir == NULL || optind >= argc)
		usage();
	cmd = argv[optind];
	nargs = argc - optind - 1;
	if (strcmp(cmd, "stat") == 0 || strcmp(cmd, "delete") == 0 ||
	    strcmp(cmd, "dump") == 0 || strcmp(cmd, "trim") == 0) {
		if (nargs != 1)
			usage();
		path = argv[optind + 1];
		if (*path == '\0' || strlen(path) > DS_PATH_MAX) {
			fprintf(stderr, "ds-admin: a stream path has 1 to %d "
			    "bytes\n", DS_PATH_MAX);
			return EX_USAGE;
		}
	} else if (strcmp(cmd, "list") == 0 || strcmp(cmd, "verify") == 0 ||
	    strcmp(cmd, "recover") == 0) {
		if (nargs != 0)
			usage();
	} else {
		fprintf(stderr, "ds-admin: unknown command %s\n", cmd);
		usage();
	}
	if (from && strcmp(cmd, "dump") != 0) {
		fprintf(stderr, "ds-admin: --from goes with dump only\n");
		return EX_USAGE;
	}
	if ((before != NULL) != (strcmp(cmd, "trim") == 0)) {
		fprintf(stderr, "ds-admin: trim takes --before OFFSET, and "
		    "only trim does\n");
		return EX_USAGE;
	}

	/* Never make a store: only look at one that is there. */
	if (snprintf(meta, sizeof(meta), "%s/meta/data.mdb", dir) >=
	    (int)sizeof(meta) || stat(meta, &st) == -1) {
		fprintf(stderr, "ds-admin: no store in %s (%s missing)\n", dir,
		    meta);
		return EX_STORE;
	}
	if (strcmp(cmd, "recover") == 0) {
		if ((e = ds_store_in_use(dir, &pid)) != DS_OK) {
			fprintf(stderr, "ds-admin: %s: %s\n", dir,
			    ds_strerror(e));
			return EX_STORE;
		}
		if (pid != 0) {
			fprintf(stderr, "ds-admin: recover: the store in %s is "
			    "open in process %ld (a running server?); stop it "
			    "first: recovery cuts and zero-fills segments "
			    "where an append in flight may be writing\n",
			    dir, pid);
			return EX_INUSE;
		}
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.dir = dir;
	if ((e = ds_store_open(&cfg, &s)) != DS_OK) {
		fprintf(stderr, "ds-admin: cannot open the store in %s: %s\n",
		    dir, ds_strerror(e));
		return EX_STORE;
	}
	if (strcmp(cmd, "list") == 0)
		rc = cmd_list(s, json);
	else if (strcmp(cmd, "stat") == 0)
		rc = cmd_stat(s, path, json);
	else if (strcmp(cmd, "verify") == 0)
		rc = cmd_verify(s, json);
	else if (strcmp(cmd, "recover") == 0)
		rc = cmd_recover(s, (unsigned)age, json);
	else if (strcmp(cmd, "delete") == 0)
		rc = cmd_delete(s, path, json);
	else if (strcmp(cmd, "trim") == 0)
		rc = cmd_trim(s, path, before, json);
	else
		rc = cmd_dump(s, path, from, json);
	ds_store_close(s);
	return rc;
}
