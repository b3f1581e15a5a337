/*
 * print.c: how ds-admin shows a stream (admin.h). The table is
 * tab-separated, one stream a line under a header, for cut and awk; the
 * JSON has one object per stream with the same facts.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "admin/admin.h"
#include "fcgi-app/parse.h"

/* The stream's expiry as the server would judge it now. */
static int
expired(const struct ds_stream_info *i, int64_t now)
{
	if ((i->flags & DS_F_TTL) &&
	    now >= i->access_ms + (int64_t)i->ttl_s * 1000)
		return 1;
	return (i->flags & DS_F_EXPIRES) && now >= i->expires_ms;
}

static const char *
state(const struct ds_stream_info *i, int64_t now)
{
	if (i->flags & DS_F_DELETED)
		return "deleted";
	if (expired(i, now))
		return "expired";
	return i->flags & DS_F_CLOSED ? "closed" : "open";
}

/* "ttl=60s", "expires=2026-...", or "-". */
static void
expiry(const struct ds_stream_info *i, char *buf, size_t sz)
{
	char ts[32];

	if (i->flags & DS_F_TTL)
		snprintf(buf, sz, "ttl=%" PRIu64 "s", i->ttl_s);
	else if (i->flags & DS_F_EXPIRES) {
		ds_format_rfc3339(i->expires_ms, ts);
		snprintf(buf, sz, "expires=%s", ts);
	} else
		snprintf(buf, sz, "-");
}

void
admin_print_header(void)
{
	printf("PATH\tCONTENT-TYPE\tSIZE\tTAIL\tSTATE\tEXPIRY\tFORKS\t"
	    "FORKED-FROM\n");
}

void
admin_print_row(const struct admin_stream *s, int64_t now)
{
	char off[DS_OFFSET_LEN + 1], exp[64];

	ds_offset_format(s->info.tail, off);
	expiry(&s->info, exp, sizeof(exp));
	printf("%s\t%s\t%" PRIu64 "\t%s\t%s\t%s\t%u\t%s\n", s->path,
	    s->info.ctype, s->info.tail, off, state(&s->info, now), exp,
	    s->forks, s->src ? s->src : (s->info.src_id ? "?" : "-"));
}

void
admin_print_stat(const struct admin_stream *s, int64_t now)
{
	const struct ds_stream_info *i = &s->info;
	char off[DS_OFFSET_LEN + 1], exp[64], ts[32];

	ds_offset_format(i->tail, off);
	expiry(i, exp, sizeof(exp));
	ds_format_rfc3339(i->access_ms, ts);
	printf("path:          %s\n", s->path);
	printf("id:            %016" PRIx64 "\n", i->id);
	printf("content-type:  %s%s\n", i->ctype,
	    i->flags & DS_F_MSG ? " (JSON messages)" : "");
	printf("size:          %" PRIu64 " bytes (%" PRIu64 " in its own "
	    "segment)\n", i->tail, i->tail - i->base);
	printf("tail:          %s\n", off);
	if (i->first > 0) {
		ds_offset_format(i->first, off);
		printf("earliest:      %s (retention trimmed what is "
		    "before)\n", off);
	}
	printf("state:         %s\n", state(i, now));
	printf("expiry:        %s\n", exp);
	printf("last access:   %s\n", ts);
	printf("forks:         %u\n", s->forks);
	if (i->src_id) {
		ds_offset_format(i->base, off);
		printf("forked from:   %s at %s\n", s->src ? s->src : "?",
		    off);
	}
}

void
admin_print_json(FILE *o, const struct admin_stream *s, int64_t now)
{
	const struct ds_stream_info *i = &s->info;
	char off[DS_OFFSET_LEN + 1], ts[32];

	fprintf(o, "{\"path\":");
	admin_json_str(o, s->path);
	fprintf(o, ",\"id\":\"%016" PRIx64 "\",\"content_type\":", i->id);
	admin_json_str(o, i->ctype);
	ds_offset_format(i->tail, off);
	fprintf(o, ",\"json\":%s,\"size\":%" PRIu64 ",\"own_bytes\":%" PRIu64
	    ",\"tail\":\"%s\",\"state\":\"%s\",\"closed\":%s,\"deleted\":%s",
	    i->flags & DS_F_MSG ? "true" : "false", i->tail,
	    i->tail - i->base, off, state(i, now),
	    i->flags & DS_F_CLOSED ? "true" : "false",
	    i->flags & DS_F_DELETED ? "true" : "false");
	ds_offset_format(i->first, off);
	fprintf(o, ",\"earliest_offset\":\"%s\"", off);
	if (i->flags & DS_F_TTL)
		fprintf(o, ",\"ttl_s\":%" PRIu64, i->ttl_s);
	else
		fprintf(o, ",\"ttl_s\":null");
	if (i->flags & DS_F_EXPIRES) {
		ds_format_rfc3339(i->expires_ms, ts);
		fprintf(o, ",\"expires_at\":\"%s\"", ts);
	} else
		fprintf(o, ",\"expires_at\":null");
	ds_format_rfc3339(i->access_ms, ts);
	fprintf(o, ",\"access\":\"%s\",\"forks\":%u,\"forked_from\":", ts,
	    s->forks);
	if (i->src_id && s->src)
		admin_json_str(o, s->src);
	else
		fprintf(o, "null");
	ds_offset_format(i->base, off);
	fprintf(o, ",\"fork_offset\":%s%s%s}", i->src_id ? "\"" : "",
	    i->src_id ? off : "null", i->src_id ? "\"" : "");
}
