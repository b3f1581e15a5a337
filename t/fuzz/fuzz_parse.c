/*
 * fuzz_parse.c: libFuzzer target for every parser in fcgi-app/parse.h.
 *
 * Each parser gets the raw input (and a NUL-terminated copy for the ones
 * that take C strings). Beyond not crashing, whatever a parser accepts must
 * satisfy what its contract promises, checked here independently; a
 * violated promise aborts, which libFuzzer reports as a crash.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi-app/parse.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c) do {							\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c);	\
		abort();						\
	}								\
} while (0)

static void
fuzz_offset(const char *s, size_t len)
{
	enum ds_offset_kind	 kind;
	uint64_t		 pos;
	char			 buf[DS_OFFSET_LEN + 1];

	if (ds_offset_parse(s, len, &kind, &pos) != 0)
		return;
	switch (kind) {
	case DS_OFFSET_START:
		CHECK(len == 2 && memcmp(s, "-1", 2) == 0);
		break;
	case DS_OFFSET_NOW:
		CHECK(len == 3 && memcmp(s, "now", 3) == 0);
		break;
	case DS_OFFSET_AT:
		/* The fixed-width form has exactly one spelling. */
		ds_offset_format(pos, buf);
		CHECK(len == DS_OFFSET_LEN && memcmp(buf, s, len) == 0);
		break;
	default:
		CHECK(!"unknown kind");
	}
}

static void
fuzz_uint(const char *s, size_t len)
{
	uint64_t	 v, w;
	char		 buf[32];

	if (ds_parse_uint(s, len, UINT64_MAX, &v) == 0) {
		/* Only the canonical decimal spelling is accepted. */
		snprintf(buf, sizeof(buf), "%" PRIu64, v);
		CHECK(strlen(buf) == len && memcmp(buf, s, len) == 0);
		CHECK((ds_parse_uint(s, len, DS_MAX_SAFE_INT, &w) == 0) ==
		    (v <= DS_MAX_SAFE_INT));
	} else
		CHECK(ds_parse_uint(s, len, DS_MAX_SAFE_INT, &w) == -1);
}

static void
fuzz_rfc3339(const char *s, size_t len, const uint8_t *data, size_t size)
{
	/* The representable range: years 0000 to 9999. */
	const int64_t	 lo = -62167219200000LL, hi = 253402300799999LL;
	int64_t		 ms, back;
	char		 buf[32];

	if (ds_parse_rfc3339(s, len, &ms) == 0) {
		ds_format_rfc3339(ms, buf);
		CHECK(strlen(buf) == 24);
		CHECK(ds_parse_rfc3339(buf, 24, &back) == 0);
		/* An offset can push a year-0 or year-9999 time outside. */
		if (ms >= lo && ms <= hi)
			CHECK(back == ms);
		else
			CHECK(back == (ms < lo ? lo : hi));
	}

	/* Format an arbitrary instant taken from the input bytes. */
	if (size >= sizeof(ms)) {
		memcpy(&ms, data, sizeof(ms));
		ds_format_rfc3339(ms, buf);
		CHECK(strlen(buf) == 24);
		CHECK(ds_parse_rfc3339(buf, 24, &back) == 0);
		CHECK(back == (ms < lo ? lo : ms > hi ? hi : ms));
	}
}

static void
fuzz_query(const char *s, size_t len, const char *cstr)
{
	static const char *const keys[] = { "offset", "live", "cursor", "a" };
	char		 small[8], big[4096], key[64];
	size_t		 n, i, k;
	int		 rc, rc2;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		n = 12345;
		rc = ds_query_get(s, len, keys[i], big, sizeof(big), &n);
		CHECK(rc >= -1);
		if (rc >= 1) {
			CHECK(n < sizeof(big) && strlen(big) == n);
			/* A value that fits in small must give the same. */
			rc2 = ds_query_get(s, len, keys[i], small,
			    sizeof(small), &n);
			if (strlen(big) < sizeof(small))
				CHECK(rc2 == rc && strcmp(small, big) == 0);
			else
				CHECK(rc2 == -1);
		} else
			CHECK(big[0] == '\0');
	}

	/* A key taken from the input: the text before the first '='. */
	for (k = 0; cstr[k] != '\0' && cstr[k] != '=' && cstr[k] != '&' &&
	    k < sizeof(key) - 1; k++)
		key[k] = cstr[k];
	key[k] = '\0';
	rc = ds_query_get(s, len, key, big, sizeof(big), &n);
	if (k == 0)
		CHECK(rc == -1);
	else if (rc >= 1)
		CHECK(strlen(big) == n);
}

static void
fuzz_path(const char *s, size_t len)
{
	char	 out[512], *seg, *end;
	size_t	 n, i, seglen;

	if (ds_path_decode(s, len, out, sizeof(out), &n) != 0) {
		CHECK(out[0] == '\0');
		return;
	}
	CHECK(n > 0 && n < sizeof(out) && strlen(out) == n);
	for (i = 0; i < n; i++)
		CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f &&
		    out[i] != '\\');
	for (seg = out; ; seg = end + 1) {
		end = strchr(seg, '/');
		seglen = end != NULL ? (size_t)(end - seg) : strlen(seg);
		CHECK(seglen > 0);
		CHECK(!(seglen == 1 && seg[0] == '.'));
		CHECK(!(seglen == 2 && seg[0] == '.' && seg[1] == '.'));
		if (end == NULL)
			break;
	}
	/* Decoding never lengthens. */
	CHECK(n <= len);
}

static void
fuzz_headers(const char *cstr)
{
	char	 out[256], out2[256];

	if (ds_header_is_true(cstr))
		CHECK(strlen(cstr) == 4);

	if (ds_media_type_norm(cstr, out, sizeof(out)) == 0) {
		CHECK(strlen(out) > 2 && strchr(out, '/') != NULL);
		/* Normalising is idempotent and keeps equality. */
		CHECK(ds_media_type_norm(out, out2, sizeof(out2)) == 0);
		CHECK(strcmp(out, out2) == 0);
		CHECK(ds_media_type_eq(cstr, out));
		CHECK(ds_media_type_eq(out, cstr));
	} else
		CHECK(out[0] == '\0');
	/* Equality is symmetric, with itself too. */
	CHECK(ds_media_type_eq(cstr, "text/plain") ==
	    ds_media_type_eq("text/plain", cstr));
	(void)ds_media_type_eq(cstr, cstr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*s = (const char *)data;
	char		*cstr;

	/* The C-string parsers see the input up to its first NUL. */
	if ((cstr = malloc(size + 1)) == NULL)
		return 0;
	memcpy(cstr, data, size);
	cstr[size] = '\0';

	fuzz_offset(s, size);
	fuzz_uint(s, size);
	fuzz_rfc3339(s, size, data, size);
	fuzz_query(s, size, cstr);
	fuzz_path(s, size);
	fuzz_headers(cstr);

	free(cstr);
	return 0;
}
