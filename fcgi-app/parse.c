/*
 * parse.c: the pure parsers declared in parse.h.
 *
 * Nothing here allocates, keeps state between calls or reads outside the
 * (buffer, length) it is given, so every function is thread-safe and may be
 * fed hostile bytes; t/fuzz/fuzz_parse.c holds it to that. Character classes
 * are tested by hand rather than with <ctype.h> so that the locale can never
 * change what a header or a path means.
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define OFFSET_PART	16			/* digits on each side of '_' */
#define OFFSET_POS_MAX	9999999999999999ULL	/* largest 16-digit position */

#define MS_PER_DAY	86400000LL

static int
is_digit(int c)
{

	return c >= '0' && c <= '9';
}

static int
is_alnum(int c)
{

	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c);
}

static int
ascii_lower(int c)
{

	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/* Optional whitespace as RFC 7230 3.2.3 defines it: SP and HTAB only. */
static int
is_ows(int c)
{

	return c == ' ' || c == '\t';
}

/* RFC 7230 3.2.6 tchar: the characters a media type token may hold. */
static int
is_tchar(int c)
{

	if (is_alnum(c))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
hex_value(int c)
{

	if (is_digit(c))
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * ASCII-only case-insensitive comparison of two byte spans of equal length.
 * Returns nonzero when they match.
 */
static int
span_caseeq(const char *a, const char *b, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (ascii_lower((unsigned char)a[i]) !=
		    ascii_lower((unsigned char)b[i]))
			return 0;
	return 1;
}

int
ds_offset_parse(const char *s, size_t len, enum ds_offset_kind *kind,
    uint64_t *pos)
{
	uint64_t	 v = 0;
	size_t		 i;

	if (s == NULL)
		return -1;
	if (len == 2 && s[0] == '-' && s[1] == '1') {
		*kind = DS_OFFSET_START;
		*pos = 0;
		return 0;
	}
	if (len == 3 && memcmp(s, "now", 3) == 0) {
		*kind = DS_OFFSET_NOW;
		*pos = 0;
		return 0;
	}
	if (len != DS_OFFSET_LEN || s[OFFSET_PART] != '_')
		return -1;
	/* The first part is reserved and must stay zero until it means something. */
	for (i = 0; i < OFFSET_PART; i++)
		if (s[i] != '0')
			return -1;
	for (i = OFFSET_PART + 1; i < DS_OFFSET_LEN; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	/* Sixteen digits cannot reach 2^63; the check guards a wider format. */
	if (v > (uint64_t)INT64_MAX)
		return -1;
	*kind = DS_OFFSET_AT;
	*pos = v;
	return 0;
}

/*
 * Writes pos as the zero-padded second part of an offset. Offsets compare
 * lexicographically (PROTOCOL 8), so a position needing a seventeenth digit
 * would sort before smaller ones; no store reaches 10^16 bytes, and handing
 * out a wrong offset silently would be worse than stopping, hence abort().
 */
void
ds_offset_format(uint64_t pos, char out[DS_OFFSET_LEN + 1])
{
	size_t	 i;

	if (pos > OFFSET_POS_MAX)
		abort();
	memset(out, '0', OFFSET_PART);
	out[OFFSET_PART] = '_';
	for (i = DS_OFFSET_LEN; i > OFFSET_PART + 1; i--) {
		out[i - 1] = (char)('0' + pos % 10);
		pos /= 10;
	}
	out[DS_OFFSET_LEN] = '\0';
}

int
ds_parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t	 v = 0, d;
	size_t		 i;

	if (s == NULL || len == 0)
		return -1;
	/* "0" alone is fine; "03600" is not (PROTOCOL 5.1). */
	if (s[0] == '0' && len > 1)
		return -1;
	for (i = 0; i < len; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Reads exactly n decimal digits at s into *v. Returns 0, or -1 if any of
 * them is not a digit. The caller has checked that n bytes are there.
 */
static int
fixed_digits(const char *s, size_t n, int *v)
{
	size_t	 i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

static int
is_leap(int y)
{

	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
days_in_month(int y, int m)
{
	static const int	 mdays[12] =
	    { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return (m == 2 && is_leap(y)) ? 29 : mdays[m - 1];
}

/*
 * Day numbers count from 1 March of year -400 in the proleptic Gregorian
 * calendar. Starting the year in March puts the leap day last, so the
 * month table needs no leap case; starting 400 years early (one full
 * cycle of 146097 days) keeps every count non-negative for years 0-9999.
 */
#define CYCLE_DAYS	146097
#define EPOCH_DAY	865565		/* day number of 1970-01-01 */

/* Days before the first of each month, in a year that begins on 1 March. */
static const int	 march_before[12] =
    { 0, 31, 61, 92, 122, 153, 184, 214, 245, 275, 306, 337 };

/* Days from 1970-01-01 to y-m-d; y in 0..9999, m and d already checked. */
static int64_t
days_from_civil(int y, int m, int d)
{
	int64_t	 yy;
	int	 mi;

	/* January and February belong to the March-year before. */
	yy = (int64_t)y + 400 - (m <= 2);
	mi = m >= 3 ? m - 3 : m + 9;
	return yy * 365 + yy / 4 - yy / 100 + yy / 400 +
	    march_before[mi] + d - 1 - EPOCH_DAY;
}

/* The inverse of days_from_civil, for days within years 0..9999. */
static void
civil_from_days(int64_t days, int *y, int *m, int *d)
{
	int64_t	 z, yy, n;
	int	 mi;

	z = days + EPOCH_DAY;
	yy = 400 * (z / CYCLE_DAYS);
	z %= CYCLE_DAYS;
	/* Centuries hold 36524 days but the fourth one ends on a leap day. */
	n = z / 36524;
	if (n == 4)
		n = 3;
	yy += 100 * n;
	z -= n * 36524;
	n = z / 1461;
	yy += 4 * n;
	z -= n * 1461;
	/* Likewise the fourth year of a four-year run holds 29 February. */
	n = z / 365;
	if (n == 4)
		n = 3;
	yy += n;
	z -= n * 365;
	for (mi = 11; march_before[mi] > z; mi--)
		continue;
	*d = (int)(z - march_before[mi]) + 1;
	*m = mi < 10 ? mi + 3 : mi - 9;
	*y = (int)(yy - 400 + (*m <= 2));
}

/*
 * Parses an RFC 3339 section 5.6 date-time for Stream-Expires-At
 * (PROTOCOL 5.1). A leap second (":60") is accepted as the grammar allows
 * and, POSIX time having no leap seconds, counts as the first second of
 * the next minute. Returns 0 and sets *ms, or -1.
 */
int
ds_parse_rfc3339(const char *s, size_t len, int64_t *ms)
{
	int	 y, mo, d, h, mi, sec, oh, om, frac = 0, off = 0;
	size_t	 i, start, nd;

	/* The shortest form is "YYYY-MM-DDTHH:MM:SSZ". */
	if (s == NULL || len < 20)
		return -1;
	if (fixed_digits(s, 4, &y) == -1 || s[4] != '-' ||
	    fixed_digits(s + 5, 2, &mo) == -1 || s[7] != '-' ||
	    fixed_digits(s + 8, 2, &d) == -1 ||
	    (s[10] != 'T' && s[10] != 't') ||
	    fixed_digits(s + 11, 2, &h) == -1 || s[13] != ':' ||
	    fixed_digits(s + 14, 2, &mi) == -1 || s[16] != ':' ||
	    fixed_digits(s + 17, 2, &sec) == -1)
		return -1;
	i = 19;

	if (s[i] == '.') {
		start = ++i;
		while (i < len && is_digit((unsigned char)s[i])) {
			if (i - start < 3)
				frac = frac * 10 + (s[i] - '0');
			i++;
		}
		if (i == start)
			return -1;
		/* ".5" is 500 ms, ".05" is 50 ms. */
		for (nd = i - start; nd < 3; nd++)
			frac *= 10;
	}

	if (i >= len)
		return -1;
	if (s[i] == 'Z' || s[i] == 'z') {
		i++;
	} else if (s[i] == '+' || s[i] == '-') {
		if (len - i != 6 || fixed_digits(s + i + 1, 2, &oh) == -1 ||
		    s[i + 3] != ':' || fixed_digits(s + i + 4, 2, &om) == -1 ||
		    oh > 23 || om > 59)
			return -1;
		off = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
		i += 6;
	} else
		return -1;
	if (i != len)
		return -1;

	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
	    h > 23 || mi > 59 || sec > 60)
		return -1;

	*ms = days_from_civil(y, mo, d) * MS_PER_DAY +
	    ((int64_t)h * 3600 + (int64_t)(mi - off) * 60 + sec) * 1000 + frac;
	return 0;
}

/* Writes v as exactly n decimal digits, zero-padded, at p. */
static void
put_digits(char *p, int64_t v, size_t n)
{

	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/*
 * Formats ms as "YYYY-MM-DDTHH:MM:SS.mmmZ". Times before year 0 or after
 * year 9999 cannot be written in RFC 3339, so they are clamped to the first
 * and last representable millisecond; a far-future expiry stays far-future.
 */
void
ds_format_rfc3339(int64_t ms, char out[32])
{
	int64_t	 lo, hi, days, rem;
	int	 y, m, d;

	lo = days_from_civil(0, 1, 1) * MS_PER_DAY;
	hi = (days_from_civil(9999, 12, 31) + 1) * MS_PER_DAY - 1;
	if (ms < lo)
		ms = lo;
	if (ms > hi)
		ms = hi;

	/* C division truncates toward zero; days must round toward -inf. */
	days = ms / MS_PER_DAY;
	rem = ms % MS_PER_DAY;
	if (rem < 0) {
		rem += MS_PER_DAY;
		days--;
	}
	civil_from_days(days, &y, &m, &d);

	memcpy(out, "0000-00-00T00:00:00.000Z", 25);
	put_digits(out, y, 4);
	put_digits(out + 5, m, 2);
	put_digits(out + 8, d, 2);
	put_digits(out + 11, rem / 3600000, 2);
	put_digits(out + 14, rem / 60000 % 60, 2);
	put_digits(out + 17, rem / 1000 % 60, 2);
	put_digits(out + 20, rem % 1000, 3);
}

/*
 * Percent-decodes s[0..len) into out (when out is not NULL), writing at
 * most cap bytes and no terminator. With plus_space, '+' becomes ' ' as in
 * application/x-www-form-urlencoded query strings; in paths it stays '+'.
 * Sets *outlen to the decoded length. Returns 0, -1 for a bad escape or a
 * NUL (raw or decoded: the result is used as a C string), -2 if the result
 * is longer than cap. With out NULL only the first two checks apply.
 */
static int
pct_decode(const char *s, size_t len, int plus_space, char *out, size_t cap,
    size_t *outlen)
{
	size_t	 i, n = 0;
	int	 c, hi, lo;

	for (i = 0; i < len; i++, n++) {
		c = (unsigned char)s[i];
		if (c == '%') {
			if (len - i < 3 ||
			    (hi = hex_value((unsigned char)s[i + 1])) == -1 ||
			    (lo = hex_value((unsigned char)s[i + 2])) == -1)
				return -1;
			c = hi << 4 | lo;
			i += 2;
		} else if (c == '+' && plus_space)
			c = ' ';
		if (c == '\0')
			return -1;
		if (out != NULL) {
			if (n >= cap)
				return -2;
			out[n] = (char)c;
		}
	}
	*outlen = n;
	return 0;
}

/*
 * Compares a still-encoded query parameter name with key. A name with a bad
 * escape matches nothing: it is some other parameter's problem.
 */
static int
name_eq(const char *s, size_t len, const char *key)
{
	size_t	 i, k = 0;
	int	 c, hi, lo;

	for (i = 0; i < len; i++, k++) {
		c = (unsigned char)s[i];
		if (c == '%') {
			if (len - i < 3 ||
			    (hi = hex_value((unsigned char)s[i + 1])) == -1 ||
			    (lo = hex_value((unsigned char)s[i + 2])) == -1)
				return 0;
			c = hi << 4 | lo;
			i += 2;
		} else if (c == '+')
			c = ' ';
		if (c == '\0' || (unsigned char)key[k] != c)
			return 0;
	}
	return key[k] == '\0';
}

/*
 * Query parameters (PROTOCOL 5.6-5.8: offset, live, cursor). Pairs are
 * split on '&'; empty pairs are skipped, and a name without '=' has the
 * empty value. Every occurrence of key must carry a well-formed value, so
 * that "offset=1&offset=%zz" is reported malformed rather than duplicated.
 */
int
ds_query_get(const char *qs, size_t len, const char *key, char *out,
    size_t outsz, size_t *outlen)
{
	const char	*pair, *eq, *amp, *val;
	size_t		 plen, nlen, vlen, n;
	int		 count = 0, rc;

	if (out != NULL && outsz > 0)
		out[0] = '\0';
	if (key == NULL || key[0] == '\0' || (qs == NULL && len > 0))
		return -1;

	for (pair = qs; len > 0; pair += plen + 1, len -= plen + 1) {
		amp = memchr(pair, '&', len);
		plen = amp != NULL ? (size_t)(amp - pair) : len;
		eq = memchr(pair, '=', plen);
		nlen = eq != NULL ? (size_t)(eq - pair) : plen;
		val = eq != NULL ? eq + 1 : pair + plen;
		vlen = plen - (size_t)(val - pair);

		if (nlen > 0 && name_eq(pair, nlen, key)) {
			if (count == 0) {
				if (out == NULL || outsz == 0)
					return -1;
				rc = pct_decode(val, vlen, 1, out, outsz - 1,
				    &n);
				if (rc != 0) {
					out[0] = '\0';
					return -1;
				}
				out[n] = '\0';
				if (outlen != NULL)
					*outlen = n;
			} else if (pct_decode(val, vlen, 1, NULL, 0, &n) != 0) {
				out[0] = '\0';
				return -1;
			}
			if (count < INT_MAX)
				count++;
		}
		if (amp == NULL)
			break;
	}
	return count;
}

/*
 * Stream paths become store keys, so a decoded path must not be able to
 * name anything but itself: no traversal segments, no empty segments that
 * would let "a//b" and "a/b" differ, no control bytes for the logs.
 */
int
ds_path_decode(const char *raw, size_t len, char *out, size_t outsz,
    size_t *outlen)
{
	size_t	 n, i, seg;
	int	 c;

	if (out == NULL || outsz == 0)
		return -1;
	out[0] = '\0';
	if (raw == NULL || pct_decode(raw, len, 0, out, outsz - 1, &n) != 0 ||
	    n == 0) {
		out[0] = '\0';
		return -1;
	}
	out[n] = '\0';

	for (i = 0, seg = 0; i <= n; i++) {
		c = (unsigned char)out[i];
		if (i < n && (c < 0x20 || c == 0x7f || c == '\\'))
			goto bad;
		if (i < n && c != '/')
			continue;
		/* out[seg..i) is one segment. */
		if (i == seg ||
		    (i - seg == 1 && out[seg] == '.') ||
		    (i - seg == 2 && out[seg] == '.' && out[seg + 1] == '.'))
			goto bad;
		seg = i + 1;
	}
	*outlen = n;
	return 0;
bad:
	out[0] = '\0';
	return -1;
}

int
ds_header_is_true(const char *v)
{

	return v != NULL && strlen(v) == 4 && span_caseeq(v, "true", 4);
}

/* Trims OWS from both ends of [*p, *p + *n). */
static void
trim_ows(const char **p, size_t *n)
{
	while (*n > 0 && is_ows((unsigned char)**p)) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && is_ows((unsigned char)(*p)[*n - 1]))
		(*n)--;
}

int
ds_header_closed(const char *v)
{
	const char	*first, *p, *e;
	size_t		 flen, n;

	if (v == NULL)
		return 0;
	if (strchr(v, ',') == NULL)
		return ds_header_is_true(v);
	first = NULL;
	flen = 0;
	for (p = v; ; p = e + 1) {
		if ((e = strchr(p, ',')) == NULL)
			e = p + strlen(p);
		n = (size_t)(e - p);
		trim_ows(&p, &n);
		if (first == NULL) {
			first = p;
			flen = n;
		} else if (n != flen || !span_caseeq(p, first, n))
			return -1;
		if (*e == '\0')
			break;
	}
	return flen == 4 && span_caseeq(first, "true", 4);
}

/* The headers a request may carry once; see ds_env_conflict(). */
static const struct {
	const char	*param;		/* FastCGI parameter name */
	const char	*name;		/* as the client sends it */
	int		 nocase;	/* values compare case-insensitively */
} single_hdrs[] = {
	{ "HTTP_CONTENT_TYPE", "Content-Type", 1 },
	{ "HTTP_STREAM_CLOSED", "Stream-Closed", 1 },
	{ "HTTP_STREAM_SEQ", "Stream-Seq", 0 },
	{ "HTTP_STREAM_TTL", "Stream-TTL", 0 },
	{ "HTTP_STREAM_EXPIRES_AT", "Stream-Expires-At", 1 },
	{ "HTTP_STREAM_FORKED_FROM", "Stream-Forked-From", 0 },
	{ "HTTP_STREAM_FORK_OFFSET", "Stream-Fork-Offset", 0 },
	{ "HTTP_STREAM_FORK_SUB_OFFSET", "Stream-Fork-Sub-Offset", 0 },
	{ "HTTP_PRODUCER_ID", "Producer-Id", 0 },
	{ "HTTP_PRODUCER_EPOCH", "Producer-Epoch", 0 },
	{ "HTTP_PRODUCER_SEQ", "Producer-Seq", 0 },
};
#define NSINGLE (sizeof(single_hdrs) / sizeof(single_hdrs[0]))

const char *
ds_env_conflict(char *const *envp)
{
	const char	*seen[NSINGLE] = { NULL };
	const char	*e, *eq;
	size_t		 i, n;

	for (; envp != NULL && *envp != NULL; envp++) {
		e = *envp;
		if (strncmp(e, "HTTP_", 5) != 0 || (eq = strchr(e, '=')) == NULL)
			continue;
		n = (size_t)(eq - e);
		for (i = 0; i < NSINGLE; i++) {
			if (strlen(single_hdrs[i].param) != n ||
			    memcmp(single_hdrs[i].param, e, n) != 0)
				continue;
			if (seen[i] == NULL)
				seen[i] = eq + 1;
			else if (strlen(seen[i]) != strlen(eq + 1) ||
			    (single_hdrs[i].nocase ?
			    !span_caseeq(seen[i], eq + 1, strlen(seen[i])) :
			    strcmp(seen[i], eq + 1) != 0))
				return single_hdrs[i].name;
			break;
		}
	}
	return NULL;
}

int
ds_host_valid(const char *h)
{
	size_t	 n;

	if (h == NULL)
		return 0;
	for (n = 0; h[n] != '\0'; n++) {
		if (n == 255)
			return 0;
		if (!is_alnum((unsigned char)h[n]) &&
		    strchr("-._~:[]", h[n]) == NULL)
			return 0;
	}
	return n > 0;
}

/*
 * Finds the type/subtype part of a Content-Type value: after leading OWS,
 * up to the first ';' or the end, without trailing OWS.
 */
static void
media_span(const char *v, const char **p, size_t *n)
{
	const char	*e;

	while (is_ows((unsigned char)*v))
		v++;
	for (e = v; *e != '\0' && *e != ';'; e++)
		continue;
	while (e > v && is_ows((unsigned char)e[-1]))
		e--;
	*p = v;
	*n = (size_t)(e - v);
}

/*
 * Content-Type matching for appends (PROTOCOL 5.2). An empty type equals
 * nothing, so a missing header can never match by accident.
 */
int
ds_media_type_eq(const char *a, const char *b)
{
	const char	*pa, *pb;
	size_t		 na, nb;

	if (a == NULL || b == NULL)
		return 0;
	media_span(a, &pa, &na);
	media_span(b, &pb, &nb);
	return na > 0 && na == nb && span_caseeq(pa, pb, na);
}

/*
 * The form a stream's content type is stored and compared in. Parameters
 * after ';' are dropped unchecked: PROTOCOL 5.2 compares type/subtype only.
 */
int
ds_media_type_norm(const char *v, char *out, size_t outsz)
{
	const char	*p, *type;
	size_t		 tlen, slen, i;

	if (out != NULL && outsz > 0)
		out[0] = '\0';
	if (v == NULL || out == NULL || outsz == 0)
		return -1;

	for (p = v; is_ows((unsigned char)*p); p++)
		continue;
	type = p;
	for (tlen = 0; is_tchar((unsigned char)*p); p++)
		tlen++;
	if (tlen == 0 || *p++ != '/')
		return -1;
	for (slen = 0; is_tchar((unsigned char)*p); p++)
		slen++;
	if (slen == 0)
		return -1;
	while (is_ows((unsigned char)*p))
		p++;
	if (*p != '\0' && *p != ';')
		return -1;

	if (tlen + 1 + slen >= outsz)
		return -1;
	for (i = 0; i < tlen + 1 + slen; i++)
		out[i] = (char)ascii_lower((unsigned char)type[i]);
	out[i] = '\0';
	return 0;
}
