/*
 * keys.c: the server's two secrets, kept in the store so that they
 * survive restarts and every worker uses the same (PROTOCOL 6.5, 12.9):
 *
 *   the Ed25519 webhook signing key, published as a JWK Set; its kid is
 *   "ds_" and the first 16 characters of the base64url SHA-256 of the
 *   public key, so it is stable for the key's life. ds-fcgi
 *   --rotate-webhook-key makes a new one; the old public key stays in
 *   the JWK Set for DS_KEY_KEEP_MS more, past the receivers' replay window
 *   (PROTOCOL 6.5), as one of at most RETIRED_MAX retired keys;
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

#define PAYLOAD		25
#define B64		sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define KEY_NAME	"webhook-ed25519"
#define RETIRED_NAME	"webhook-ed25519-retired"
#define RETIRED_MAX	4

/* A retired public key, stored as-is, published until until_ms. */
struct retired {
	unsigned char	pk[crypto_sign_PUBLICKEYBYTES];
	int64_t		until_ms;
};

static unsigned char	sign_sk[crypto_sign_SECRETKEYBYTES];
static unsigned char	token_key[crypto_auth_hmacsha256_KEYBYTES];
static char		kid[DS_KID_MAX];
static struct retired	retired[RETIRED_MAX];
static char		retired_kid[RETIRED_MAX][DS_KID_MAX];
static size_t		nretired;

static void
kid_of(const unsigned char *pk, char out[DS_KID_MAX])
{
	unsigned char h[crypto_hash_sha256_BYTES];
	char b64[sodium_base64_ENCODED_LEN(sizeof(h), B64)];

	crypto_hash_sha256(h, pk, crypto_sign_PUBLICKEYBYTES);
	sodium_bin2base64(b64, sizeof(b64), h, sizeof(h), B64);
	snprintf(out, DS_KID_MAX, "ds_%.16s", b64);
}

int
ds_keys_load(struct ds_store *s)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES], tk[sizeof(token_key)];
	size_t len, i;
	enum ds_err e;

	if (sodium_init() < 0)
		return -1;
	crypto_sign_keypair(pk, sk);
	len = sizeof(sk);
	if ((e = ds_store_secret(s, KEY_NAME, sk, sign_sk, &len)) !=
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
	kid_of(sign_sk + 32, kid);
	len = sizeof(retired);
	e = ds_store_secret_get(s, RETIRED_NAME, retired, &len);
	if (e != DS_OK && e != DS_ENOTFOUND) {
		ds_app_log("retired signing keys: %s", ds_strerror(e));
		return -1;
	}
	nretired = e == DS_OK ? len / sizeof(retired[0]) : 0;
	for (i = 0; i < nretired; i++)
		kid_of(retired[i].pk, retired_kid[i]);
	return 0;
}

/*
 * ds-fcgi --rotate-webhook-key: retires the signing key (published until
 * now + keep_ms), dropping retired keys past their time and the oldest
 * beyond RETIRED_MAX, then stores a new one. Workers sign with the key
 * they loaded at start: restart them after. Returns 0 with the new kid
 * in newkid, or -1 (logged).
 */
int
ds_keys_rotate(struct ds_store *s, int64_t now, int64_t keep_ms,
    char newkid[DS_KID_MAX])
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];
	struct retired keep[RETIRED_MAX];
	size_t i, n = 0;
	enum ds_err e;

	if (ds_keys_load(s) == -1)
		return -1;
	for (i = 0; i < nretired; i++)
		if (retired[i].until_ms > now)
			keep[n++] = retired[i];
	if (n == RETIRED_MAX) {
		memmove(keep, keep + 1, (RETIRED_MAX - 1) * sizeof(keep[0]));
		n--;
	}
	memcpy(keep[n].pk, sign_sk + 32, sizeof(keep[n].pk));
	keep[n++].until_ms = now + keep_ms;
	crypto_sign_keypair(pk, sk);
	if ((e = ds_store_secret_set(s, RETIRED_NAME, keep,
	    n * sizeof(keep[0]))) != DS_OK ||
	    (e = ds_store_secret_set(s, KEY_NAME, sk, sizeof(sk))) != DS_OK) {
		ds_app_log("rotating the signing key: %s", ds_strerror(e));
		sodium_memzero(sk, sizeof(sk));
		return -1;
	}
	sodium_memzero(sk, sizeof(sk));
	if (ds_keys_load(s) == -1)
		return -1;
	memcpy(newkid, kid, DS_KID_MAX);
	return 0;
}

const char *
ds_keys_kid(void)
{
	return kid;
}

static json_t *
jwk(const unsigned char *pk, const char *k)
{
	char x[sodium_base64_ENCODED_LEN(crypto_sign_PUBLICKEYBYTES, B64)];

	sodium_bin2base64(x, sizeof(x), pk, crypto_sign_PUBLICKEYBYTES, B64);
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "kty", "OKP", "crv",
	    "Ed25519", "kid", k, "use", "sig", "alg", "EdDSA", "x", x);
}

/*
 * The JWK Set (PROTOCOL 6.5) at time now: the signing key and the retired
 * ones still published. malloc'd; NULL: no memory.
 */
char *
ds_keys_jwks(int64_t now, size_t *len)
{
	json_t *keys, *doc;
	char *s;
	size_t i;

	if ((keys = json_array()) == NULL)
		return NULL;
	if (json_array_append_new(keys, jwk(sign_sk + 32, kid)) == -1)
		goto fail;
	for (i = 0; i < nretired; i++)
		if (retired[i].until_ms > now &&
		    json_array_append_new(keys, jwk(retired[i].pk,
		    retired_kid[i])) == -1)
			goto fail;
	if ((doc = json_pack("{s:o}", "keys", keys)) == NULL)
		return NULL;
	s = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (s)
		*len = strlen(s);
	return s;
fail:
	json_decref(keys);
	return NULL;
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
