/*
 * subs.h: what the subscription files of the HTTP side share (PROTOCOL 6,
 * 7). Calls run one way:
 *
 *   handlers.c -> subs_api.c -> subs_wake.c -> deliver.c -> webhook.c
 *                                                         -> keys.c
 *                                                         -> subs_json.c
 *
 * subs_api.c: routing of __ds, create/read/delete, explicit streams, JWKS.
 * subs_wake.c: webhook callback, pull-wake claim/ack/release.
 * deliver.c: the delivery thread of each worker (see the README).
 * webhook.c: URL checks (SSRF, PROTOCOL 12.8) and sending one webhook.
 * keys.c: the signing key, the token key, callback and claim tokens.
 * subs_json.c: JSON documents shared by answers and webhooks; errors.
 */
#ifndef DS_SUBS_H
#define DS_SUBS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fcgi-app/app.h"

#define DS_SUB_BODY_MAX	65536	/* largest __ds request body */
#define DS_SUB_TTL_DEFAULT 30000 /* lease_ttl_ms (PROTOCOL 6.2) */
#define DS_TOKEN_LIFE_MS (24LL * 3600 * 1000)

/* subs_api.c */
void	ds_subs_handle(struct ds_req *, const char *rest, size_t restlen);

/* subs_wake.c */
void	ds_subs_callback(struct ds_req *, const char *id, const char *op);

/* deliver.c */
int	ds_deliver_start(struct ds_store *, const struct ds_cfg *);
void	ds_deliver_kick(void);
void	ds_deliver_sub_added(void);

/* webhook.c */
enum ds_url_verdict { DS_URL_OK, DS_URL_BAD, DS_URL_REJECTED };
enum ds_url_verdict ds_webhook_url_check(const char *url, int loopback_ok,
	    const char **why);
int	ds_addr_allowed(const void *sa, int loopback_ok);
/*
 * Sends body to url, signed; 0 with *status and *done (the answer said
 * {"done": true}), or -1 when nothing was answered (logged).
 */
int	ds_webhook_send(const char *url, const char *body, size_t len,
	    int loopback_ok, long *status, int *done);

/* keys.c */
#define DS_KID_MAX 32
enum ds_token_kind { DS_TOKEN_CALLBACK = 1, DS_TOKEN_CLAIM = 2 };
enum ds_token_check { DS_TOKEN_OK, DS_TOKEN_BAD, DS_TOKEN_OLD };
int	ds_keys_load(struct ds_store *);
const char *ds_keys_kid(void);
#define DS_KEY_KEEP_MS (10LL * 60 * 1000)	/* a retired key's publication:
					   replay window 5 min, and more */
int	ds_keys_rotate(struct ds_store *, int64_t now_ms, int64_t keep_ms,
	    char newkid[DS_KID_MAX]);
char	*ds_keys_jwks(int64_t now_ms, size_t *len);
int	ds_keys_sign(const char *body, size_t len, int64_t t, char *hdr,
	    size_t hdrsz);
void	ds_token_make(uint64_t sid, uint64_t gen, enum ds_token_kind,
	    int64_t now_ms, char out[128]);
enum ds_token_check ds_token_check(const char *tok, enum ds_token_kind,
	    int64_t now_ms, uint64_t *sid, uint64_t *gen);

/* subs_json.c */
int	ds_sub_error(struct ds_req *, int status, const char *code,
	    const char *msg);
int	ds_sub_store_error(struct ds_req *, enum ds_err);
int	ds_json_answer(struct ds_req *, int status, json_t *);
json_t	*ds_links_json(const struct ds_sub_link *, size_t n, int wake);
int	ds_stream_path_ok(const char *p);

#endif /* DS_SUBS_H */
