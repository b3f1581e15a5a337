/*
 * parse_test.c: unit tests for fcgi-app/parse.c (offsets, integers,
 * timestamps, query strings, stream paths, header values).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fcgi-app/parse.h"
#include "t/tap.h"

#define ZEROS16	"0000000000000000"

static void
offset_ok(const char *s, enum ds_offset_kind want_kind, uint64_t want_pos)
{
	enum ds_offset_kind	 kind = DS_OFFSET_NOW;
	uint64_t		 pos = 42;

	if (!ok(ds_offset_parse(s, strlen(s), &kind, &pos) == 0,
	    "offset \"%s\" parses", s))
		return;
	is_int(kind, want_kind, "offset \"%s\" kind", s);
	if (want_kind == DS_OFFSET_AT)
		is_int(pos, want_pos, "offset \"%s\" position", s);
}

static void
offset_bad(const char *s, size_t len, const char *why)
{
	enum ds_offset_kind	 kind;
	uint64_t		 pos;

	ok(ds_offset_parse(s, len, &kind, &pos) == -1, "offset rejected: %s",
	    why);
}

static void
test_offsets(void)
{
	char	 buf[DS_OFFSET_LEN + 1];
	enum ds_offset_kind kind;
	uint64_t pos, v;
	int	 i, good;

	offset_ok("-1", DS_OFFSET_START, 0);
	offset_ok("now", DS_OFFSET_NOW, 0);
	offset_ok(ZEROS16 "_" ZEROS16, DS_OFFSET_AT, 0);
	offset_ok(ZEROS16 "_0000000000000123", DS_OFFSET_AT, 123);
	offset_ok(ZEROS16 "_9999999999999999", DS_OFFSET_AT,
	    9999999999999999ULL);

	offset_bad("", 0, "empty");
	offset_bad(NULL, 0, "NULL");
	offset_bad("-2", 2, "-2");
	offset_bad("-10", 3, "-10");
	offset_bad("-", 1, "lone minus");
	offset_bad("NOW", 3, "NOW is case-sensitive");
	offset_bad("now ", 4, "trailing space");
	offset_bad(" now", 4, "leading space");
	offset_bad("-1 ", 3, "-1 with trailing space");
	offset_bad("0,1", 3, "comma");
	offset_bad("0", 1, "bare 0");
	offset_bad("0000000000000001_" ZEROS16, DS_OFFSET_LEN,
	    "non-zero reserved part");
	offset_bad("1000000000000000_" ZEROS16, DS_OFFSET_LEN,
	    "non-zero reserved part (first digit)");
	offset_bad(ZEROS16 "-" ZEROS16, DS_OFFSET_LEN, "'-' separator");
	offset_bad(ZEROS16 ZEROS16 "0", DS_OFFSET_LEN, "no separator");
	offset_bad(ZEROS16 "_000000000000000", DS_OFFSET_LEN - 1,
	    "32 characters");
	offset_bad(ZEROS16 "_00000000000000000", DS_OFFSET_LEN + 1,
	    "34 characters");
	offset_bad("000000000000000_00000000000000000", DS_OFFSET_LEN,
	    "separator one place early");
	offset_bad(ZEROS16 "_000000000000000a", DS_OFFSET_LEN, "letter");
	offset_bad(ZEROS16 "_00000000 0000000", DS_OFFSET_LEN, "inner space");
	offset_bad(ZEROS16 "_+000000000000001", DS_OFFSET_LEN, "plus sign");
	offset_bad(ZEROS16 "_-000000000000001", DS_OFFSET_LEN, "minus sign");
	offset_bad(ZEROS16 ",0000000000000001", DS_OFFSET_LEN, "comma sep");
	offset_bad(ZEROS16 "_000000000000000\0", DS_OFFSET_LEN, "NUL byte");
	offset_bad("now", 2, "length is honoured (\"no\")");
	offset_bad("-1", 1, "length is honoured (\"-\")");
	ok(ds_offset_parse("nowhere", 3, &kind, &pos) == 0 &&
	    kind == DS_OFFSET_NOW, "length is honoured (\"now\" of \"nowhere\")");
	ok(ds_offset_parse("-1-1", 2, &kind, &pos) == 0 &&
	    kind == DS_OFFSET_START, "length is honoured (\"-1\" of \"-1-1\")");

	ds_offset_format(0, buf);
	is_str(buf, ZEROS16 "_" ZEROS16, "format 0");
	ds_offset_format(123, buf);
	is_str(buf, ZEROS16 "_0000000000000123", "format 123");
	ds_offset_format(9999999999999999ULL, buf);
	is_str(buf, ZEROS16 "_9999999999999999", "format 10^16-1");
	is_int(strlen(buf), DS_OFFSET_LEN, "formatted length is DS_OFFSET_LEN");

	/* Round trips, and lexicographic order matching numeric order. */
	good = 1;
	for (i = 0; i < 10000 && good; i++) {
		char	 prev[DS_OFFSET_LEN + 1];

		v = tap_rand_below(10000000000000000ULL);
		ds_offset_format(v, buf);
		good = ds_offset_parse(buf, strlen(buf), &kind, &pos) == 0 &&
		    kind == DS_OFFSET_AT && pos == v;
		if (good && v < 9999999999999999ULL) {
			ds_offset_format(v + 1, prev);
			good = strcmp(buf, prev) < 0;
		}
		if (!good)
			diag("position %" PRIu64, v);
	}
	ok(good, "10000 random offsets round-trip and sort");
}

static void
uint_ok(const char *s, uint64_t max, uint64_t want)
{
	uint64_t	 v = 7;

	if (ok(ds_parse_uint(s, strlen(s), max, &v) == 0, "uint \"%s\"", s))
		ok(v == want, "uint \"%s\" value %" PRIu64, s, want);
}

static void
uint_bad(const char *s, uint64_t max)
{
	uint64_t	 v = 7;

	ok(ds_parse_uint(s, strlen(s), max, &v) == -1 && v == 7,
	    "uint \"%s\" rejected (max %" PRIu64 ")", s, max);
}

static void
test_uint(void)
{
	uint64_t	 v;

	uint_ok("0", UINT64_MAX, 0);
	uint_ok("3600", UINT64_MAX, 3600);
	uint_ok("9007199254740991", DS_MAX_SAFE_INT, DS_MAX_SAFE_INT);
	uint_ok("18446744073709551615", UINT64_MAX, UINT64_MAX);
	uint_ok("0", 0, 0);
	uint_ok("5", 5, 5);

	uint_bad("", UINT64_MAX);
	uint_bad("00", UINT64_MAX);
	uint_bad("03600", UINT64_MAX);
	uint_bad("+3600", UINT64_MAX);
	uint_bad("-1", UINT64_MAX);
	uint_bad("-0", UINT64_MAX);
	uint_bad("3600.0", UINT64_MAX);
	uint_bad("60.5", UINT64_MAX);
	uint_bad("3.6e3", UINT64_MAX);
	uint_bad("1e3", UINT64_MAX);
	uint_bad(" 1", UINT64_MAX);
	uint_bad("1 ", UINT64_MAX);
	uint_bad("abc", UINT64_MAX);
	uint_bad("0x10", UINT64_MAX);
	uint_bad("1,000", UINT64_MAX);
	uint_bad("9007199254740992", DS_MAX_SAFE_INT);
	uint_bad("10000000000000000", DS_MAX_SAFE_INT);
	uint_bad("18446744073709551616", UINT64_MAX);
	uint_bad("99999999999999999999", UINT64_MAX);
	uint_bad("184467440737095516150", UINT64_MAX);
	uint_bad("1", 0);
	uint_bad("6", 5);
	ok(ds_parse_uint(NULL, 0, 1, &v) == -1, "uint NULL rejected");
	ok(ds_parse_uint("12x", 2, 100, &v) == 0 && v == 12,
	    "uint honours the length");
	ok(ds_parse_uint("1\0", 2, 100, &v) == -1, "uint rejects a NUL byte");
}

/* The reference value: glibc's timegm on the same broken-down time. */
static int64_t
ref_ms(int y, int mo, int d, int h, int mi, int s)
{
	struct tm	 tm;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	return (int64_t)timegm(&tm) * 1000;
}

static void
ts_ok(const char *s, int64_t want)
{
	int64_t	 ms = 0;

	if (ok(ds_parse_rfc3339(s, strlen(s), &ms) == 0, "rfc3339 \"%s\"", s))
		is_int(ms, want, "rfc3339 \"%s\" value", s);
}

static void
ts_bad(const char *s, const char *why)
{
	int64_t	 ms = 0;

	ok(ds_parse_rfc3339(s, strlen(s), &ms) == -1,
	    "rfc3339 \"%s\" rejected: %s", s, why);
}

static void
test_rfc3339(void)
{
	char	 buf[32], in[64];
	int64_t	 ms, v, lo, hi;
	int	 i, good, y, mo, d, h, mi, s, days;
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };

	ts_ok("1970-01-01T00:00:00Z", 0);
	ts_ok("1970-01-01T00:00:00.123Z", 123);
	ts_ok("1970-01-01T00:00:00.1Z", 100);
	ts_ok("1970-01-01T00:00:00.12Z", 120);
	ts_ok("1970-01-01T00:00:00.123456789Z", 123);
	ts_ok("1970-01-01T00:00:00.9999999999999999999999Z", 999);
	ts_ok("1970-01-01t00:00:00z", 0);
	ts_ok("1969-12-31T23:59:59.999Z", -1);
	ts_ok("2026-11-22T10:00:00Z", ref_ms(2026, 11, 22, 10, 0, 0));
	ts_ok("2026-11-22T10:00:00.123+02:00",
	    ref_ms(2026, 11, 22, 8, 0, 0) + 123);
	ts_ok("2026-11-22T10:00:00-05:30", ref_ms(2026, 11, 22, 15, 30, 0));
	ts_ok("2026-11-22T10:00:00+00:00", ref_ms(2026, 11, 22, 10, 0, 0));
	ts_ok("2026-11-22T10:00:00-00:00", ref_ms(2026, 11, 22, 10, 0, 0));
	ts_ok("2026-01-01T00:30:00+23:59", ref_ms(2025, 12, 31, 0, 31, 0));
	ts_ok("2000-02-29T12:00:00Z", ref_ms(2000, 2, 29, 12, 0, 0));
	ts_ok("2024-02-29T00:00:00Z", ref_ms(2024, 2, 29, 0, 0, 0));
	ts_ok("2026-04-30T23:59:59Z", ref_ms(2026, 4, 30, 23, 59, 59));
	ts_ok("2026-12-31T23:59:59Z", ref_ms(2026, 12, 31, 23, 59, 59));
	ts_ok("1998-12-31T23:59:60Z", ref_ms(1999, 1, 1, 0, 0, 0));
	ts_ok("0000-01-01T00:00:00Z", -62167219200000LL);
	ts_ok("9999-12-31T23:59:59.999Z", 253402300799999LL);
	ts_ok("1600-03-01T00:00:00Z", ref_ms(1600, 3, 1, 0, 0, 0));

	ts_bad("", "empty");
	ts_bad("not-a-timestamp", "garbage");
	ts_bad("1900-02-29T00:00:00Z", "1900 is not a leap year");
	ts_bad("2100-02-29T00:00:00Z", "2100 is not a leap year");
	ts_bad("2023-02-29T00:00:00Z", "2023 is not a leap year");
	ts_bad("2024-02-30T00:00:00Z", "no February 30");
	ts_bad("2026-04-31T00:00:00Z", "April has 30 days");
	ts_bad("2026-06-31T00:00:00Z", "June has 30 days");
	ts_bad("2026-01-32T00:00:00Z", "day 32");
	ts_bad("2026-01-00T00:00:00Z", "day 0");
	ts_bad("2026-00-01T00:00:00Z", "month 0");
	ts_bad("2026-13-01T00:00:00Z", "month 13");
	ts_bad("2026-01-01T24:00:00Z", "hour 24");
	ts_bad("2026-01-01T00:60:00Z", "minute 60");
	ts_bad("2026-01-01T00:00:61Z", "second 61");
	ts_bad("2026-11-22T10:00:00", "no zone");
	ts_bad("2026-11-22 10:00:00Z", "space for T");
	ts_bad("2026-11-22X10:00:00Z", "X for T");
	ts_bad("2026-11-22T10:00:00.Z", "empty fraction");
	ts_bad("2026-11-22T10:00:00,5Z", "comma fraction");
	ts_bad("2026-11-22T10:00:00+24:00", "offset hour 24");
	ts_bad("2026-11-22T10:00:00+02:60", "offset minute 60");
	ts_bad("2026-11-22T10:00:00+0200", "offset without colon");
	ts_bad("2026-11-22T10:00:00+02", "offset without minutes");
	ts_bad("2026-11-22T10:00:00+02:00x", "trailing byte after offset");
	ts_bad("2026-11-22T10:00:00+2:00", "one-digit offset hour");
	ts_bad("2026-11-22T10:00:00ZZ", "two zones");
	ts_bad("2026-11-22T10:00:00Z ", "trailing space");
	ts_bad(" 2026-11-22T10:00:00Z", "leading space");
	ts_bad("2026-1-22T10:00:00Z", "one-digit month");
	ts_bad("26-11-22T10:00:00Z", "two-digit year");
	ts_bad("+2026-11-22T10:00:00Z", "signed year");
	ts_bad("2026-11-22T10:00Z", "no seconds");
	ts_bad("2026-11-22", "date only");
	ts_bad("2026/11/22T10:00:00Z", "slashes");
	ts_bad("2026-11-22T10:00:0aZ", "letter in seconds");
	ok(ds_parse_rfc3339(NULL, 0, &ms) == -1, "rfc3339 NULL rejected");
	ok(ds_parse_rfc3339("1970-01-01T00:00:00Zjunk", 20, &ms) == 0 &&
	    ms == 0, "rfc3339 honours the length");

	ds_format_rfc3339(0, buf);
	is_str(buf, "1970-01-01T00:00:00.000Z", "format epoch");
	ds_format_rfc3339(-1, buf);
	is_str(buf, "1969-12-31T23:59:59.999Z", "format -1 ms");
	ds_format_rfc3339(ref_ms(2026, 11, 22, 10, 0, 0) + 123, buf);
	is_str(buf, "2026-11-22T10:00:00.123Z", "format 2026-11-22");
	ds_format_rfc3339(ref_ms(2000, 2, 29, 23, 59, 59) + 999, buf);
	is_str(buf, "2000-02-29T23:59:59.999Z", "format a leap day");
	ds_format_rfc3339(-62167219200000LL, buf);
	is_str(buf, "0000-01-01T00:00:00.000Z", "format year 0");
	ds_format_rfc3339(253402300799999LL, buf);
	is_str(buf, "9999-12-31T23:59:59.999Z", "format the end of 9999");
	ds_format_rfc3339(INT64_MAX, buf);
	is_str(buf, "9999-12-31T23:59:59.999Z", "INT64_MAX clamps");
	ds_format_rfc3339(INT64_MIN, buf);
	is_str(buf, "0000-01-01T00:00:00.000Z", "INT64_MIN clamps");
	ds_format_rfc3339(253402300800000LL, buf);
	is_str(buf, "9999-12-31T23:59:59.999Z", "one ms past 9999 clamps");

	/* Every day of years 0-9999 against timegm, via one date a day. */
	good = 1;
	for (y = 0; y <= 9999 && good; y++)
		for (mo = 1; mo <= 12 && good; mo++) {
			days = mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 &&
			    y % 100 != 0) || y % 400 == 0));
			for (d = 1; d <= days + 1 && good; d++) {
				snprintf(in, sizeof(in),
				    "%04d-%02d-%02dT12:00:00Z", y, mo, d);
				if (d > days) {
					good = ds_parse_rfc3339(in,
					    strlen(in), &ms) == -1;
				} else {
					v = ref_ms(y, mo, d, 12, 0, 0);
					good = ds_parse_rfc3339(in,
					    strlen(in), &ms) == 0 && ms == v;
					if (good) {
						ds_format_rfc3339(ms, buf);
						good = strncmp(buf, in, 19) ==
						    0;
					}
				}
				if (!good)
					diag("date %s", in);
			}
		}
	ok(good, "every date of years 0-9999 matches timegm, and the day "
	    "after each month's last is rejected");

	/* Random instants: format then parse is the identity. */
	lo = -62167219200000LL;
	hi = 253402300799999LL;
	good = 1;
	for (i = 0; i < 100000 && good; i++) {
		v = lo + (int64_t)tap_rand_below((uint64_t)(hi - lo) + 1);
		ds_format_rfc3339(v, buf);
		good = strlen(buf) == 24 &&
		    ds_parse_rfc3339(buf, strlen(buf), &ms) == 0 && ms == v;
		if (!good)
			diag("ms %" PRId64 " -> %s", v, buf);
	}
	ok(good, "100000 random instants round-trip through format/parse");

	/* Random instants with random offsets, against timegm. */
	good = 1;
	for (i = 0; i < 20000 && good; i++) {
		int	 oh, om, sign;

		y = 1 + (int)tap_rand_below(9998);
		mo = 1 + (int)tap_rand_below(12);
		d = 1 + (int)tap_rand_below(28);
		h = (int)tap_rand_below(24);
		mi = (int)tap_rand_below(60);
		s = (int)tap_rand_below(60);
		oh = (int)tap_rand_below(24);
		om = (int)tap_rand_below(60);
		sign = tap_rand_below(2) ? 1 : -1;
		snprintf(in, sizeof(in), "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d",
		    y, mo, d, h, mi, s, sign > 0 ? '+' : '-', oh, om);
		v = ref_ms(y, mo, d, h, mi, s) -
		    (int64_t)sign * (oh * 60 + om) * 60000;
		good = ds_parse_rfc3339(in, strlen(in), &ms) == 0 && ms == v;
		if (!good)
			diag("%s: got %" PRId64 " want %" PRId64, in, ms, v);
	}
	ok(good, "20000 random times with offsets match timegm");
}

/* Runs ds_query_get on a C string and checks the count and the value. */
static void
query_is(const char *qs, const char *key, int want, const char *wantval)
{
	char	 out[64];
	size_t	 n = 999;
	int	 rc;

	rc = ds_query_get(qs, strlen(qs), key, out, sizeof(out), &n);
	if (!is_int(rc, want, "query \"%s\" key \"%s\" gives %d", qs, key,
	    want) || want < 1)
		return;
	is_str(out, wantval, "query \"%s\" key \"%s\" value", qs, key);
	is_int(n, strlen(wantval), "query \"%s\" key \"%s\" length", qs, key);
}

static void
test_query(void)
{
	char	 out[8];
	size_t	 n;

	query_is("a=1&b=x%20y", "a", 1, "1");
	query_is("a=1&b=x%20y", "b", 1, "x y");
	query_is("a=1&b=x%20y", "c", 0, NULL);
	query_is("", "a", 0, NULL);
	query_is("q=a+b", "q", 1, "a b");
	query_is("q=a%2Bb", "q", 1, "a+b");
	query_is("q=x%26y%3Dz", "q", 1, "x&y=z");
	query_is("q=%e2%82%ac", "q", 1, "\xe2\x82\xac");
	query_is("a=b=c", "a", 1, "b=c");
	query_is("offset=1&offset=2", "offset", 2, "1");
	query_is("offset=1&live=sse&offset=2&offset=3", "offset", 3, "1");
	query_is("offset=&offset=2", "offset", 2, "");
	query_is("live", "live", 1, "");
	query_is("live=", "live", 1, "");
	query_is("&&a=1&", "a", 1, "1");
	query_is("&", "a", 0, NULL);
	query_is("=1", "a", 0, NULL);
	query_is("ab=1", "a", 0, NULL);
	query_is("a=1", "ab", 0, NULL);
	query_is("A=1", "a", 0, NULL);
	query_is("%6Fffset=5", "offset", 1, "5");
	query_is("my+key=5", "my key", 1, "5");
	query_is("b=%zz&a=1", "a", 1, "1");
	query_is("%zz=1&a=2", "a", 1, "2");
	query_is("offset=" ZEROS16 "_0000000000000005&live=long-poll",
	    "offset", 1, ZEROS16 "_0000000000000005");
	query_is("offset=" ZEROS16 "_0000000000000005&live=long-poll",
	    "live", 1, "long-poll");
	query_is("offset=-1&cursor=abc", "cursor", 1, "abc");
	query_is("offset=0%2C1", "offset", 1, "0,1");

	query_is("a=%zz", "a", -1, NULL);
	query_is("a=%2", "a", -1, NULL);
	query_is("a=%", "a", -1, NULL);
	query_is("a=%g0", "a", -1, NULL);
	query_is("a=%00", "a", -1, NULL);
	query_is("a=x%00y", "a", -1, NULL);
	query_is("a=1&a=%zz", "a", -1, NULL);
	query_is("a=%zz&a=1", "a", -1, NULL);
	ok(ds_query_get("a=x\0y", 5, "a", out, sizeof(out), &n) == -1,
	    "query: raw NUL in a value is malformed");

	ok(ds_query_get("a=1234567", 9, "a", out, sizeof(out), &n) == 1 &&
	    n == 7 && strcmp(out, "1234567") == 0,
	    "query: value of outsz-1 bytes fits");
	ok(ds_query_get("a=12345678", 10, "a", out, sizeof(out), &n) == -1 &&
	    out[0] == '\0', "query: value of outsz bytes does not fit");
	ok(ds_query_get("a=%41%42%43%44%45%46%47", 23, "a", out, sizeof(out),
	    &n) == 1 && n == 7, "query: fit is judged on the decoded length");
	ok(ds_query_get("a=1&b=2", 3, "b", out, sizeof(out), &n) == 0,
	    "query honours the length");
	ok(ds_query_get("a=12&b=2", 3, "a", out, sizeof(out), &n) == 1 &&
	    strcmp(out, "1") == 0, "query value stops at the length");
	ok(ds_query_get("a=1", 3, "", out, sizeof(out), &n) == -1,
	    "query: empty key is an error");
	ok(ds_query_get("a=1", 3, "a", out, 0, &n) == -1,
	    "query: zero-size output is an error when found");
	ok(ds_query_get(NULL, 0, "a", out, sizeof(out), &n) == 0,
	    "query: NULL empty query string has nothing");
}

static void
path_ok(const char *raw, const char *want)
{
	char	 out[64];
	size_t	 n = 0;

	if (ok(ds_path_decode(raw, strlen(raw), out, sizeof(out), &n) == 0,
	    "path \"%s\" accepted", raw)) {
		is_str(out, want, "path \"%s\" decodes", raw);
		is_int(n, strlen(want), "path \"%s\" length", raw);
	}
}

static void
path_bad(const char *raw, const char *why)
{
	char	 out[64];
	size_t	 n = 0;

	ok(ds_path_decode(raw, strlen(raw), out, sizeof(out), &n) == -1 &&
	    out[0] == '\0', "path \"%s\" rejected: %s", raw, why);
}

static void
test_path(void)
{
	char	 out[4];
	size_t	 n;

	path_ok("a", "a");
	path_ok("a/b/c", "a/b/c");
	path_ok("my-stream_1.log", "my-stream_1.log");
	path_ok("hello%20world", "hello world");
	path_ok("a+b", "a+b");
	path_ok("a%2Fb", "a/b");
	path_ok("caf%C3%a9", "caf\xc3\xa9");
	path_ok("...", "...");
	path_ok(".a/b.", ".a/b.");
	path_ok("a/..b/c..", "a/..b/c..");
	path_ok("%2e%2e%2e", "...");
	path_ok("a%3Fb%23c", "a?b#c");

	path_bad("", "empty");
	path_bad("/a", "leading slash");
	path_bad("a/", "trailing slash");
	path_bad("/", "only a slash");
	path_bad("a//b", "empty segment");
	path_bad(".", "dot");
	path_bad("..", "dot-dot");
	path_bad("a/.", "trailing dot segment");
	path_bad("a/./b", "inner dot segment");
	path_bad("a/../b", "inner dot-dot segment");
	path_bad("../a", "leading dot-dot segment");
	path_bad("a/..", "trailing dot-dot segment");
	path_bad("%2e%2e", "encoded dot-dot");
	path_bad("%2E%2e/a", "mixed-case encoded dot-dot");
	path_bad("a/%2e", "encoded dot");
	path_bad(".%2e", "half-encoded dot-dot");
	path_bad("a%2F%2Fb", "encoded empty segment");
	path_bad("%2Fa", "encoded leading slash");
	path_bad("a%2F", "encoded trailing slash");
	path_bad("a%00b", "encoded NUL");
	path_bad("%00", "only NUL");
	path_bad("a%0Ab", "encoded newline");
	path_bad("a%0d", "encoded CR");
	path_bad("a%7Fb", "encoded DEL");
	path_bad("a\tb", "raw tab");
	path_bad("a\x7f", "raw DEL");
	path_bad("a\\b", "backslash");
	path_bad("a%5Cb", "encoded backslash");
	path_bad("a%5c..%5cb", "encoded backslash traversal");
	path_bad("%zz", "bad escape");
	path_bad("a%2", "short escape");
	path_bad("a%", "lone percent");
	ok(ds_path_decode("a\0b", 3, out, sizeof(out), &n) == -1,
	    "path: raw NUL rejected");

	ok(ds_path_decode("abc", 3, out, sizeof(out), &n) == 0 && n == 3,
	    "path of outsz-1 bytes fits");
	ok(ds_path_decode("abcd", 4, out, sizeof(out), &n) == -1,
	    "path of outsz bytes does not fit");
	ok(ds_path_decode("%41%42%43", 9, out, sizeof(out), &n) == 0 &&
	    strcmp(out, "ABC") == 0, "path fit is judged after decoding");
	ok(ds_path_decode("ab/cd", 2, out, sizeof(out), &n) == 0 &&
	    strcmp(out, "ab") == 0, "path honours the length");
	ok(ds_path_decode("a", 1, out, 0, &n) == -1, "path: outsz 0");
	ok(ds_path_decode(NULL, 0, out, sizeof(out), &n) == -1, "path: NULL");
}

static void
test_headers(void)
{
	static const char *const yes[] = { "true", "TRUE", "True", "tRuE" };
	static const char *const no[] = { "false", "yes", "1", "", "true ",
	    " true", "truex", "tru", "t", "\"true\"", "tru\xc3\xa9" };
	size_t	 i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		ok(ds_header_is_true(yes[i]), "\"%s\" is true", yes[i]);
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		ok(!ds_header_is_true(no[i]), "\"%s\" is not true", no[i]);
	ok(!ds_header_is_true("true\n"), "\"true\\n\" is not true");
	ok(!ds_header_is_true(NULL), "NULL is not true");
}

/* Repeated headers: one value, a front server's joined list, or nginx's copies. */
static void
test_repeated(void)
{
	static const char *same[] = { "CONTENT_TYPE=text/plain",
	    "HTTP_CONTENT_TYPE=text/plain", "HTTP_CONTENT_TYPE=text/plain",
	    "HTTP_ACCEPT=a", "HTTP_ACCEPT=b", NULL };
	static const char *seq[] = { "HTTP_PRODUCER_SEQ=0", "HTTP_HOST=x",
	    "HTTP_PRODUCER_SEQ=5", NULL };
	static const char *ctype[] = { "HTTP_CONTENT_TYPE=text/plain",
	    "HTTP_CONTENT_TYPE=application/json", NULL };
	static const char *prefix[] = { "HTTP_PRODUCER_SEQUENCE=1",
	    "HTTP_PRODUCER_SEQ=1", "HTTP_PRODUCER_SEQ_X=2", NULL };
	static const char *noeq[] = { "HTTP_PRODUCER_ID", "HTTP_PRODUCER_ID=a",
	    NULL };
	static const char *cases[] = { "HTTP_STREAM_CLOSED=true",
	    "HTTP_STREAM_CLOSED=TRUE", "HTTP_PRODUCER_ID=a",
	    "HTTP_PRODUCER_ID=A", NULL };
	const char *c;

	is_int(ds_header_closed(NULL), 0, "closed: absent");
	is_int(ds_header_closed("TRUE"), 1, "closed: TRUE");
	is_int(ds_header_closed("yes"), 0, "closed: yes counts as absent");
	is_int(ds_header_closed("true, true"), 1, "closed: equal list");
	is_int(ds_header_closed("true,True ,\ttrue"), 1,
	    "closed: equal list, any case and spaces");
	is_int(ds_header_closed("true, false"), -1, "closed: conflicting");
	is_int(ds_header_closed("false, true"), -1, "closed: conflicting 2");
	is_int(ds_header_closed("true,"), -1, "closed: empty element");
	is_int(ds_header_closed("false, false"), 0, "closed: false list");
	ok(ds_env_conflict(NULL) == NULL, "env: NULL");
	ok(ds_env_conflict((char *const *)same) == NULL,
	    "env: equal copies and multi-valued headers are fine");
	c = ds_env_conflict((char *const *)seq);
	is_str(c ? c : "(none)", "Producer-Seq", "env: two Producer-Seq");
	c = ds_env_conflict((char *const *)ctype);
	is_str(c ? c : "(none)", "Content-Type", "env: two Content-Type");
	ok(ds_env_conflict((char *const *)prefix) == NULL, "env: names match whole");
	ok(ds_env_conflict((char *const *)noeq) == NULL, "env: entry without '='");
	c = ds_env_conflict((char *const *)cases);
	is_str(c ? c : "(none)", "Producer-Id",
	    "env: Stream-Closed compares in any case, Producer-Id exactly");
	ok(ds_host_valid("example.com"), "host: name");
	ok(ds_host_valid("127.0.0.1:4437"), "host: address and port");
	ok(ds_host_valid("[::1]:80"), "host: IPv6 literal");
	ok(!ds_host_valid(""), "host: empty");
	ok(!ds_host_valid(NULL), "host: NULL");
	ok(!ds_host_valid("a b"), "host: space");
	ok(!ds_host_valid("a/b"), "host: slash");
	ok(!ds_host_valid("a\r\nX: y"), "host: CRLF");
	ok(!ds_host_valid("a\"b"), "host: quote");
	{
		char big[300];

		memset(big, 'a', sizeof(big));
		big[255] = '\0';
		ok(ds_host_valid(big), "host: 255 bytes");
		big[255] = 'a';
		big[256] = '\0';
		ok(!ds_host_valid(big), "host: 256 bytes");
	}
}

static void
test_media(void)
{
	char	 out[32];

	ok(ds_media_type_eq("application/json", "application/json"),
	    "media: equal");
	ok(ds_media_type_eq("application/json",
	    "application/json; charset=utf-8"), "media: parameters ignored");
	ok(ds_media_type_eq("Application/JSON", "application/json"),
	    "media: case ignored");
	ok(ds_media_type_eq("  text/plain  ", "text/plain"),
	    "media: surrounding spaces ignored");
	ok(ds_media_type_eq("text/plain ;a=b", "TEXT/PLAIN"),
	    "media: space before ';' ignored");
	ok(ds_media_type_eq("\ttext/plain;charset=x", "text/plain;charset=y"),
	    "media: differing parameters ignored");
	ok(!ds_media_type_eq("text/plain", "text/html"), "media: differ");
	ok(!ds_media_type_eq("application/json", "application/jsonx"),
	    "media: prefix is not equal");
	ok(!ds_media_type_eq("application/json", "application/ json"),
	    "media: inner space matters");
	ok(!ds_media_type_eq("", ""), "media: empty equals nothing");
	ok(!ds_media_type_eq(" ; a=b", ";"), "media: blank equals nothing");
	ok(!ds_media_type_eq(NULL, "text/plain"), "media: NULL a");
	ok(!ds_media_type_eq("text/plain", NULL), "media: NULL b");

	ok(ds_media_type_norm("Application/JSON; charset=utf-8", out,
	    sizeof(out)) == 0 && strcmp(out, "application/json") == 0,
	    "norm: lower-cased, parameters dropped");
	ok(ds_media_type_norm(" text/plain ", out, sizeof(out)) == 0 &&
	    strcmp(out, "text/plain") == 0, "norm: spaces dropped");
	ok(ds_media_type_norm("application/vnd.api+json", out, sizeof(out)) ==
	    0 && strcmp(out, "application/vnd.api+json") == 0,
	    "norm: tchar punctuation kept");
	ok(ds_media_type_norm("text/plain;", out, sizeof(out)) == 0 &&
	    strcmp(out, "text/plain") == 0, "norm: empty parameters");
	ok(ds_media_type_norm("x-a!#$%&'*+-.^_`|~/y", out, sizeof(out)) == 0,
	    "norm: every tchar symbol");
	ok(ds_media_type_norm("text/plain", out, 11) == 0,
	    "norm: fits in len+1");
	ok(ds_media_type_norm("text/plain", out, 10) == -1 && out[0] == '\0',
	    "norm: does not fit in len");
	ok(ds_media_type_norm("", out, sizeof(out)) == -1, "norm: empty");
	ok(ds_media_type_norm("   ", out, sizeof(out)) == -1, "norm: blank");
	ok(ds_media_type_norm("text", out, sizeof(out)) == -1, "norm: no /");
	ok(ds_media_type_norm("/plain", out, sizeof(out)) == -1,
	    "norm: no type");
	ok(ds_media_type_norm("text/", out, sizeof(out)) == -1,
	    "norm: no subtype");
	ok(ds_media_type_norm("text /plain", out, sizeof(out)) == -1,
	    "norm: space before /");
	ok(ds_media_type_norm("text/ plain", out, sizeof(out)) == -1,
	    "norm: space after /");
	ok(ds_media_type_norm("text/pl ain", out, sizeof(out)) == -1,
	    "norm: inner space");
	ok(ds_media_type_norm("text/plain x", out, sizeof(out)) == -1,
	    "norm: trailing word");
	ok(ds_media_type_norm("a/b/c", out, sizeof(out)) == -1,
	    "norm: two slashes");
	ok(ds_media_type_norm("t\xc3\xa9xt/plain", out, sizeof(out)) == -1,
	    "norm: non-ASCII");
	ok(ds_media_type_norm("text/\"plain\"", out, sizeof(out)) == -1,
	    "norm: quote");
	ok(ds_media_type_norm("text/plain,text/html", out, sizeof(out)) == -1,
	    "norm: list");
	ok(ds_media_type_norm(NULL, out, sizeof(out)) == -1, "norm: NULL");
	ok(ds_media_type_norm("a/b", out, 0) == -1, "norm: outsz 0");
}

int
main(void)
{

	tap_seed();
	test_offsets();
	test_uint();
	test_rfc3339();
	test_query();
	test_path();
	test_headers();
	test_repeated();
	test_media();
	return done_testing();
}
