#!/usr/bin/perl
# Webhook subscriptions over HTTP against the real stack (PROTOCOL 6, 7.1, 12.9, 12.10):
#  - a receiver in this test (t/lib/webhook-receiver.mjs) verifies every Webhook-Signature
#    against the JWK Set the server publishes;
#  - the wake's body (subscription, wake id, generation, snapshot, callback URL and token);
#  - the callback: tokens only from Authorization, forged ones 401, heartbeats extend, done
#    ends the wake, a stale wake is 409 FENCED;
#  - a receiver that fails three times gets retries at growing intervals (ds-fcgi
#    --webhook-retry-base 300: 300, 600, 1200 ms, each +-20%), the subscription shows
#    "failed" meanwhile, and the snapshot's {"done": true} answer acks it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Stack;
use Receiver;

my $s = Stack->start(workers => 2, threads => 8, args => [ '--', '--webhook-retry-base', 300 ]);
my $rcv = Receiver->start($s);
my $J = { 'Content-Type' => 'application/json' };
my $base = $s->base . '/v1/stream';

sub doc { my $r = shift; my $d = eval { decode_json($r->{content}) }; return $d // {} }
sub sub_get { doc($s->req(GET => "__ds/subscriptions/$_[0]")) }
sub post_cb {
	my ($id, $tok, $body, $extra) = @_;
	return $s->req(POST => "__ds/subscriptions/$id/callback",
		{ %$J, ($tok ? (Authorization => "Bearer $tok") : ()), %{ $extra // {} } },
		encode_json($body));
}

my $cfg = { type => 'webhook', pattern => 'ev/*', webhook => { url => $rcv->url },
	lease_ttl_ms => 30000, description => 'webhook test' };
my $r = $s->req(PUT => '__ds/subscriptions/hooks', $J, encode_json($cfg));
is($r->{status}, 201, 'subscription created');
my $kid = doc($r)->{webhook}{signing}{kid};
like($kid, qr/^ds_/, "kid $kid");
is(doc($r)->{webhook}{signing}{jwks_url}, "$base/__ds/jwks.json", 'jwks_url names this server');
$r = $s->req(GET => '__ds/jwks.json');
is($r->{status}, 200, 'JWKS served');
like($r->{headers}{'content-type'}, qr{^application/jwk-set\+json}, '  as application/jwk-set+json');
like($r->{headers}{'cache-control'} // '', qr/max-age=\d+/, '  cacheable');

subtest 'a wake: signed, with its snapshot, callback URL and token' => sub {
	$s->must(201, PUT => 'ev/one', $J, '{"n":1}');
	my $w = $rcv->next(5) or return fail('no webhook within 5 s');
	ok($w->{sig_ok}, 'signature verifies against the published JWKS') or diag($w->{sig_why});
	like($w->{signature}, qr/^t=\d+,kid=\Q$kid\E,ed25519=[A-Za-z0-9_-]+$/, 'header format');
	my $b = $w->{body};
	is($b->{subscription_id}, 'hooks', 'subscription_id');
	like($b->{wake_id}, qr/^w_\w+$/, 'wake_id');
	is($b->{generation}, 1, 'generation 1');
	is($b->{callback_url}, "$base/__ds/subscriptions/hooks/callback", 'callback_url');
	my ($st) = grep { $_->{path} eq 'ev/one' } @{ $b->{streams} };
	ok($st && $st->{has_pending}, 'ev/one has pending data') or return;
	is($st->{acked_offset}, '0000000000000000_0000000000000000', 'linked at 0 by its create');

	my $tok = $b->{callback_token};
	my $ack = { wake_id => $b->{wake_id}, generation => $b->{generation},
		acks => [ { stream => 'ev/one', offset => $st->{tail_offset} } ] };
	$r = post_cb('hooks', undef, $ack);
	is($r->{status}, 401, 'no Authorization: 401');
	is(doc($r)->{error}{code}, 'TOKEN_INVALID', '  TOKEN_INVALID');
	(my $forged = $tok) =~ s/^(.)/$1 eq 'A' ? 'B' : 'A'/e;
	$r = post_cb('hooks', $forged, $ack);
	is($r->{status}, 401, 'forged token: 401');
	$r = $s->req(POST => "__ds/subscriptions/hooks/callback?token=$tok", $J, encode_json($ack));
	is($r->{status}, 401, 'a token in the query is not taken');
	$r = post_cb('hooks', $tok, { %$ack, generation => 7 });
	is($r->{status}, 409, 'another generation: 409');
	is(doc($r)->{error}{code}, 'FENCED', '  FENCED');
	is(sub_get('hooks')->{streams}[0]{acked_offset}, '0000000000000000_0000000000000000',
		'nothing acked by any of those');

	$r = post_cb('hooks', $tok, $ack);
	is($r->{status}, 200, 'heartbeat with acks: 200');
	is_deeply(doc($r), { ok => JSON::PP::true, next_wake => JSON::PP::false }, '  {ok, next_wake}');
	is(sub_get('hooks')->{streams}[0]{acked_offset}, $st->{tail_offset}, 'acked offset stored');
	$r = post_cb('hooks', $tok, { %$ack, done => JSON::PP::true });
	is($r->{status}, 200, 'done: 200');
	$r = post_cb('hooks', $tok, { %$ack, done => JSON::PP::true });
	is($r->{status}, 409, 'the same again: the wake is over, 409');
	is(doc($r)->{error}{code}, 'FENCED', '  FENCED');
	is($rcv->next(1), undef, 'no further wake: nothing pending');
};

subtest 'three failures, then retries at growing intervals' => sub {
	$rcv->answer(500, {}) for 1 .. 3;
	$rcv->answer(200, { done => JSON::PP::true });
	my $r2 = $s->req(POST => 'ev/one', $J, '{"n":2}');
	is($r2->{status}, 204, 'appended');
	my @w;
	for (1 .. 4) {
		my $w = $rcv->next(10) or last;
		push @w, $w;
		next unless $_ == 1;
		# The worker records the failure just after the receiver answered.
		my $st = '';
		for (1 .. 40) { last if ($st = sub_get('hooks')->{status}) eq 'failed'; sleep 0.01 }
		is($st, 'failed', 'status failed after the first failure');
	}
	is(scalar @w, 4, 'four attempts') or return;
	ok(!(grep { !$_->{sig_ok} } @w), 'every attempt signed');
	my @gen = map { $_->{body}{generation} } @w;
	ok($gen[0] < $gen[1] && $gen[1] < $gen[2] && $gen[2] < $gen[3],
		"each attempt a new generation (@gen): none is delivered twice");
	my @d = map { $w[$_]{at_ms} - $w[$_ - 1]{at_ms} } 1 .. 3;
	note("intervals: @d ms");
	my $b = 300;
	for my $i (0 .. 2) {
		my $want = $b * 2**$i;
		cmp_ok($d[$i], '>=', 0.8 * $want - 30, "retry " . ($i + 1) . " after >= 80% of $want ms");
		cmp_ok($d[$i], '<=', 1.2 * $want + 400, "retry " . ($i + 1) . " after <= 120% of $want ms (+ slack)");
	}
	ok($d[0] < $d[1] && $d[1] < $d[2], 'intervals grow');
	my $tail = $r2->{headers}{'stream-next-offset'};
	my $ok;
	for (1 .. 40) {
		my $g = sub_get('hooks');
		$ok = $g->{status} eq 'active' && $g->{streams}[0]{acked_offset} eq $tail;
		last if $ok;
		sleep 0.05;
	}
	ok($ok, 'the answer {"done": true} acked the snapshot; status active again');
};

subtest 'DELETE tombstones: later callbacks fail' => sub {
	$s->must(204, POST => 'ev/one', $J, '{"n":3}');
	my $w = $rcv->next(5) or return fail('no webhook');
	is($s->req(DELETE => '__ds/subscriptions/hooks')->{status}, 204, 'deleted');
	my $st = $w->{body}{streams}[0];
	my $r3 = post_cb('hooks', $w->{body}{callback_token}, { wake_id => $w->{body}{wake_id},
		generation => $w->{body}{generation}, acks => [ { stream => 'ev/one', offset => $st->{tail_offset} } ],
		done => JSON::PP::true });
	is($r3->{status}, 404, 'callback of a deleted subscription: 404');
	is(doc($r3)->{error}{code}, 'SUBSCRIPTION_NOT_FOUND', '  SUBSCRIPTION_NOT_FOUND');
	is($s->req(GET => '__ds/subscriptions/hooks')->{status}, 404, 'GET: 404');
	$r = $s->req(PUT => '__ds/subscriptions/hooks', $J, encode_json($cfg));
	is($r->{status}, 201, 'the id can be created again');
	$r3 = post_cb('hooks', $w->{body}{callback_token}, { wake_id => $w->{body}{wake_id},
		generation => $w->{body}{generation}, done => JSON::PP::true });
	is($r3->{status}, 401, "the old subscription's token is no good for the new one");
};

$rcv->stop;
$s->stop;
done_testing;
