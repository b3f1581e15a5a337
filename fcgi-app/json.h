/*
 * json.h: the JSON-mode message splitter (PROTOCOL 9.1).
 *
 * jansson validates documents but cannot hand back an element's original
 * text, and it rejects integers beyond 64 bits that are valid JSON. Stored
 * messages must be the client's values, not a re-serialisation, so this is a
 * small strict RFC 8259 scanner that validates and splits in one pass.
 */
#ifndef DS_JSON_H
#define DS_JSON_H

#include <stddef.h>

enum ds_json_err {
	DS_JSON_OK = 0,
	DS_JSON_INVALID,	/* not one valid JSON text (RFC 8259, UTF-8) */
	DS_JSON_EMPTY_ARRAY,	/* "[]" where it is not allowed */
	DS_JSON_TOO_DEEP,	/* nesting above DS_JSON_MAX_DEPTH */
	DS_JSON_NOMEM
};

#define DS_JSON_MAX_DEPTH 512

/*
 * Validates buf[0..len) as exactly one JSON value surrounded by optional
 * whitespace. If the value is an array, each element is one message (one
 * level of flattening: "[[1,2],[3]]" gives "[1,2]" and "[3]"); otherwise the
 * value itself is the one message.
 *
 * The messages are written to a malloc'd buffer *out, each as its original
 * text with insignificant whitespace removed (so no raw newline can remain)
 * and followed by one '\n'. *outlen is the total length, *nmsg the count.
 * The caller frees *out. On any error *out is NULL.
 *
 * An empty array gives DS_JSON_EMPTY_ARRAY unless allow_empty is set, in
 * which case it succeeds with zero messages (PUT, PROTOCOL 9.1.3).
 */
enum ds_json_err ds_json_split(const char *buf, size_t len, int allow_empty,
	    char **out, size_t *outlen, size_t *nmsg);

const char	*ds_json_strerror(enum ds_json_err);

/*
 * Is rec[0..len) one stored JSON-mode record: a single valid JSON value?
 * (ds_store_verify()'s check for message streams.) Returns nonzero if so.
 */
int		 ds_json_record_ok(const char *rec, size_t len);

/*
 * Turns stored records (each message followed by '\n', as ds_json_split()
 * writes them) into one JSON array text (PROTOCOL 9.1.5): "[]" for none.
 * Returns a malloc'd buffer (caller frees) and its length, or NULL.
 */
char		*ds_json_array(const char *records, size_t len, size_t *outlen);

#endif /* DS_JSON_H */
