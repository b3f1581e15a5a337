/*
 * json_test.c: unit tests for fcgi-app/json.c, the JSON-mode validator and
 * message splitter (PROTOCOL 9.1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi-app/json.h"
#include "t/tap.h"

/*
 * Writes a C-escaped, shortened copy of s[0..n) into buf for a test name:
 * the inputs hold newlines and raw bytes that would break the TAP stream.
 */
static const char *
printable(const char *s, size_t n, char *buf, size_t bufsz)
{
	size_t	 i, o = 0;
	unsigned char c;

	for (i = 0; i < n && o + 8 < bufsz; i++) {
		c = (unsigned char)s[i];
		if (c == '\n')
			o += (size_t)snprintf(buf + o, bufsz - o, "\\n");
		else if (c == '\\')
			o += (size_t)snprintf(buf + o, bufsz - o, "\\\\");
		else if (c >= 0x20 && c < 0x7f)
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, bufsz - o, "\\x%02x", c);
	}
	if (i < n)
		o += (size_t)snprintf(buf + o, bufsz - o, "...");
	buf[o] = '\0';
	return buf;
}

/*
 * Splits in[0..len) and checks the result: err, and on success the exact
 * output and message count. want_out lists the messages, '\n'-terminated.
 */
static void
split_is_n(const char *in, size_t len, int allow_empty, enum ds_json_err err,
    const char *want_out, size_t want_n, const char *name)
{
	char		*out = (char *)1, nbuf[128];
	size_t		 outlen = 99, nmsg = 99;
	enum ds_json_err rc;

	name = printable(name, strlen(name), nbuf, sizeof(nbuf));
	rc = ds_json_split(in, len, allow_empty, &out, &outlen, &nmsg);
	if (!is_int(rc, err, "%s: %s", name, ds_json_strerror(err)))
		diag("    got error: %s", ds_json_strerror(rc));
	if (err != DS_JSON_OK) {
		ok(out == NULL && outlen == 0 && nmsg == 0,
		    "%s: no output on error", name);
		free(out);
		return;
	}
	if (ok(out != NULL, "%s: output allocated", name)) {
		is_mem(out, outlen, want_out, strlen(want_out),
		    "%s: messages", name);
		is_int(nmsg, want_n, "%s: %zu message(s)", name, want_n);
	}
	free(out);
}

static void
split_is(const char *in, int allow_empty, enum ds_json_err err,
    const char *want_out, size_t want_n)
{

	split_is_n(in, strlen(in), allow_empty, err, want_out, want_n, in);
}

static void
valid(const char *in, const char *want_out, size_t want_n)
{

	split_is(in, 0, DS_JSON_OK, want_out, want_n);
}

/* Invalid documents get a name, since many hold unprintable bytes. */
static void
invalid(const char *in, const char *name)
{

	split_is_n(in, strlen(in), 1, DS_JSON_INVALID, NULL, 0, name);
}

static void
test_protocol_examples(void)
{

	/* PROTOCOL 9.1.2 */
	valid("{\"event\": \"created\"}", "{\"event\":\"created\"}\n", 1);
	valid("[{\"event\": \"a\"}, {\"event\": \"b\"}]",
	    "{\"event\":\"a\"}\n{\"event\":\"b\"}\n", 2);
	valid("[[1,2], [3,4]]", "[1,2]\n[3,4]\n", 2);
	valid("[[[1,2,3]]]", "[[1,2,3]]\n", 1);
	valid("[{\"x\": 1}]", "{\"x\":1}\n", 1);

	/* PROTOCOL 9.1.3: "[]" only where allowed. */
	split_is("[]", 0, DS_JSON_EMPTY_ARRAY, NULL, 0);
	split_is("[]", 1, DS_JSON_OK, "", 0);
	split_is(" [ \n\t ] \r\n", 0, DS_JSON_EMPTY_ARRAY, NULL, 0);
	split_is(" [ \n\t ] \r\n", 1, DS_JSON_OK, "", 0);
	split_is("[]x", 0, DS_JSON_INVALID, NULL, 0);
	split_is("[] []", 1, DS_JSON_INVALID, NULL, 0);
	split_is("[", 0, DS_JSON_INVALID, NULL, 0);
	valid("[[]]", "[]\n", 1);
	valid("[{}]", "{}\n", 1);
	valid("[[],{},[[]]]", "[]\n{}\n[[]]\n", 3);
	valid("{}", "{}\n", 1);

	/* PROTOCOL conformance suite's example of bad JSON. */
	invalid("{ invalid json }", "{ invalid json }");
}

static void
test_whitespace(void)
{

	valid(" \t\r\n 5 \n", "5\n", 1);
	valid("[ 1 , 2 ]", "1\n2\n", 2);
	valid("[\n  {\n    \"a\": 1,\n    \"b\": [ 1, 2 ]\n  },\n  2\n]\n",
	    "{\"a\":1,\"b\":[1,2]}\n2\n", 2);
	valid("{ \"a\" : [ 1 , { \"b\" : null } ] , \"c\" : true }",
	    "{\"a\":[1,{\"b\":null}],\"c\":true}\n", 1);
	valid("[\"a b\\n\", \" \", \"\\t\"]", "\"a b\\n\"\n\" \"\n\"\\t\"\n", 3);
	valid("[{\n\"a\"\r\n:\n1\n}]", "{\"a\":1}\n", 1);
	valid("[\"[1, 2]\", \"{ }\"]", "\"[1, 2]\"\n\"{ }\"\n", 2);
	invalid("[1,\f2]", "form feed is not whitespace");
	invalid("[1,\v2]", "vertical tab is not whitespace");
	invalid("[1,\xc2\xa0" "2]", "NBSP is not whitespace");
	invalid("\xef\xbb\xbf[1]", "byte order mark");
	invalid("[1] /* c */", "comment");
	invalid("// c\n[1]", "line comment");
}

static void
test_scalars(void)
{
	static const char *const nums[] = {
		"0", "-0", "1", "-1", "10", "1.5", "-1.5", "0.0", "0e0", "0E0",
		"1e5", "1E5", "1e+5", "1e-5", "1E-05", "-1.0e+10", "0.000001",
		"123456789012345678901234567890",
		"-123456789012345678901234567890.123456789e-123456789",
		"9007199254740993", "1e400", "18446744073709551616"
	};
	static const char *const badnums[] = {
		"01", "-01", "00", "+1", ".5", "-.5", "1.", "1.e5", "1e", "1e+",
		"1e-", "-", "--1", "0x10", "1_000", "NaN", "Infinity",
		"-Infinity", "1.5.5", "1e5e5", "0-", "1+", "- 1", "1 .5",
		"1. 5", "1e 5", "\xd9\xa1"
	};
	char	 want[128];
	size_t	 i;

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		snprintf(want, sizeof(want), "%s\n", nums[i]);
		valid(nums[i], want, 1);
	}
	valid("[123456789012345678901234567890, -0.0e-0]",
	    "123456789012345678901234567890\n-0.0e-0\n", 2);
	for (i = 0; i < sizeof(badnums) / sizeof(badnums[0]); i++)
		invalid(badnums[i], badnums[i]);
	for (i = 0; i < sizeof(badnums) / sizeof(badnums[0]); i++) {
		snprintf(want, sizeof(want), "[%s]", badnums[i]);
		invalid(want, want);
	}

	valid("true", "true\n", 1);
	valid("false", "false\n", 1);
	valid("null", "null\n", 1);
	valid("[null,true,false]", "null\ntrue\nfalse\n", 3);
	invalid("tru", "tru");
	invalid("True", "True");
	invalid("NULL", "NULL");
	invalid("nul", "nul");
	invalid("nulll", "nulll");
	invalid("truefalse", "truefalse");
	invalid("[true false]", "[true false]");
	invalid("[true,fals]", "[true,fals]");
	invalid("undefined", "undefined");
}

static void
test_structure(void)
{

	valid("{\"a\":{\"b\":{\"c\":[1,{\"d\":[]}]}}}",
	    "{\"a\":{\"b\":{\"c\":[1,{\"d\":[]}]}}}\n", 1);
	valid("{\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}\n", 1);
	valid("{\"\":\"\"}", "{\"\":\"\"}\n", 1);

	invalid("", "empty");
	invalid(" ", "space");
	invalid("\n\r\t", "whitespace only");
	invalid("[1,]", "[1,]");
	invalid("[,1]", "[,1]");
	invalid("[,]", "[,]");
	invalid("[1 2]", "[1 2]");
	invalid("[1,,2]", "[1,,2]");
	invalid("{\"a\":1,}", "{\"a\":1,}");
	invalid("{,}", "{,}");
	invalid("{\"a\"}", "{\"a\"}");
	invalid("{\"a\":}", "{\"a\":}");
	invalid("{\"a\" 1}", "{\"a\" 1}");
	invalid("{\"a\"::1}", "{\"a\"::1}");
	invalid("{1:2}", "{1:2}");
	invalid("{a:1}", "{a:1}");
	invalid("{'a':1}", "{'a':1}");
	invalid("['a']", "['a']");
	invalid("{\"a\":1 \"b\":2}", "{\"a\":1 \"b\":2}");
	invalid("[1]]", "[1]]");
	invalid("[[1]", "[[1]");
	invalid("[1}", "[1}");
	invalid("{\"a\":1]", "{\"a\":1]");
	invalid("]", "]");
	invalid("}", "}");
	invalid("{", "{");
	invalid("[", "[");
	invalid(":", ":");
	invalid(",", ",");
	invalid("1 2", "two values");
	invalid("{} {}", "two objects");
	invalid("\"a\" \"b\"", "two strings");
	invalid("1,", "trailing comma at top level");
	invalid("[1]x", "trailing letter");
	invalid("[1],[2]", "two arrays");
	split_is_n("[1]\0", 4, 0, DS_JSON_INVALID, NULL, 0, "trailing NUL");
	split_is_n("[1,\0 2]", 7, 0, DS_JSON_INVALID, NULL, 0, "inner NUL");
	split_is_n("[1]junk", 3, 0, DS_JSON_OK, "1\n", 1, "length honoured");
	split_is_n(NULL, 0, 1, DS_JSON_INVALID, NULL, 0, "NULL");
}

static void
test_strings(void)
{

	valid("\"\"", "\"\"\n", 1);
	valid("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
	    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"\n", 1);
	valid("\"\\u0041\\u00e9\\uFFFF\\u0000\"",
	    "\"\\u0041\\u00e9\\uFFFF\\u0000\"\n", 1);
	valid("\"\\uD83D\\uDE00\"", "\"\\uD83D\\uDE00\"\n", 1);
	/* Grammatical per RFC 8259 and accepted by JSON.parse; kept as is. */
	valid("\"\\ud800\"", "\"\\ud800\"\n", 1);
	valid("\"\\udc00\\ud800\"", "\"\\udc00\\ud800\"\n", 1);
	valid("\"\x7f\"", "\"\x7f\"\n", 1);
	valid("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
	    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"\n", 1);
	/* The edges of each UTF-8 length class. */
	valid("\"\xc2\x80\xdf\xbf\"", "\"\xc2\x80\xdf\xbf\"\n", 1);
	valid("\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"",
	    "\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"\n", 1);
	valid("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"",
	    "\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"\n", 1);

	invalid("\"abc", "unterminated string");
	invalid("\"abc\\\"", "escaped closing quote");
	invalid("\"\\", "lone backslash");
	invalid("\"\\x41\"", "\\x escape");
	invalid("\"\\a\"", "\\a escape");
	invalid("\"\\'\"", "\\' escape");
	invalid("\"\\0\"", "\\0 escape");
	invalid("\"\\U0041\"", "\\U escape");
	invalid("\"\\u12\"", "short \\u");
	invalid("\"\\u12", "truncated \\u");
	invalid("\"\\u12G4\"", "non-hex \\u");
	invalid("\"\\u-123\"", "signed \\u");
	invalid("\"tab\there\"", "raw tab in string");
	invalid("\"line\nbreak\"", "raw newline in string");
	invalid("\"\x01\"", "raw 0x01 in string");
	invalid("\"\x1f\"", "raw 0x1f in string");
	split_is_n("\"a\0b\"", 5, 0, DS_JSON_INVALID, NULL, 0,
	    "raw NUL in string");
	invalid("'a'", "single quotes");
	invalid("\"\xc0\x80\"", "overlong NUL (C0 80)");
	invalid("\"\xc1\xbf\"", "overlong (C1 BF)");
	invalid("\"\xe0\x80\x80\"", "overlong 3-byte (E0 80 80)");
	invalid("\"\xe0\x9f\xbf\"", "overlong 3-byte (E0 9F BF)");
	invalid("\"\xf0\x80\x80\x80\"", "overlong 4-byte (F0 80 80 80)");
	invalid("\"\xf0\x8f\xbf\xbf\"", "overlong 4-byte (F0 8F BF BF)");
	invalid("\"\xed\xa0\x80\"", "UTF-8 surrogate U+D800");
	invalid("\"\xed\xbf\xbf\"", "UTF-8 surrogate U+DFFF");
	invalid("\"\xed\xa0\xbd\xed\xb8\x80\"", "CESU-8 pair");
	invalid("\"\xf4\x90\x80\x80\"", "above U+10FFFF");
	invalid("\"\xf5\x80\x80\x80\"", "F5");
	invalid("\"\xf8\x88\x80\x80\x80\"", "5-byte form");
	invalid("\"\xfe\"", "FE");
	invalid("\"\xff\"", "FF");
	invalid("\"\x80\"", "lone continuation");
	invalid("\"\xbf\"", "lone continuation BF");
	invalid("\"\xe2\x82\"", "truncated 3-byte");
	invalid("\"\xe2\x82", "truncated 3-byte at end");
	invalid("\"\xf0\x9f\x98\"", "truncated 4-byte");
	invalid("\"\xc2\x41\"", "bad continuation");
	invalid("\"\xc2\xc2\x80\"", "lead byte as continuation");
	invalid("\xc3\xa9", "non-ASCII outside a string");
}

/*
 * Every UTF-8 sequence of up to three bytes (and a sampled set of four),
 * checked against a decoder written independently of json.c: a sequence
 * is valid if it decodes to a scalar value in the shortest form.
 */
static int
ref_utf8_valid(const unsigned char *p, size_t n)
{
	uint32_t	 cp;
	size_t		 need, i;

	if (p[0] < 0x80)
		return n == 1 && p[0] >= 0x20 && p[0] != '"' && p[0] != '\\';
	if ((p[0] & 0xe0) == 0xc0) {
		need = 2;
		cp = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		need = 3;
		cp = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		need = 4;
		cp = p[0] & 0x07;
	} else
		return 0;
	if (n != need)
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) ||
	    (need == 4 && cp < 0x10000))
		return 0;
	return cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
}

static int
utf8_case(const unsigned char *seq, size_t n)
{
	char		 in[8], *out;
	size_t		 outlen, nmsg;
	enum ds_json_err rc;
	int		 want;

	in[0] = '"';
	memcpy(in + 1, seq, n);
	in[n + 1] = '"';
	rc = ds_json_split(in, n + 2, 0, &out, &outlen, &nmsg);
	want = ref_utf8_valid(seq, n);
	free(out);
	if ((rc == DS_JSON_OK) != want) {
		diag("sequence of %zu bytes %02x %02x %02x %02x: got %s", n,
		    seq[0], n > 1 ? seq[1] : 0, n > 2 ? seq[2] : 0,
		    n > 3 ? seq[3] : 0, ds_json_strerror(rc));
		return 0;
	}
	return 1;
}

static void
test_utf8_exhaustive(void)
{
	static const unsigned char edge[] = { 0x00, 0x3f, 0x7f, 0x80, 0x8f,
	    0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff };
	unsigned char	 s[4];
	unsigned	 a, b, c, d;
	int		 good = 1;

	for (a = 0; a < 256 && good; a++) {
		s[0] = (unsigned char)a;
		good = utf8_case(s, 1);
	}
	ok(good, "every 1-byte string content");
	for (a = 0x80; a < 256 && good; a++)
		for (b = 0; b < 256 && good; b++) {
			s[0] = (unsigned char)a;
			s[1] = (unsigned char)b;
			good = utf8_case(s, 2);
		}
	ok(good, "every 2-byte sequence with a non-ASCII lead");
	for (a = 0xe0; a < 0xf0 && good; a++)
		for (b = 0; b < 256 && good; b++)
			for (c = 0; c < 256 && good; c++) {
				s[0] = (unsigned char)a;
				s[1] = (unsigned char)b;
				s[2] = (unsigned char)c;
				good = utf8_case(s, 3);
			}
	ok(good, "every 3-byte sequence with lead E0-EF");
	for (a = 0xf0; a < 0x100 && good; a++)
		for (b = 0; b < 256 && good; b++)
			for (c = 0; c < sizeof(edge) && good; c++)
				for (d = 0; d < sizeof(edge) && good; d++) {
					s[0] = (unsigned char)a;
					s[1] = (unsigned char)b;
					s[2] = edge[c];
					s[3] = edge[d];
					good = utf8_case(s, 4);
				}
	ok(good, "4-byte sequences: every lead F0-FF and second byte");
}

static void
test_depth(void)
{
	char	*in, *want;
	size_t	 i, n = DS_JSON_MAX_DEPTH;

	must((in = malloc(6 * n + 16)) != NULL &&
	    (want = malloc(6 * n + 16)) != NULL, "malloc");

	/* n nested arrays: the outer one is flattened away. */
	memset(in, '[', n);
	memset(in + n, ']', n);
	memset(want, '[', n - 1);
	memset(want + n - 1, ']', n - 1);
	want[2 * n - 2] = '\n';
	want[2 * n - 1] = '\0';
	split_is_n(in, 2 * n, 1, DS_JSON_OK, want, 1, "depth at the limit");

	memset(in, '[', n + 1);
	memset(in + n + 1, ']', n + 1);
	split_is_n(in, 2 * n + 2, 1, DS_JSON_TOO_DEEP, NULL, 0,
	    "depth one past the limit");
	split_is_n(in, n + 1, 1, DS_JSON_TOO_DEEP, NULL, 0,
	    "too deep and unterminated");
	memset(in, '[', 4 * n);
	split_is_n(in, 4 * n, 1, DS_JSON_TOO_DEEP, NULL, 0, "far too deep");

	/* Objects count too, and a scalar top level is not flattened. */
	for (i = 0; i < n; i++)
		memcpy(in + 4 * i, "{\"\":", 4);
	in[4 * n] = '1';
	memset(in + 4 * n + 1, '}', n);
	memcpy(want, in, 5 * n + 1);
	want[5 * n + 1] = '\n';
	want[5 * n + 2] = '\0';
	split_is_n(in, 5 * n + 1, 0, DS_JSON_OK, want, 1,
	    "object depth at the limit");
	free(in);
	free(want);

	must((in = malloc(6 * n)) != NULL, "malloc");
	for (i = 0; i < n + 1; i++)
		memcpy(in + 4 * i, "{\"\":", 4);
	in[4 * (n + 1)] = '1';
	memset(in + 4 * (n + 1) + 1, '}', n + 1);
	split_is_n(in, 5 * (n + 1) + 1, 0, DS_JSON_TOO_DEEP, NULL, 0,
	    "object depth past the limit");
	free(in);

	/* Closing pops: many shallow siblings never add up to depth. */
	must((in = malloc(10 * n + 2)) != NULL &&
	    (want = malloc(10 * n + 2)) != NULL, "malloc");
	in[0] = '[';
	for (i = 0; i < 2 * n; i++) {
		memcpy(in + 1 + 5 * i, "[[]],", 5);
		memcpy(want + 5 * i, "[[]]\n", 5);
	}
	in[10 * n] = ']';
	want[10 * n] = '\0';
	split_is_n(in, 10 * n + 1, 0, DS_JSON_OK, want, 2 * n,
	    "many siblings do not add up to depth");
	free(in);
	free(want);
}

/*
 * A growable buffer pair for the random generator: one copy compact, one
 * with random whitespace between tokens.
 */
struct gen {
	char	*c;		/* compact text */
	size_t	 clen;
	char	*s;		/* spaced text */
	size_t	 slen;
	size_t	 cap;		/* of each */
};

static void
gen_raw(struct gen *g, char *buf, size_t *len, const char *p, size_t n)
{

	if (*len + n > g->cap)
		bail_out("generator buffer too small");
	memcpy(buf + *len, p, n);
	*len += n;
}

static void
gen_both(struct gen *g, const char *p, size_t n)
{

	gen_raw(g, g->c, &g->clen, p, n);
	gen_raw(g, g->s, &g->slen, p, n);
}

static void
gen_ws(struct gen *g)
{
	static const char ws[] = " \t\r\n";

	while (tap_rand_below(3) == 0)
		gen_raw(g, g->s, &g->slen, &ws[tap_rand_below(4)], 1);
}

/* Appends the UTF-8 form of a random scalar value of 1-4 bytes. */
static void
gen_utf8(struct gen *g)
{
	unsigned char	 b[4];
	uint32_t	 cp;
	size_t		 n;

	switch (tap_rand_below(3)) {
	case 0:
		cp = 0x80 + (uint32_t)tap_rand_below(0x800 - 0x80);
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
		break;
	case 1:
		do
			cp = 0x800 + (uint32_t)tap_rand_below(0x10000 - 0x800);
		while (cp >= 0xd800 && cp <= 0xdfff);
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
		break;
	default:
		cp = 0x10000 + (uint32_t)tap_rand_below(0x110000 - 0x10000);
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
		break;
	}
	gen_both(g, (const char *)b, n);
}

static void
gen_string(struct gen *g)
{
	static const char *const esc[] = { "\\\"", "\\\\", "\\/", "\\b",
	    "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\uD83D\\uDE00", "\\uabcd",
	    " ", "\x7f", "[", "]", ",", "{", ":" };
	char		 c;
	uint64_t	 n;

	gen_both(g, "\"", 1);
	for (n = tap_rand_below(12); n > 0; n--) {
		switch (tap_rand_below(4)) {
		case 0:
			c = (char)(0x20 + tap_rand_below(0x5f));
			if (c == '"' || c == '\\')
				c = 'x';
			gen_both(g, &c, 1);
			break;
		case 1:
			gen_utf8(g);
			break;
		default:
			c = (char)tap_rand_below(sizeof(esc) / sizeof(esc[0]));
			gen_both(g, esc[(size_t)c], strlen(esc[(size_t)c]));
			break;
		}
	}
	gen_both(g, "\"", 1);
}

static void
gen_digits(struct gen *g, int first_nonzero, uint64_t n)
{
	char	 c;

	while (n-- > 0) {
		c = (char)('0' + tap_rand_below(10));
		if (first_nonzero && c == '0')
			c = '1';
		first_nonzero = 0;
		gen_both(g, &c, 1);
	}
}

static void
gen_number(struct gen *g)
{

	if (tap_rand_below(2))
		gen_both(g, "-", 1);
	if (tap_rand_below(4) == 0)
		gen_both(g, "0", 1);
	else
		gen_digits(g, 1, 1 + tap_rand_below(40));
	if (tap_rand_below(3) == 0) {
		gen_both(g, ".", 1);
		gen_digits(g, 0, 1 + tap_rand_below(10));
	}
	if (tap_rand_below(3) == 0) {
		gen_both(g, tap_rand_below(2) ? "e" : "E", 1);
		switch (tap_rand_below(3)) {
		case 0:
			gen_both(g, "+", 1);
			break;
		case 1:
			gen_both(g, "-", 1);
			break;
		}
		gen_digits(g, 0, 1 + tap_rand_below(4));
	}
}

/* A random value, nested at most depth more levels. */
static void
gen_value(struct gen *g, int depth)
{
	static const char *const lit[] = { "true", "false", "null" };
	uint64_t	 n, i;
	size_t		 k;

	gen_ws(g);
	switch (tap_rand_below(depth > 0 ? 6 : 3)) {
	case 0:
		k = (size_t)tap_rand_below(3);
		gen_both(g, lit[k], strlen(lit[k]));
		break;
	case 1:
		gen_number(g);
		break;
	case 2:
		gen_string(g);
		break;
	case 3:
	case 4:
		gen_both(g, "[", 1);
		n = tap_rand_below(5);
		for (i = 0; i < n; i++) {
			if (i > 0)
				gen_both(g, ",", 1);
			gen_value(g, depth - 1);
		}
		gen_ws(g);
		gen_both(g, "]", 1);
		break;
	default:
		gen_both(g, "{", 1);
		n = tap_rand_below(5);
		for (i = 0; i < n; i++) {
			if (i > 0)
				gen_both(g, ",", 1);
			gen_ws(g);
			gen_string(g);
			gen_ws(g);
			gen_both(g, ":", 1);
			gen_value(g, depth - 1);
		}
		gen_ws(g);
		gen_both(g, "}", 1);
		break;
	}
	gen_ws(g);
}

/*
 * Random documents: an array of random values written with random
 * whitespace must split into exactly the compact form of each element; a
 * non-array value must come back compact as one message.
 */
static void
test_random(void)
{
	struct gen	 g;
	char		*out, *expect;
	size_t		 outlen, nmsg, elen, n, i, start;
	enum ds_json_err rc;
	int		 iter, good = 1, top_array;

	g.cap = 1 << 20;
	must((g.c = malloc(g.cap)) != NULL && (g.s = malloc(g.cap)) != NULL &&
	    (expect = malloc(g.cap)) != NULL, "malloc");

	for (iter = 0; iter < 5000 && good; iter++) {
		g.clen = g.slen = elen = 0;
		top_array = tap_rand_below(4) != 0;
		if (top_array) {
			n = 1 + (size_t)tap_rand_below(6);
			gen_ws(&g);
			gen_raw(&g, g.s, &g.slen, "[", 1);
			for (i = 0; i < n; i++) {
				if (i > 0)
					gen_raw(&g, g.s, &g.slen, ",", 1);
				start = g.clen;
				gen_value(&g, 5);
				memcpy(expect + elen, g.c + start,
				    g.clen - start);
				elen += g.clen - start;
				expect[elen++] = '\n';
			}
			gen_raw(&g, g.s, &g.slen, "]", 1);
			gen_ws(&g);
		} else {
			n = 1;
			gen_value(&g, 5);
			/* A top-level array would be flattened; skip it. */
			if (g.c[0] == '[')
				continue;
			memcpy(expect, g.c, g.clen);
			elen = g.clen;
			expect[elen++] = '\n';
		}

		rc = ds_json_split(g.s, g.slen, 0, &out, &outlen, &nmsg);
		good = rc == DS_JSON_OK && nmsg == n && outlen == elen &&
		    memcmp(out, expect, elen) == 0;
		if (!good) {
			diag("iteration %d: %s, %zu of %zu messages", iter,
			    ds_json_strerror(rc), rc ? 0 : nmsg, n);
			tap_diag_mem("input", g.s, g.slen);
			tap_diag_mem("got", out, rc ? 0 : outlen);
			tap_diag_mem("expected", expect, elen);
		}
		free(out);

		/* Truncating a document never leaves it valid JSON, unless
		 * the cut lands after the complete top-level value or at the
		 * end of a top-level number. */
		if (good && g.slen > 1) {
			size_t	 cut = 1 + (size_t)tap_rand_below(g.slen - 1);

			rc = ds_json_split(g.s, cut, 1, &out, &outlen, &nmsg);
			free(out);
			if (rc == DS_JSON_OK && top_array) {
				for (i = cut; i < g.slen; i++)
					if (!strchr(" \t\r\n", g.s[i]))
						break;
				good = i == g.slen;
				if (!good)
					diag("prefix of %zu bytes accepted",
					    cut);
			}
		}
	}
	ok(good, "5000 random documents split to their compact elements");
	free(g.c);
	free(g.s);
	free(expect);
}

/*
 * Invariants on the output of any successful split, which the fuzzer also
 * checks: nmsg '\n's, each one ending a message, and each message a valid
 * JSON text that wraps back to itself.
 */
static int
check_output(const char *out, size_t outlen, size_t nmsg)
{
	const char	*p, *nl;
	char		*wrap, *o2;
	size_t		 n = 0, mlen, o2len, m2;
	int		 good = 1;

	for (p = out; good && p < out + outlen; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(out + outlen - p));
		if (nl == NULL || nl == p)
			return 0;
		mlen = (size_t)(nl - p);
		must((wrap = malloc(mlen + 2)) != NULL, "malloc");
		wrap[0] = '[';
		memcpy(wrap + 1, p, mlen);
		wrap[mlen + 1] = ']';
		good = ds_json_split(wrap, mlen + 2, 0, &o2, &o2len, &m2) ==
		    DS_JSON_OK && m2 == 1 && o2len == mlen + 1 &&
		    memcmp(o2, p, mlen + 1) == 0;
		free(o2);
		free(wrap);
		n++;
	}
	return good && n == nmsg;
}

/* Random byte mutations of a valid document must never break invariants. */
static void
test_mutations(void)
{
	static const char seed_doc[] =
	    "[{\"a\": [1, -2.5e+3, \"x\\u00e9\\n\"], \"b\": null}, true, "
	    "\"caf\xc3\xa9\", [[0]], {}]";
	static const char alphabet[] = "[]{},:\"\\ -+.eE0123456789tfnul \n"
	    "\x80\xc3\xa9\xed\xa0\xf4\x90\x01";
	char		 doc[sizeof(seed_doc) + 8], *out;
	size_t		 len, outlen, nmsg, k, nok = 0;
	enum ds_json_err rc;
	int		 iter, good = 1;

	for (iter = 0; iter < 20000 && good; iter++) {
		memcpy(doc, seed_doc, sizeof(seed_doc) - 1);
		len = sizeof(seed_doc) - 1;
		for (k = 1 + (size_t)tap_rand_below(3); k > 0; k--)
			doc[tap_rand_below(len)] =
			    alphabet[tap_rand_below(sizeof(alphabet) - 1)];
		rc = ds_json_split(doc, len, (int)tap_rand_below(2), &out,
		    &outlen, &nmsg);
		if (rc == DS_JSON_OK) {
			nok++;
			good = check_output(out, outlen, nmsg);
			if (!good)
				tap_diag_mem("mutant", doc, len);
		} else
			good = out == NULL;
		free(out);
	}
	ok(good, "20000 mutants: output invariants hold (%zu were valid)",
	    nok);
}

/* ds_json_array(): stored records back to one JSON array. */
static void
test_array(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "", "[]" },
		{ "1\n", "[1]" },
		{ "{\"a\":1}\n[2,3]\n\"x\"\n", "[{\"a\":1},[2,3],\"x\"]" },
	};
	size_t i, n;
	char *out;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		out = ds_json_array(cases[i].in, strlen(cases[i].in), &n);
		is_mem(out, n, cases[i].want, strlen(cases[i].want),
		    "ds_json_array(%s)", cases[i].want);
		free(out);
	}
	/*
	 * Across the 16-byte blocks: every length to 70, newlines before,
	 * on and after each block edge, the last one kept or not.
	 */
	for (i = 0; i <= 70; i++) {
		char in[72], want[80], *w = want;
		size_t k, wn, bad = 0;

		for (k = 0; k < i; k++)
			in[k] = k % 16 == 15 || k % 16 == 0 || k % 7 == 3 ?
			    '\n' : (char)('a' + k % 26);
		*w++ = '[';
		for (k = 0; k < i; k++)
			*w++ = in[k] == '\n' ? (k + 1 == i ? ']' : ',') : in[k];
		if (i == 0 || in[i - 1] != '\n')
			*w++ = ']';
		wn = (size_t)(w - want);
		out = ds_json_array(in, i, &n);
		if (out == NULL || n != wn || memcmp(out, want, n) != 0)
			bad = i + 1;
		free(out);
		if (bad) {
			ok(0, "ds_json_array() of %zu bytes", i);
			return;
		}
	}
	ok(1, "ds_json_array() of every length to 70 bytes, across 16-byte blocks");
}

int
main(void)
{

	tap_seed();
	ok(strcmp(ds_json_strerror(DS_JSON_OK), "success") == 0 &&
	    ds_json_strerror((enum ds_json_err)99) != NULL,
	    "strerror covers every value");
	test_protocol_examples();
	test_whitespace();
	test_scalars();
	test_structure();
	test_strings();
	test_utf8_exhaustive();
	test_depth();
	test_random();
	test_mutations();
	test_array();
	return done_testing();
}
