/*
 * parse.h: pure parsers for the HTTP side (offsets, header values, query
 * strings, stream paths, timestamps). Every function works on a buffer and a
 * length, never on a socket, and never allocates, so each one can be unit
 * tested and fuzzed on its own.
 */
#ifndef DS_PARSE_H
#define DS_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* "SSSSSSSSSSSSSSSS_BBBBBBBBBBBBBBBB": 16 digits, '_', 16 digits. */
#define DS_OFFSET_LEN 33

enum ds_offset_kind {
	DS_OFFSET_START,	/* "-1": the beginning of the stream */
	DS_OFFSET_NOW,		/* "now": the current tail */
	DS_OFFSET_AT		/* an explicit position */
};

/*
 * Parses an offset token (PROTOCOL 8). Accepts "-1", "now" and the fixed
 * 33-character form whose first part is all zeros (reserved). On success sets
 * *kind and, for DS_OFFSET_AT, *pos (the second part) and returns 0. Returns
 * -1 for anything else (empty, wrong length, stray characters, non-zero
 * reserved part, a value over 2^63-1).
 */
int	ds_offset_parse(const char *s, size_t len, enum ds_offset_kind *kind,
	    uint64_t *pos);

/* Writes the 33-character offset for pos and a NUL into out. */
void	ds_offset_format(uint64_t pos, char out[DS_OFFSET_LEN + 1]);

/*
 * Parses a non-negative decimal integer with no sign, no leading zeros
 * (except "0" itself), no spaces and no fraction or exponent, not above max.
 * Used for Stream-TTL (PROTOCOL 5.1), Producer-Epoch/Producer-Seq (5.2.1,
 * max 2^53-1) and Stream-Fork-Sub-Offset. Returns 0 and sets *out, or -1.
 */
int	ds_parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out);

#define DS_MAX_SAFE_INT 9007199254740991ULL	/* 2^53 - 1 */

/*
 * Parses an RFC 3339 date-time ("2026-11-22T10:00:00Z",
 * "2026-11-22T10:00:00.123+02:00"; 'T'/'t', 'Z'/'z' accepted; fraction of
 * any length, truncated to milliseconds). Checks field ranges including
 * days per month and leap years. Returns 0 and sets *ms (milliseconds since
 * the Unix epoch, UTC), or -1.
 */
int	ds_parse_rfc3339(const char *s, size_t len, int64_t *ms);

/* Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL). */
void	ds_format_rfc3339(int64_t ms, char out[32]);

/*
 * Looks up key in a raw query string ("a=1&b=x%20y", no leading '?').
 * Percent-decodes the value ('+' is a space) into out (NUL-terminated).
 * Returns the number of times key occurs (0: absent; 1: found, value in out;
 * >1: duplicated, value of the first in out), or -1 if the value is malformed
 * (bad %-escape, decodes to NUL) or does not fit in outsz-1 bytes.
 * *outlen gets the decoded length when the return is >= 1.
 */
int	ds_query_get(const char *qs, size_t len, const char *key, char *out,
	    size_t outsz, size_t *outlen);

/*
 * Percent-decodes a stream path (the part after the route prefix, without
 * the query string) into out, NUL-terminated, and validates it: non-empty,
 * at most outsz-1 bytes, no NUL or other control byte (< 0x20, 0x7f), no
 * backslash, no empty segment ("a//b", leading or trailing '/'), and no
 * segment "." or "..". Decoding happens before the checks, so "%2e%2e" and
 * "%00" are caught. Returns 0 and sets *outlen, or -1.
 */
int	ds_path_decode(const char *raw, size_t len, char *out, size_t outsz,
	    size_t *outlen);

/* Nonzero when v is exactly "true" in any letter case (PROTOCOL 4.1). */
int	ds_header_is_true(const char *v);

/*
 * Reads Stream-Closed (PROTOCOL 4.1): 1 when v is "true" in any case, 0
 * when v is NULL or any other value (which counts as absent), -1 when v is
 * a list that a front server joined from repeated headers ("true, false")
 * whose elements differ. A list of equal elements counts as one of them.
 */
int	ds_header_closed(const char *v);

/*
 * Finds a single-valued protocol request header (Content-Type, Stream-*,
 * Producer-*) that a FastCGI environment carries twice with different
 * values: nginx passes each copy of a repeated header as its own
 * parameter, and FCGX_GetParam() would silently return the first.
 * envp is the NULL-terminated "NAME=value" array. Returns the header's
 * name as sent ("Producer-Seq"), or NULL when there is no conflict.
 */
const char *ds_env_conflict(char *const *envp);

/*
 * Nonzero when h is a Host value fit to echo in a Location header: 1 to
 * 255 bytes of letters, digits and "-._~:[]" (a DNS name or an IP literal,
 * with an optional port).
 */
int	ds_host_valid(const char *h);

/*
 * Compares two media types for equality the way PROTOCOL 5.2 needs: the
 * type/subtype part only, case-insensitively, ignoring parameters such as
 * "; charset=utf-8" and surrounding spaces. Returns nonzero when equal.
 */
int	ds_media_type_eq(const char *a, const char *b);

/*
 * Copies the type/subtype of a Content-Type value, lower-cased and without
 * parameters or spaces, into out. Returns 0, or -1 when it is empty, has no
 * '/', has characters outside RFC 7230 tchar, or does not fit.
 */
int	ds_media_type_norm(const char *v, char *out, size_t outsz);

#endif /* DS_PARSE_H */
