/*
 * fuzz_json.c: libFuzzer target for ds_json_split (fcgi-app/json.h).
 *
 * Runs both modes on the input and, when it is accepted, checks what
 * PROTOCOL 9.1 and the header promise about the output: nmsg messages,
 * each ending in the only '\n' it contains, each a JSON text that comes
 * back unchanged when wrapped in "[...]" (re-splitting a bare message
 * would flatten it again if it is an array), and the whole output
 * rebuilt as one array splitting to itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi-app/json.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c) do {							\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c);	\
		abort();						\
	}								\
} while (0)

/*
 * The nesting depth of a valid JSON text, counted independently of the
 * scanner under test: brackets outside strings.
 */
static size_t
max_depth(const char *m, size_t n)
{
	size_t	 i, d = 0, max = 0;
	int	 instr = 0;

	for (i = 0; i < n; i++) {
		if (instr) {
			if (m[i] == '\\')
				i++;
			else if (m[i] == '"')
				instr = 0;
		} else if (m[i] == '"')
			instr = 1;
		else if (m[i] == '[' || m[i] == '{') {
			if (++d > max)
				max = d;
		} else if (m[i] == ']' || m[i] == '}')
			d--;
	}
	return max;
}

/* Checks one message m[0..n), its '\n' excluded. */
static void
check_message(const char *m, size_t n)
{
	char		*wrap, *out;
	size_t		 outlen, nmsg;
	enum ds_json_err err;

	CHECK(n > 0);
	CHECK(memchr(m, '\n', n) == NULL);
	/* No insignificant whitespace is left at either end. */
	CHECK(strchr(" \t\r", m[0]) == NULL);
	CHECK(strchr(" \t\r", m[n - 1]) == NULL);

	if ((wrap = malloc(n + 2)) == NULL)
		abort();
	wrap[0] = '[';
	memcpy(wrap + 1, m, n);
	wrap[n + 1] = ']';
	err = ds_json_split(wrap, n + 2, 0, &out, &outlen, &nmsg);
	free(wrap);
	/* A scalar top level may use the whole depth; wrapping adds one. */
	CHECK(max_depth(m, n) <= DS_JSON_MAX_DEPTH);
	if (max_depth(m, n) == DS_JSON_MAX_DEPTH) {
		CHECK(err == DS_JSON_TOO_DEEP);
		return;
	}
	CHECK(err == DS_JSON_OK);
	CHECK(nmsg == 1 && outlen == n + 1 && memcmp(out, m, n) == 0 &&
	    out[n] == '\n');
	free(out);
}

static void
check_output(size_t len, const char *out, size_t outlen, size_t nmsg)
{
	const char	*p, *nl;
	char		*arr, *again;
	size_t		 count = 0, alen = 0, againlen, againn;
	enum ds_json_err err;

	CHECK(out != NULL);
	CHECK(outlen <= len + 1);
	for (p = out; p < out + outlen; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(out + outlen - p));
		CHECK(nl != NULL);
		check_message(p, (size_t)(nl - p));
		count++;
	}
	CHECK(count == nmsg);
	if (nmsg == 0) {
		CHECK(outlen == 0);
		return;
	}

	/* "[" m1 "," m2 ... "]" must split into the very same messages. */
	if ((arr = malloc(outlen + 2)) == NULL)
		abort();
	arr[alen++] = '[';
	for (p = out; p < out + outlen; p++)
		arr[alen++] = *p == '\n' ? ',' : *p;
	arr[alen - 1] = ']';
	err = ds_json_split(arr, alen, 0, &again, &againlen, &againn);
	free(arr);
	if (err == DS_JSON_TOO_DEEP) {
		CHECK(max_depth(out, outlen) == DS_JSON_MAX_DEPTH);
		return;
	}
	CHECK(err == DS_JSON_OK);
	CHECK(againn == nmsg && againlen == outlen &&
	    memcmp(again, out, outlen) == 0);
	free(again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*in = (const char *)data;
	char		*out0, *out1;
	size_t		 len0, len1, n0, n1;
	enum ds_json_err e0, e1;

	e0 = ds_json_split(in, size, 0, &out0, &len0, &n0);
	e1 = ds_json_split(in, size, 1, &out1, &len1, &n1);
	CHECK(e0 == DS_JSON_OK || e0 == DS_JSON_INVALID ||
	    e0 == DS_JSON_EMPTY_ARRAY || e0 == DS_JSON_TOO_DEEP);
	CHECK(e1 != DS_JSON_EMPTY_ARRAY);
	CHECK(ds_json_strerror(e0) != NULL);
	if (e0 != DS_JSON_OK)
		CHECK(out0 == NULL && len0 == 0 && n0 == 0);
	if (e1 != DS_JSON_OK)
		CHECK(out1 == NULL && len1 == 0 && n1 == 0);

	/* The modes differ only in what they do with "[]". */
	if (e0 == DS_JSON_EMPTY_ARRAY)
		CHECK(e1 == DS_JSON_OK && n1 == 0);
	else
		CHECK(e0 == e1);

	if (e0 == DS_JSON_OK) {
		CHECK(n0 > 0);
		CHECK(len0 == len1 && n0 == n1 &&
		    memcmp(out0, out1, len0) == 0);
		check_output(size, out0, len0, n0);
	} else if (e1 == DS_JSON_OK)
		check_output(size, out1, len1, n1);

	free(out0);
	free(out1);
	return 0;
}
