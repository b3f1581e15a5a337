/*
 * subs_test.c: unit tests for subscriptions: globs (store/sublinks.c),
 * webhook URL and address checks (fcgi-app/webhook.c), tokens and
 * signatures (fcgi-app/keys.c), and the store's wake state machine
 * (store/subs.c, store/subs_wake.c) driven directly with chosen clocks.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fcgi-app/subs.h"
#include "store/store_int.h"
#include "t/unit/store_util.h"

static void
test_glob(void)
{
	static const struct { const char *g, *p; int want; } c[] = {
		{ "events/*", "events/a", 1 },
		{ "events/*", "events/a/b", 0 },
		{ "events/*", "events", 0 },
		{ "events/*", "other/a", 0 },
		{ "events/**", "events/a/b/c", 1 },
		{ "events/**", "events/a", 1 },
		{ "events/**/x", "events/x", 1 },
		{ "events/**/x", "events/a/b/x", 1 },
		{ "events/**/x", "events/a/b/y", 0 },
		{ "**", "a/b", 1 },
		{ "*/b", "a/b", 1 },
		{ "a*c/d", "abbc/d", 1 },
		{ "a*c/d", "ab/c/d", 0 },
		{ "a", "a", 1 },
		{ "a", "ab", 0 },
		{ "*", "a/b", 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		is_int(ds_glob_match(c[i].g, c[i].p), c[i].want,
		    "glob \"%s\" on \"%s\"", c[i].g, c[i].p);
}

static void
test_urls(void)
{
	static const struct { const char *u; int dev; enum ds_url_verdict want; }
	    c[] = {
		{ "https://example.com/hook", 0, DS_URL_OK },
		{ "https://example.com:8443/h?x=1", 0, DS_URL_OK },
		{ "https://[2001:db8::1]/", 0, DS_URL_OK },
		{ "https://8.8.8.8/", 0, DS_URL_OK },
		{ "http://example.com/", 0, DS_URL_REJECTED },
		{ "http://127.0.0.1:9/", 0, DS_URL_REJECTED },
		{ "http://127.0.0.1:9/", 1, DS_URL_OK },
		{ "http://localhost/", 1, DS_URL_OK },
		{ "http://[::1]:8/", 1, DS_URL_OK },
		{ "http://10.0.0.1/", 1, DS_URL_REJECTED },
		{ "https://169.254.169.254/", 1, DS_URL_REJECTED },
		{ "https://10.1/", 0, DS_URL_REJECTED },
		{ "https://0x7f000001/", 0, DS_URL_REJECTED },
		{ "https://[::ffff:192.168.0.1]/", 0, DS_URL_REJECTED },
		{ "https://192.168.0.1./", 0, DS_URL_REJECTED },
		{ "https://example.com./", 0, DS_URL_OK },
		{ "https://[::ffff:0:a00:1]/", 0, DS_URL_REJECTED },
		{ "https://[2002:a9fe:a9fe::]/", 0, DS_URL_REJECTED },
		{ "https://[2002:808:808::]/", 0, DS_URL_OK },
		{ "https://[2001:0:4136:e378::1]/", 0, DS_URL_REJECTED },
		{ "https://[fd12::1]/", 0, DS_URL_REJECTED },
		{ "https://[fe80::1]/", 0, DS_URL_REJECTED },
		{ "https://a@example.com/", 0, DS_URL_REJECTED },
		{ "ftp://example.com/", 0, DS_URL_BAD },
		{ "https://ex ample.com/", 0, DS_URL_BAD },
		{ "https:///x", 0, DS_URL_BAD },
		{ "https://example.com:0/", 0, DS_URL_BAD },
		{ "https://::1/", 0, DS_URL_BAD },
	};
	const char *why;
	size_t i;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		is_int(ds_webhook_url_check(c[i].u, c[i].dev, &why), c[i].want,
		    "URL %s%s", c[i].u, c[i].dev ? " (development)" : "");
}

static void
test_addrs(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	inet_pton(AF_INET, "93.184.216.34", &sin.sin_addr);
	ok(ds_addr_allowed(&sin, 0), "a public IPv4 address");
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	ok(!ds_addr_allowed(&sin, 0), "loopback refused");
	ok(ds_addr_allowed(&sin, 1), "loopback under the development flag");
	inet_pton(AF_INET, "172.31.255.255", &sin.sin_addr);
	ok(!ds_addr_allowed(&sin, 1), "172.16/12 refused even then");
	inet_pton(AF_INET6, "::ffff:169.254.169.254", &sin6.sin6_addr);
	ok(!ds_addr_allowed(&sin6, 1), "IPv4-mapped metadata address refused");
	inet_pton(AF_INET6, "2606:2800:220:1::1", &sin6.sin6_addr);
	ok(ds_addr_allowed(&sin6, 0), "a public IPv6 address");
}

static void
test_tokens(struct ds_store *s)
{
	char tok[128], sig[256];
	uint64_t sid, gen;
	size_t len;
	char *jwks;

	must(ds_keys_load(s) == 0, "keys load");
	ds_token_make(7, 9, DS_TOKEN_CLAIM, 1000, tok);
	is_int(ds_token_check(tok, DS_TOKEN_CLAIM, 2000, &sid, &gen),
	    DS_TOKEN_OK, "a token checks");
	is_int(sid, 7, "  its sid");
	is_int(gen, 9, "  its generation");
	is_int(ds_token_check(tok, DS_TOKEN_CALLBACK, 2000, &sid, &gen),
	    DS_TOKEN_BAD, "a claim token is no callback token");
	is_int(ds_token_check(tok, DS_TOKEN_CLAIM, 1000 + DS_TOKEN_LIFE_MS,
	    &sid, &gen), DS_TOKEN_OLD, "expired");
	tok[3] = tok[3] == 'A' ? 'B' : 'A';
	is_int(ds_token_check(tok, DS_TOKEN_CLAIM, 2000, &sid, &gen),
	    DS_TOKEN_BAD, "a forged token");
	is_int(ds_token_check("", DS_TOKEN_CLAIM, 2000, &sid, &gen),
	    DS_TOKEN_BAD, "an empty token");
	ok(ds_keys_sign("{}", 2, 1700000000, sig, sizeof(sig)) == 0, "signs");
	ok(strncmp(sig, "t=1700000000,kid=ds_", 20) == 0, "  header: %s", sig);
	ok((jwks = ds_keys_jwks(1000, &len)) != NULL &&
	    strstr(jwks, ds_keys_kid()), "the JWKS names the kid");
	free(jwks);
	{
		char old[DS_KID_MAX], nk[DS_KID_MAX];

		snprintf(old, sizeof(old), "%s", ds_keys_kid());
		ok(ds_keys_rotate(s, 1000, 5000, nk) == 0, "rotate");
		ok(strcmp(nk, old) != 0 && strcmp(ds_keys_kid(), nk) == 0,
		    "  a new kid signs");
		jwks = ds_keys_jwks(5999, &len);
		ok(jwks && strstr(jwks, old) && strstr(jwks, nk),
		    "  both published until the old one's time");
		free(jwks);
		jwks = ds_keys_jwks(6000, &len);
		ok(jwks && !strstr(jwks, old) && strstr(jwks, nk),
		    "  then only the new one");
		free(jwks);
		ds_token_make(7, 9, DS_TOKEN_CLAIM, 1000, tok);
		ok(ds_token_check(tok, DS_TOKEN_CLAIM, 2000, &sid, &gen) ==
		    DS_TOKEN_OK, "  tokens are not touched");
	}
}

static struct ds_sub *
new_sub(int type, const char *pattern)
{
	struct ds_sub *sub = calloc(1, sizeof(*sub));

	must(sub != NULL, "calloc");
	sub->type = (uint32_t)type;
	sub->lease_ttl_ms = 1000;
	snprintf(sub->pattern, sizeof(sub->pattern), "%s", pattern);
	snprintf(sub->wake_stream, sizeof(sub->wake_stream), "wake");
	snprintf(sub->url, sizeof(sub->url), "https://example.com/");
	return sub;
}

/* The webhook state machine: issue once, expire, retry schedule, ack. */
static void
test_webhook_states(void)
{
	struct ds_store *s = store_begin("subs", "webhook");
	struct ds_sub *sub = new_sub(DS_SUB_WEBHOOK, "ev/*"), out;
	struct ds_sub_link *l;
	struct ds_sub_fence f;
	struct ds_create c;
	struct ds_stream_info info;
	struct ds_append_res res;
	char wake[DS_WAKEID_LEN + 1];
	size_t n;
	uint64_t sid, gen;
	int64_t due;
	int issued, pending;

	memset(&c, 0, sizeof(c));
	must_ds(ds_sub_create(s, "w", sub, NULL, 0, &out));
	c.body = "abc";
	c.len = 3;
	must_ds(ds_store_create(s, "ev/a", &c, 1000, &info));
	must_ds(ds_sub_step(s, "w", 1000, 1, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.generation == 1 && n == 1 && l[0].tail == 3 &&
	    l[0].acked == 0, "the create's bytes are pending: wake 1 issued");
	free(l);
	must_ds(ds_sub_step(s, "w", 1001, 2, 100, &issued, &due, &out, &l,
	    &n));
	ok(!issued, "another process steps: nothing issued twice");
	is_int(due, 2000, "  due when the lease ends");
	must_ds(ds_sub_sent(s, "w", 1, out.wake_id, 0, 500, NULL, 0, 1010,
	    &pending));
	must_ds(ds_sub_step(s, "w", 1200, 2, 100, &issued, &due, &out, &l,
	    &n));
	ok(!issued && due == 1510, "failed: no wake before the retry is due");
	ok(out.flags & DS_SUB_F_FAILED, "  status failed");
	must_ds(ds_sub_step(s, "w", 1510, 2, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.generation == 2 && out.attempts == 1,
	    "the retry: generation 2, after one failure");
	must_ds(ds_sub_sent(s, "w", 2, out.wake_id, 1, 0, l, n, 1520,
	    &pending));
	free(l);
	memset(&f, 0, sizeof(f));
	f.sid = out.sid;
	f.tgen = f.gen = 1;
	f.wake_id = out.wake_id;
	is_int(ds_sub_ack(s, "w", &f, NULL, 0, 1530, &pending), DS_EFENCED,
	    "a token of generation 1 is fenced");
	f.tgen = f.gen = 2;
	f.sid = out.sid + 1;
	is_int(ds_sub_ack(s, "w", &f, NULL, 0, 1530, &pending),
	    DS_ESTALE_TOKEN, "a token of another sid");
	f.sid = out.sid;
	f.pull = 1;
	is_int(ds_sub_ack(s, "w", &f, NULL, 0, 1530, &pending), DS_ESUBTYPE,
	    "ack is for pull-wake");
	f.pull = 0;
	must_ds(append(s, "ev/a", "de", 0, NULL, NULL, &res));
	f.done = 1;
	must_ds(ds_sub_ack(s, "w", &f, &(struct ds_sub_ack){ "ev/a", 3 }, 1,
	    1540, &pending));
	ok(pending, "done, with data past the ack: next_wake");
	must_ds(ds_sub_step(s, "w", 1550, 2, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.generation == 3 && l[0].acked == 3 && l[0].tail == 5,
	    "generation 3 for the rest");
	must_ds(ds_sub_sent(s, "w", 3, out.wake_id, 2, 0, l, n, 1560,
	    &pending));
	free(l);
	ok(!pending, "the answer done acked the snapshot");
	must_ds(ds_sub_step(s, "w", 99999, 2, 100, &issued, &due, &out, &l,
	    &n));
	ok(!issued && due == 0, "idle: nothing due");
	sid = out.sid;
	gen = out.generation;
	snprintf(wake, sizeof(wake), "%s", out.wake_id);
	must_ds(ds_sub_delete(s, "w"));
	is_int(ds_sub_get(s, "w", &out, NULL, NULL), DS_ENOTFOUND,
	    "deleted: not found");
	{
		MDB_txn *txn;
		MDB_val k = { 1, (char []){ "w" } }, v;

		must(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0,
		    "txn");
		is_int(mdb_get(txn, s->subs, &k, &v), MDB_NOTFOUND,
		    "no tombstone: the record is gone");
		mdb_txn_abort(txn);
	}
	is_int(ds_sub_sent(s, "w", gen, wake, 2, 0, NULL, 0, 99999,
	    &pending), DS_OK, "a webhook answer after the delete records "
	    "nothing");
	must_ds(ds_sub_create(s, "w", sub, NULL, 0, &out));
	ok(out.sid != sid, "created again under its id: a new sid");
	free(sub);
	store_end(s);
}

/* Pull-wake: claim, lease, expiry, release. */
static void
test_pull_states(void)
{
	struct ds_store *s = store_begin("subs", "pull");
	struct ds_sub *sub = new_sub(DS_SUB_PULL, ""), out;
	struct ds_sub_link *l;
	struct ds_sub_fence f;
	struct ds_create c;
	struct ds_stream_info info;
	const char *streams[] = { "x/a" };
	size_t n;
	int64_t due;
	int issued, pending;

	memset(&c, 0, sizeof(c));
	must_ds(ds_sub_create(s, "p", sub, streams, 1, &out));
	is_int(ds_sub_claim(s, "p", "w1", 1000, &out, &l, &n), DS_ENOWORK,
	    "nothing pending: no claim");
	c.body = "abc";
	c.len = 3;
	must_ds(ds_store_create(s, "x/a", &c, 1000, &info));
	must_ds(ds_sub_step(s, "p", 1000, 1, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.event_due && out.generation == 1,
	    "wake 1 with its event due");
	free(l);
	must_ds(ds_sub_event_written(s, "p", 1));
	must_ds(ds_sub_step(s, "p", 1001, 1, 100, &issued, &due, &out, &l,
	    &n));
	ok(!issued, "written: nothing to do until claimed");
	must_ds(ds_sub_claim(s, "p", "w1", 1100, &out, &l, &n));
	free(l);
	is_int(ds_sub_claim(s, "p", "w2", 1200, &out, &l, &n), DS_ECLAIMED,
	    "a second claim within the lease");
	is_str(out.holder, "w1", "  holder w1");
	memset(&f, 0, sizeof(f));
	f.sid = out.sid;
	f.tgen = f.gen = out.generation;
	f.wake_id = out.wake_id;
	f.pull = 1;
	is_int(ds_sub_ack(s, "p", &f, &(struct ds_sub_ack){ "x/a", 4 }, 1,
	    1300, &pending), DS_EACKOFFSET, "an ack past the tail");
	is_int(ds_sub_ack(s, "p", &f, &(struct ds_sub_ack){ "x/b", 1 }, 1,
	    1300, &pending), DS_ENOTLINKED, "an ack of a stream not linked");
	must_ds(ds_sub_ack(s, "p", &f, NULL, 0, 1900, &pending));
	is_int(ds_sub_claim(s, "p", "w2", 2500, &out, &l, &n), DS_ECLAIMED,
	    "the heartbeat at 1900 holds the lease at 2500");
	must_ds(ds_sub_step(s, "p", 2901, 1, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.generation == 2 && !out.holder[0],
	    "the lease ran out: wake 2, holder cleared");
	free(l);
	is_int(ds_sub_ack(s, "p", &f, NULL, 0, 2950, &pending), DS_EFENCED,
	    "the old claim is fenced");
	must_ds(ds_sub_claim(s, "p", "w2", 3000, &out, &l, &n));
	free(l);
	f.tgen = f.gen = out.generation;
	f.wake_id = out.wake_id;
	f.release = 1;
	must_ds(ds_sub_ack(s, "p", &f, NULL, 0, 3100, &pending));
	ok(pending, "released with work left");
	must_ds(ds_sub_step(s, "p", 3200, 1, 100, &issued, &due, &out, &l,
	    &n));
	ok(issued && out.generation == 3, "woken again: generation 3");
	free(l);
	free(sub);
	store_end(s);
}

/*
 * A subscription holds at most DS_SUB_LINKS_MAX streams by name: a request
 * that would pass it links none of its streams, and streams already linked
 * do not count again.
 */
static void
test_link_cap(void)
{
	struct ds_store *s = store_begin("subs", "linkcap");
	struct ds_sub *sub = new_sub(DS_SUB_PULL, ""), out;
	const char *one[] = { "cap/00000" }, *batch[DS_SUB_STREAMS_MAX];
	char names[DS_SUB_STREAMS_MAX][16];
	struct ds_sub_link *l;
	MDB_txn *txn;
	size_t i, n, k, at = 1;
	enum ds_err e = DS_OK;

	must_ds(ds_sub_create(s, "cap", sub, one, 1, &out));
	while (at < DS_SUB_LINKS_MAX && e == DS_OK) {
		for (k = 0; k < DS_SUB_STREAMS_MAX && at + k < DS_SUB_LINKS_MAX;
		    k++) {
			snprintf(names[k], sizeof(names[k]), "cap/%05zu", at + k);
			batch[k] = names[k];
		}
		e = ds_sub_link_add(s, "cap", batch, k);
		at += k;
	}
	is_int(e, DS_OK, "10000 streams linked by name, 256 at a time");
	/* Two already linked and one new: the new one is one too many. */
	batch[0] = "cap/00000";
	batch[1] = "cap/09999";
	batch[2] = "cap/10000";
	is_int(ds_sub_link_add(s, "cap", batch, 3), DS_ELINKS,
	    "the 10001st is refused");
	is_int(ds_sub_link_add(s, "cap", batch, 2), DS_OK,
	    "linking streams already linked is no change");
	must(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0, "txn");
	must_ds(ds_sub_links(s, txn, out.sid, &l, &n));
	mdb_txn_abort(txn);
	for (i = 0, k = 0; i < n; i++)
		k += strcmp(l[i].path, "cap/10000") == 0;
	ok(n == DS_SUB_LINKS_MAX && k == 0,
	    "the refused request linked nothing (%zu links)", n);
	free(l);
	free(sub);
	store_end(s);
}

int
main(void)
{
	struct ds_store *s;

	tap_seed();
	test_glob();
	test_urls();
	test_addrs();
	s = store_begin("subs", "keys");
	test_tokens(s);
	store_end(s);
	test_webhook_states();
	test_pull_states();
	test_link_cap();
	return done_testing();
}
