#!/usr/bin/perl
# Subscriptions survive SIGKILL of every process of the stack (Stack::crash, then restart on
# the same data):
#  - a subscription, its links and acked offsets, its generation, and the signing key (kid,
#    JWK Set) read the same after the restart;
#  - SIGKILL between a wake and its callback: within the lease the callback still works after
#    the restart, and nothing is delivered again;
#  - when the lease ran out meanwhile, the restarted server wakes again with the next
#    generation and the old wake's callback is fenced (409 FENCED), as PROTOCOL 7.3 says;
#  - a pull-wake claim survives too: its lease holds (409 ALREADY_CLAIMED for others) and its
#    token acks after the restart;
#  - ds-fcgi --rotate-webhook-key, then a restart: the new key signs, the old one is still in
#    the JWK Set.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Stack;
use Receiver;

my $s = Stack->start(workers => 2, threads => 8);
my $rcv = Receiver->start($s);
my $J = { 'Content-Type' => 'application/json' };
my $T = JSON::PP::true;

sub doc { my $r = shift; my $d = eval { decode_json($r->{content}) }; return $d // {} }
sub get_raw { $s->req(GET => "__ds/subscriptions/$_[0]")->{content} }
sub crash_restart { $s->crash; $s->restart; }
sub cb {
	my ($op, $id, $tok, $body) = @_;
	return $s->req(POST => "__ds/subscriptions/$id/$op", { %$J, Authorization => "Bearer $tok" },
		encode_json($body));
}

# A webhook subscription with a long lease, one with a short one, a pull-wake one.
$s->must(201, PUT => '__ds/subscriptions/long', $J, encode_json({ type => 'webhook',
	streams => [ 'a/long' ], webhook => { url => $rcv->url }, lease_ttl_ms => 60000 }));
$s->must(201, PUT => '__ds/subscriptions/short', $J, encode_json({ type => 'webhook',
	streams => [ 'a/short' ], webhook => { url => $rcv->url }, lease_ttl_ms => 1000 }));
$s->must(201, PUT => 'wake/pool', $J, '[]');
$s->must(201, PUT => '__ds/subscriptions/pull', $J, encode_json({ type => 'pull-wake',
	pattern => 'p/**', streams => [ 'x/explicit' ], wake_stream => 'wake/pool', lease_ttl_ms => 60000,
	description => "survives" }));

subtest 'SIGKILL between wake and callback, within the lease: the callback still works' => sub {
	$s->must(201, PUT => 'a/long', $J, '{"v":1}');
	my $w = $rcv->next(5) or return fail('no webhook');
	is($w->{body}{subscription_id}, 'long', 'woken');
	sleep 0.3;    # let the worker record the answer; either way the wake stays current
	my $before = get_raw('long');
	crash_restart();
	is(get_raw('long'), $before, 'the subscription reads the same after the restart');
	is($rcv->next(1.5), undef, 'nothing delivered again: the lease holds');
	my $b = $w->{body};
	my $r = cb(callback => 'long', $b->{callback_token}, { wake_id => $b->{wake_id},
		generation => $b->{generation}, acks => [ { stream => 'a/long',
		offset => $b->{streams}[0]{tail_offset} } ], done => $T });
	is($r->{status}, 200, 'the callback acks after the restart') or diag($r->{content});
	is(doc($s->req(GET => '__ds/subscriptions/long'))->{streams}[0]{acked_offset},
		$b->{streams}[0]{tail_offset}, 'acked offset stored');
};

subtest 'SIGKILL, lease runs out meanwhile: a new generation, the old wake fenced' => sub {
	$s->must(201, PUT => 'a/short', $J, '{"v":1}');
	my $w = $rcv->next(5) or return fail('no webhook');
	is($w->{body}{subscription_id}, 'short', 'woken');
	sleep 0.3;
	$s->crash;
	sleep 1.5;
	$s->restart;
	my $w2 = $rcv->next(5) or return fail('no new wake after the restart');
	is($w2->{body}{subscription_id}, 'short', 'woken again');
	is($w2->{body}{generation}, $w->{body}{generation} + 1, 'with the next generation');
	ok($w2->{sig_ok}, 'signed with the same, still published key') or diag($w2->{sig_why});
	my $b = $w->{body};
	my $r = cb(callback => 'short', $b->{callback_token}, { wake_id => $b->{wake_id},
		generation => $b->{generation}, done => $T });
	is($r->{status}, 409, 'the old wake: 409');
	is(doc($r)->{error}{code}, 'FENCED', '  FENCED');
	$b = $w2->{body};
	$r = cb(callback => 'short', $b->{callback_token}, { wake_id => $b->{wake_id},
		generation => $b->{generation}, done => $T, acks => [ { stream => 'a/short',
		offset => $b->{streams}[0]{tail_offset} } ] });
	is($r->{status}, 200, 'the new one acks');
};

subtest 'a pull-wake claim and its lease survive' => sub {
	$s->must(201, PUT => 'p/q/one', $J, '{"v":1}');
	my $ok;
	for (1 .. 60) {
		my ($body) = $s->read_all('wake/pool');
		$ok = $body =~ /"subscription_id":"pull"/;
		last if $ok;
		sleep 0.05;
	}
	ok($ok, 'a wake event in wake/pool');
	my $r = $s->req(POST => '__ds/subscriptions/pull/claim', $J, '{"worker":"w1"}');
	is($r->{status}, 200, 'claimed') or return;
	my $c = doc($r);
	crash_restart();
	$r = $s->req(POST => '__ds/subscriptions/pull/claim', $J, '{"worker":"w2"}');
	is($r->{status}, 409, 'after the restart the lease still holds');
	is(doc($r)->{error}{current_holder}, 'w1', '  held by w1');
	my ($st) = grep { $_->{path} eq 'p/q/one' } @{ $c->{streams} };
	$r = cb(ack => 'pull', $c->{token}, { wake_id => $c->{wake_id}, generation => $c->{generation},
		acks => [ { stream => 'p/q/one', offset => $st->{tail_offset} } ], done => $T });
	is($r->{status}, 200, 'the claim token acks after the restart') or diag($r->{content});
};

subtest 'subscriptions, acked offsets and the signing key are the same after a restart' => sub {
	my %before = map { $_ => get_raw($_) } qw(long short pull);
	my $jwks = $s->req(GET => '__ds/jwks.json')->{content};
	like($before{pull}, qr/"acked_offset":"0000000000000000_00000000000000(?!00)/, 'pull has an acked offset');
	like($before{pull}, qr/"path":"x\/explicit","link_type":"explicit"/, 'and its explicit link');
	crash_restart();
	is(get_raw($_), $before{$_}, "subscription $_ the same") for qw(long short pull);
	is($s->req(GET => '__ds/jwks.json')->{content}, $jwks, 'the JWK Set the same');
	$s->restart;    # an orderly stop and start as well
	is(get_raw($_), $before{$_}, "subscription $_ the same after SIGTERM and start") for qw(long short pull);
	is($s->req(GET => '__ds/jwks.json')->{content}, $jwks, 'the JWK Set the same');
};

subtest 'ds-fcgi --rotate-webhook-key: a new key signs, the old one stays published' => sub {
	my $old = doc($s->req(GET => '__ds/subscriptions/long'))->{webhook}{signing}{kid};
	my $out = `${\ Stack::fcgi_bin()} --data ${\ $s->data_dir} --rotate-webhook-key 2>&1`;
	is($? >> 8, 0, 'rotated') or diag($out);
	my ($new) = $out =~ /key (ds_\S+) made/;
	ok($new && $new ne $old, "new kid $new") or diag($out);
	$s->restart;
	my @kids = map { $_->{kid} } @{ doc($s->req(GET => '__ds/jwks.json'))->{keys} };
	is_deeply([ sort @kids ], [ sort $old, $new ], 'the JWK Set has both');
	is(doc($s->req(GET => '__ds/subscriptions/long'))->{webhook}{signing}{kid}, $new,
		'subscriptions name the new kid');
	$s->must(204, POST => 'a/long', $J, '{"v":2}');
	my $w = $rcv->next(5) or return fail('no webhook');
	like($w->{signature}, qr/kid=\Q$new\E,/, 'a webhook signed with the new key');
	ok($w->{sig_ok}, '  verifies against the JWK Set') or diag($w->{sig_why});
};

$rcv->stop;
$s->stop;
my $out = `${\ Stack::admin_bin()} --data ${\ $s->data_dir} verify 2>&1`;
is($? >> 8, 0, 'ds-admin verify is clean') or diag($out);
done_testing;
