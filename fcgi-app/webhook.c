/*
 * webhook.c: where a webhook may go (PROTOCOL 6.2, 12.8) and sending one
 * (7.1).
 *
 * A URL is checked twice. When a subscription is created: https only,
 * except loopback under the development flag (--webhook-loopback); no user
 * info; a literal address, in any form the resolver accepts ("10.1",
 * "0x7f000001", "::ffff:10.0.0.1"), must be public; "localhost" names are
 * loopback. When sending: whatever a name resolves to, the address curl is
 * about to connect to must pass the same test (the open-socket callback
 * refuses it otherwise), so a name that points inside is refused too. No
 * proxy from the environment, no redirects, http(s) only, bounded times.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fcgi-app/log.h"
#include "fcgi-app/subs.h"

#define CONNECT_MS	5000
#define TOTAL_MS	10000
#define ANSWER_MAX	65536

/* Is the IPv4 address a (host order) one a webhook may reach? */
static int
v4_allowed(uint32_t a, int loopback_ok)
{
	if ((a >> 24) == 127)
		return loopback_ok;
	return !((a >> 24) == 0 ||			/* this network */
	    (a >> 24) == 10 ||				/* RFC 1918 */
	    (a & 0xffc00000u) == 0x64400000u ||		/* 100.64/10 CGN */
	    (a & 0xffff0000u) == 0xa9fe0000u ||		/* link-local,
							   metadata */
	    (a & 0xfff00000u) == 0xac100000u ||		/* 172.16/12 */
	    (a & 0xffffff00u) == 0xc0000000u ||		/* 192.0.0/24 */
	    (a & 0xffff0000u) == 0xc0a80000u ||		/* 192.168/16 */
	    (a & 0xfffe0000u) == 0xc6120000u ||		/* 198.18/15 */
	    (a >> 28) >= 14);				/* multicast,
							   reserved */
}

static int
v6_allowed(const unsigned char *b, int loopback_ok)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0xff, 0xff };
	static const unsigned char nat64[12] = { 0, 0x64, 0xff, 0x9b };
	static const unsigned char zero[16];
	uint32_t v4;

	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
	    (memcmp(b, zero, 12) == 0 && (b[12] | b[13]))) {
		/* IPv4-mapped, NAT64 or IPv4-compatible: the IPv4 rules. */
		v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
		    (uint32_t)b[14] << 8 | b[15];
		return v4_allowed(v4, loopback_ok);
	}
	if (memcmp(b, zero, 8) == 0 && b[8] == 0xff && b[9] == 0xff &&
	    b[10] == 0 && b[11] == 0) {
		/* IPv4-translated (::ffff:0:a.b.c.d): the IPv4 rules. */
		v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
		    (uint32_t)b[14] << 8 | b[15];
		return v4_allowed(v4, loopback_ok);
	}
	if (b[0] == 0x20 && b[1] == 0x02) {
		/* 6to4 (2002:a.b.c.d::/48): the embedded IPv4's rules. */
		v4 = (uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 |
		    (uint32_t)b[4] << 8 | b[5];
		return v4_allowed(v4, loopback_ok);
	}
	if (memcmp(b, zero, 15) == 0)
		return b[15] == 1 ? loopback_ok : 0;	/* ::1, :: */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
		return 0;	/* Teredo: it hides the address it reaches */
	return !((b[0] & 0xfe) == 0xfc ||		/* unique local */
	    (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||	/* link-local */
	    (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||	/* site-local */
	    b[0] == 0xff);				/* multicast */
}

/* May a webhook connect to the socket address sa? Nonzero if so. */
int
ds_addr_allowed(const void *sa, int loopback_ok)
{
	const struct sockaddr *s = sa;

	if (s->sa_family == AF_INET)
		return v4_allowed(ntohl(((const struct sockaddr_in *)sa)->
		    sin_addr.s_addr), loopback_ok);
	if (s->sa_family == AF_INET6)
		return v6_allowed(((const struct sockaddr_in6 *)sa)->
		    sin6_addr.s6_addr, loopback_ok);
	return 0;
}

/* "10.0.0.1.": a trailing dot, which resolvers take as the address. */
static int
v4_dotted(const char *h, size_t n, struct in_addr *a)
{
	char buf[256];

	if (n < 2 || n >= sizeof(buf) || h[n - 1] != '.')
		return 0;
	memcpy(buf, h, n - 1);
	buf[n - 1] = '\0';
	return inet_aton(buf, a) == 1;
}

static int
is_localhost(const char *h, size_t n)
{
	if (n > 0 && h[n - 1] == '.')
		n--;
	return (n == 9 && strncasecmp(h, "localhost", 9) == 0) ||
	    (n > 10 && strncasecmp(h + n - 10, ".localhost", 10) == 0);
}

/*
 * Checks a webhook URL (see the top of the file). DS_URL_OK; DS_URL_BAD
 * (not a URL we can send to) or DS_URL_REJECTED (a target refused for
 * safety), both with *why.
 */
enum ds_url_verdict
ds_webhook_url_check(const char *url, int loopback_ok, const char **why)
{
	char host[256];
	const char *p, *end, *hs, *he;
	struct in6_addr a6;
	struct in_addr a4;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	size_t hl;
	int https, loop = 0;

	*why = "webhook URL must be an absolute http(s) URL";
	for (p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return DS_URL_BAD;
	if (strlen(url) > DS_URL_MAX)
		return DS_URL_BAD;
	if (strncasecmp(url, "https://", 8) == 0)
		https = 1;
	else if (strncasecmp(url, "http://", 7) == 0)
		https = 0;
	else
		return DS_URL_BAD;
	hs = url + (https ? 8 : 7);
	end = hs + strcspn(hs, "/?#");
	if (memchr(hs, '@', (size_t)(end - hs)) || memchr(hs, '\\',
	    (size_t)(end - hs))) {
		*why = "webhook URL must not carry user information";
		return DS_URL_REJECTED;
	}
	if (*hs == '[') {
		if ((he = memchr(hs, ']', (size_t)(end - hs))) == NULL)
			return DS_URL_BAD;
		hs++;
		p = he + 1;
	} else {
		he = memchr(hs, ':', (size_t)(end - hs));
		if (he == NULL)
			he = end;
		p = he;
	}
	if (p < end) {	/* a port: digits, 1-65535 */
		if (*p != ':' || end - p < 2 || end - p > 6 ||
		    strspn(p + 1, "0123456789") < (size_t)(end - p - 1) ||
		    atoi(p + 1) < 1 || atoi(p + 1) > 65535)
			return DS_URL_BAD;
	}
	hl = (size_t)(he - hs);
	if (hl == 0 || hl >= sizeof(host))
		return DS_URL_BAD;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	*why = "webhook URL targets a private, loopback, link-local or "
	    "reserved address";
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET6, host, &a6) == 1) {
		if (url[https ? 8 : 7] != '[')
			return DS_URL_BAD;
		sin6.sin6_family = AF_INET6;
		sin6.sin6_addr = a6;
		if (!ds_addr_allowed(&sin6, 0))
			loop = ds_addr_allowed(&sin6, 1);
		if (!ds_addr_allowed(&sin6, 0) && !loop)
			return DS_URL_REJECTED;
	} else if (inet_aton(host, &a4) == 1 || v4_dotted(host, hl, &a4)) {
		/* inet_aton takes "10.1" and "0x7f.1": so does curl. */
		sin.sin_family = AF_INET;
		sin.sin_addr = a4;
		if (!ds_addr_allowed(&sin, 0))
			loop = ds_addr_allowed(&sin, 1);
		if (!ds_addr_allowed(&sin, 0) && !loop)
			return DS_URL_REJECTED;
	} else {
		if (strspn(host, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != hl)
			return DS_URL_BAD;
		loop = is_localhost(host, hl);
		if (strcasecmp(host, "metadata.google.internal") == 0 ||
		    strcasecmp(host, "metadata") == 0)
			return DS_URL_REJECTED;
	}
	if (loop && !loopback_ok) {
		*why = "loopback webhook URLs need the development flag "
		    "(ds-fcgi --webhook-loopback)";
		return DS_URL_REJECTED;
	}
	if (!https && !loop) {
		*why = "webhook URLs must use https";
		return DS_URL_REJECTED;
	}
	return DS_URL_OK;
}

struct answer {
	char	buf[ANSWER_MAX];
	size_t	len;
};

static size_t
on_data(char *p, size_t sz, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t k = sz * n;

	if (k > sizeof(a->buf) - a->len)
		return 0;	/* too long: stop, the status still counts */
	memcpy(a->buf + a->len, p, k);
	a->len += k;
	return k;
}

/* curl's open-socket callback: the address about to be connected to. */
static curl_socket_t
on_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	int loopback_ok = *(int *)arg;

	if (purpose != CURLSOCKTYPE_IPCXN ||
	    !ds_addr_allowed(&a->addr, loopback_ok)) {
		ds_app_log("webhook: refused to connect to a private, "
		    "loopback or reserved address");
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int
ds_webhook_send(const char *url, const char *body, size_t len,
    int loopback_ok, long *status, int *done)
{
	struct curl_slist *h = NULL, *nh;
	struct answer *ans;
	json_t *doc;
	CURL *c;
	char sig[256];
	int64_t now = ds_now_ms();
	CURLcode rc = CURLE_OUT_OF_MEMORY;

	*status = 0;
	*done = 0;
	if ((ans = malloc(sizeof(*ans))) == NULL)
		return -1;
	ans->len = 0;
	if (ds_keys_sign(body, len, now / 1000, sig + 19, sizeof(sig) - 19) ==
	    -1 || (c = curl_easy_init()) == NULL) {
		free(ans);
		return -1;
	}
	memcpy(sig, "Webhook-Signature: ", 19);
	if ((nh = curl_slist_append(h, "Content-Type: application/json")) ==
	    NULL || (h = nh, nh = curl_slist_append(h, sig)) == NULL ||
	    (h = nh, nh = curl_slist_append(h, "Expect:")) == NULL)
		goto out;
	h = nh;
	if (curl_easy_setopt(c, CURLOPT_URL, url) ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") ||
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) ||
	    curl_easy_setopt(c, CURLOPT_PROXY, "") ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_MS) ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)TOTAL_MS) ||
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h) ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)len) ||
	    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open) ||
	    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &loopback_ok) ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data) ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, ans) ||
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "ds-fcgi webhook"))
		goto out;
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (rc == CURLE_WRITE_ERROR && *status >= 200)
		rc = CURLE_OK;		/* a long answer is still an answer */
	if (rc == CURLE_OK && *status >= 200 && *status < 300 &&
	    (doc = json_loadb(ans->buf, ans->len, 0, NULL)) != NULL) {
		*done = json_is_true(json_object_get(doc, "done"));
		json_decref(doc);
	}
out:
	if (rc != CURLE_OK)
		ds_app_log("webhook %s: %s", url, curl_easy_strerror(rc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	free(ans);
	return rc == CURLE_OK ? 0 : -1;
}
