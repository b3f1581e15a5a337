/*
 * keys.c: the server's two secrets, kept in the store so that they
 * survive restarts and every worker uses the same (PROTOCOL 6.5, 12.9):
 *
 *   the Ed25519 webhook signing key, published as a JWK Set; its kid is
 *   "ds_" and the first 16 characters of the base64url SHA-256 of the
 *   public key, so it is stable for the key's life;
 *
 *   the token key: callback and claim tokens are
 *   base64url(payload || HMAC-SHA-256(key, payload)), payload = sid,
 *   generation (8 bytes each), kind (1), expiry ms (8). A token names the
 *   subscription's internal sid, never reused, so a token of a deleted
 *   subscription fails even when the id is created again.
 *
 * Loaded once at start-up, before any thread serves: read-only after.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fcgi-app/log.h"
#include "fcgi-app/subs.h"

static unsigned char	sign_sk[crypto_sign_SECRETKEYBYTES];
static unsigned char	token_key[crypto_auth_hmacsha256_KEYBYTES];
static char		kid[DS_KID_MAX];

#define PAYLOAD	25
#define B64	sodium_base64_VARIANT_URLSAFE_NO_PADDING

int
ds_keys_load(struct ds_store *s)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES], tk[sizeof(token_key)];
	unsigned char h[crypto_hash_sha256_BYTES];
	char b64[sodium_base64_ENCODED_LEN(sizeof(h), B64)];
	size_t len;
	enum ds_err e;

	if (sodium_init() < 0)
		return -1;
	crypto_sign_keypair(pk, sk);
	len = sizeof(sk);
	if ((e = ds_store_secret(s, "webhook-ed25519", sk, sign_sk, &len)) !=
	    DS_OK || len != sizeof(sign_sk)) {
		ds_app_log("signing key: %s", ds_strerror(e));
		return -1;
	}
	randombytes_buf(tk, sizeof(tk));
	len = sizeof(tk);
	if ((e = ds_store_secret(s, "token-hmac", tk, token_key, &len)) !=
	    DS_OK || len != sizeof(token_key)) {
		ds_app_log("token key: %s", ds_strerror(e));
		return -1;
	}
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(tk, sizeof(tk));
	/* libsodium's secret key is seed || public key. */
	crypto_hash_sha256(h, sign_sk + 32, crypto_sign_PUBLICKEYBYTES);
	sodium_bin2base64(b64, sizeof(b64), h, sizeof(h), B64);
	snprintf(kid, sizeof(kid), "ds_%.16s", b64);
	return 0;
}

const char *
ds_keys_kid(void)
{
	return kid;
}

/* The JWK Set (PROTOCOL 6.5), malloc'd. NULL: no memory. */
char *
ds_keys_jwks(size_t *len)
{
	char x[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, B64)];
	char *s;
	json_t *doc;

	sodium_bin2base64(x, sizeof(x), sign_sk + 32,
	    crypto_sign_PUBLICKEYBYTES, B64);
	doc = json_pack("{s:[{s:s,s:s,s:s,s:s,s:s,s:s}]}", "keys",
	    "kty", "OKP", "crv", "Ed25519", "kid", kid, "use", "sig",
	    "alg", "EdDSA", "x", x);
	if (doc == NULL)
		return NULL;
	s = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (s)
		*len = strlen(s);
	return s;
}

/*
 * The Webhook-Signature value for body sent at unix time t (PROTOCOL 7.1):
 * Ed25519 over "<t>.<body>". Returns 0, or -1 when it does not fit or no
 * memory.
 */
int
ds_keys_sign(const char *body, size_t len, int64_t t, char *hdr,
    size_t hdrsz)
{
	unsigned char sig[crypto_sign_BYTES];
	char b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES, B64)];
	char ts[24];
	unsigned char *msg;
	size_t tl;
	int n;

	tl = (size_t)snprintf(ts, sizeof(ts), "%" PRId64 ".", t);
	if ((msg = malloc(tl + len)) == NULL)
		return -1;
	memcpy(msg, ts, tl);
	memcpy(msg + tl, body, len);
	crypto_sign_detached(sig, NULL, msg, tl + len, sign_sk);
	free(msg);
	sodium_bin2base64(b64, sizeof(b64), sig, sizeof(sig), B64);
	n = snprintf(hdr, hdrsz, "t=%" PRId64 ",kid=%s,ed25519=%s", t, kid,
	    b64);
	return n < 0 || (size_t)n >= hdrsz ? -1 : 0;
}

static void
put64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* A token for wake gen of subscription sid, valid DS_TOKEN_LIFE_MS. */
void
ds_token_make(uint64_t sid, uint64_t gen, enum ds_token_kind kind,
    int64_t now, char out[128])
{
	unsigned char t[PAYLOAD + crypto_auth_hmacsha256_BYTES];

	put64(t, sid);
	put64(t + 8, gen);
	t[16] = (unsigned char)kind;
	put64(t + 17, (uint64_t)(now + DS_TOKEN_LIFE_MS));
	crypto_auth_hmacsha256(t + PAYLOAD, t, PAYLOAD, token_key);
	sodium_bin2base64(out, 128, t, sizeof(t), B64);
}

/*
 * Checks tok (PROTOCOL 12.9): its MAC, in constant time, then its kind and
 * expiry. DS_TOKEN_OK with *sid and *gen; DS_TOKEN_BAD (malformed, forged,
 * other kind) or DS_TOKEN_OLD (expired).
 */
enum ds_token_check
ds_token_check(const char *tok, enum ds_token_kind kind, int64_t now,
    uint64_t *sid, uint64_t *gen)
{
	unsigned char t[PAYLOAD + crypto_auth_hmacsha256_BYTES];
	size_t n;

	if (strlen(tok) > 100 ||
	    sodium_base642bin(t, sizeof(t), tok, strlen(tok), NULL, &n,
	    NULL, B64) != 0 || n != sizeof(t))
		return DS_TOKEN_BAD;
	if (crypto_auth_hmacsha256_verify(t + PAYLOAD, t, PAYLOAD,
	    token_key) != 0 || t[16] != (unsigned char)kind)
		return DS_TOKEN_BAD;
	if ((int64_t)get64(t + 17) <= now)
		return DS_TOKEN_OLD;
	*sid = get64(t);
	*gen = get64(t + 8);
	return DS_TOKEN_OK;
}
