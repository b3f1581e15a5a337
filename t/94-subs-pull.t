#!/usr/bin/perl
# Pull-wake subscriptions and stream membership (PROTOCOL 6.1, 6.2, 6.4, 7.2, 7.3):
#  - a pattern links existing streams at their tail (no replay) and a stream created later
#    with the create's bytes pending; "*" is one segment, "**" any number;
#  - explicit links: added at the tail, idempotent, removing one keeps a glob link;
#  - wake events {type, subscription_id, stream, generation, ts} in the wake stream; claim
#    gives a lease or 409 ALREADY_CLAIMED with the holder; ack without done is a heartbeat,
#    with done it ends the wake and says whether work is left; an expired lease is cleared
#    and the work woken again with the next generation; release wakes again when work is left.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Stack;

my $s = Stack->start(workers => 2, threads => 8);
my $J = { 'Content-Type' => 'application/json' };
my $T = JSON::PP::true;
my $Z = '0000000000000000_0000000000000000';

sub doc { my $r = shift; my $d = eval { decode_json($r->{content}) }; return $d // {} }
sub links { +{ map { $_->{path} => $_ } @{ doc($s->req(GET => "__ds/subscriptions/$_[0]"))->{streams} } } }
sub events {
	my ($body) = $s->read_all('wake/q');
	return grep { $_->{subscription_id} eq $_[0] } @{ decode_json($body) };
}
sub wait_events {
	my ($id, $n) = @_;
	my @e;
	for (1 .. 100) { @e = events($id); last if @e >= $n; sleep 0.03 }
	return @e;
}
sub claim { $s->req(POST => "__ds/subscriptions/$_[0]/claim", $J, encode_json({ worker => $_[1] })) }
sub op {
	my ($op, $id, $c, %b) = @_;
	return $s->req(POST => "__ds/subscriptions/$id/$op", { %$J, Authorization => "Bearer $c->{token}" },
		encode_json({ wake_id => $c->{wake_id}, generation => $c->{generation}, %b }));
}
sub acks_all { [ map { { stream => $_->{path}, offset => $_->{tail_offset} } } @{ $_[0]{streams} } ] }

$s->must(201, PUT => 'wake/q', $J, '[]');
$s->must(201, PUT => 'old/a', $J, '{"n":1}');
$s->must(201, PUT => 'old/a/deep', $J, '{"n":1}');

subtest 'pattern links: existing at the tail, later ones at 0; * and **' => sub {
	my $r = $s->req(PUT => '__ds/subscriptions/p1', $J, encode_json({ type => 'pull-wake',
		pattern => 'old/*', wake_stream => 'wake/q', lease_ttl_ms => 1000 }));
	is($r->{status}, 201, 'created');
	my $l = links('p1');
	is_deeply([ sort keys %$l ], ['old/a'], '"old/*" matched old/a, not old/a/deep');
	is($l->{'old/a'}{acked_offset}, $s->req(HEAD => 'old/a')->{headers}{'stream-next-offset'},
		'linked at its tail: nothing replayed');
	is(claim('p1', 'w')->{status}, 409, 'so nothing is pending: claim 409');
	is(doc(claim('p1', 'w'))->{error}{code}, 'NO_PENDING_WORK', '  NO_PENDING_WORK');
	$r = $s->req(PUT => '__ds/subscriptions/p2', $J, encode_json({ type => 'pull-wake',
		pattern => 'old/**', wake_stream => 'wake/q' }));
	is_deeply([ sort keys %{ links('p2') } ], [ 'old/a', 'old/a/deep' ], '"old/**" matched both');
	$s->must(204, DELETE => '__ds/subscriptions/p2');
	$s->must(201, PUT => 'old/b', $J, '{"n":1}');
	is(links('p1')->{'old/b'}{acked_offset}, $Z, 'old/b, created later, linked at 0');
	my @e = wait_events('p1', 1);
	is(scalar @e, 1, 'one wake event') or return;
	is($e[0]{type}, 'wake', '  type wake');
	is($e[0]{stream}, 'old/b', '  for old/b');
	is($e[0]{generation}, 1, '  generation 1');
	cmp_ok(abs($e[0]{ts} - time * 1000), '<', 10000, '  ts in ms');
};

subtest 'claim, heartbeat, done' => sub {
	my $r = claim('p1', 'w1');
	is($r->{status}, 200, 'claimed') or return;
	my $c = doc($r);
	is($c->{generation}, 1, 'the wake of generation 1');
	is($c->{lease_ttl_ms}, 1000, 'lease_ttl_ms');
	my ($b) = grep { $_->{path} eq 'old/b' } @{ $c->{streams} };
	ok($b->{has_pending}, 'old/b pending');
	$r = claim('p1', 'w2');
	is($r->{status}, 409, 'a second claim: 409');
	is(doc($r)->{error}{code}, 'ALREADY_CLAIMED', '  ALREADY_CLAIMED');
	is(doc($r)->{error}{current_holder}, 'w1', '  held by w1');
	for (1 .. 3) {
		sleep 0.5;
		$r = op(ack => 'p1', $c);
		is($r->{status}, 200, "heartbeat $_ at " . (0.5 * $_) . ' s');
	}
	is(claim('p1', 'w2')->{status}, 409, 'after 1.5 s the heartbeats kept the 1 s lease');
	$s->must(204, POST => 'old/a', $J, '{"n":2}');
	$r = op(ack => 'p1', $c, acks => [ { stream => 'old/b', offset => $b->{tail_offset} } ], done => $T);
	is($r->{status}, 200, 'done');
	is_deeply(doc($r), { ok => $T, next_wake => $T }, 'next_wake: old/a got data meanwhile');
	is(links('p1')->{'old/b'}{acked_offset}, $b->{tail_offset}, 'old/b acked');
	is(op(ack => 'p1', $c, done => $T)->{status}, 409, 'the same wake again: FENCED');
	my @e = wait_events('p1', 2);
	is($e[-1]{generation}, 2, 'a wake event for generation 2');
	is($e[-1]{stream}, 'old/a', '  for old/a');
};

subtest 'an expired lease is cleared and woken again' => sub {
	my $r = claim('p1', 'w1');
	is($r->{status}, 200, 'claimed generation 2') or return;
	my $c = doc($r);
	is($c->{generation}, 2, 'generation 2');
	sleep 1.4;
	my @e = wait_events('p1', 3);
	is($e[-1]{generation}, 3, 'the lease ran out: a wake event for generation 3');
	is(op(ack => 'p1', $c, done => $T)->{status}, 409, 'the expired claim is fenced');
	$r = claim('p1', 'w2');
	is($r->{status}, 200, 'another worker claims');
	my $c3 = doc($r);
	is($c3->{generation}, 3, 'generation 3');
	$r = op(release => 'p1', $c3);
	is($r->{status}, 204, 'release: 204');
	@e = wait_events('p1', 4);
	is($e[-1]{generation}, 4, 'work left after the release: a wake event for generation 4');
	$r = claim('p1', 'w2');
	my $c4 = doc($r);
	$r = op(ack => 'p1', $c4, acks => acks_all($c4), done => $T);
	is_deeply(doc($r), { ok => $T, next_wake => JSON::PP::false }, 'all acked: next_wake false');
	is(claim('p1', 'w2')->{status}, 409, 'nothing pending');
};

subtest 'explicit links' => sub {
	my $r = $s->req(PUT => '__ds/subscriptions/ex', $J, encode_json({ type => 'pull-wake',
		pattern => 'old/*', streams => [ 'old/a', 'other/z' ], wake_stream => 'wake/q' }));
	is($r->{status}, 201, 'created with explicit old/a and other/z');
	my $l = links('ex');
	is($l->{'old/a'}{link_type}, 'explicit', 'old/a: explicit wins over glob');
	is($l->{'old/b'}{link_type}, 'glob', 'old/b: glob');
	is($l->{'other/z'}{acked_offset}, $Z, 'other/z, no stream yet, at 0');
	is($s->req(POST => '__ds/subscriptions/ex/streams', $J, '{"streams":["other/y","other/y","old/a"]}')
		->{status}, 204, 'add other/y (twice) and old/a again: 204');
	is($s->req(POST => '__ds/subscriptions/ex/streams', $J, '{"streams":["other/y"]}')->{status},
		204, 'again: idempotent');
	is($s->req(DELETE => '__ds/subscriptions/ex/streams/old%2Fa')->{status}, 204, 'remove old/a (%2F)');
	is(links('ex')->{'old/a'}{link_type}, 'glob', 'old/a stays, linked by the pattern');
	is($s->req(DELETE => '__ds/subscriptions/ex/streams/other/y')->{status}, 204, 'remove other/y (slash)');
	ok(!exists links('ex')->{'other/y'}, 'other/y gone');
	is($s->req(DELETE => '__ds/subscriptions/ex/streams/other%2Fy')->{status}, 204, 'removing it again: 204');
	is($s->req(PUT => '__ds/subscriptions/ex', $J, encode_json({ type => 'pull-wake',
		pattern => 'old/*', streams => [ 'other/z', 'old/a', 'old/a' ], wake_stream => 'wake/q' }))->{status},
		200, 'the same configuration (streams in another order, repeated): 200');
	is($s->req(PUT => '__ds/subscriptions/ex', $J, encode_json({ type => 'pull-wake',
		pattern => 'old/*', streams => [ 'other/z', 'old/a' ], wake_stream => 'wake/q',
		lease_ttl_ms => 5000 }))->{status}, 409, 'another lease: 409');
};

subtest 'a wake stream created after the wake: the event waits for it' => sub {
	my $r = $s->req(PUT => '__ds/subscriptions/late', $J, encode_json({ type => 'pull-wake',
		pattern => 'lq/**', wake_stream => 'lw/wake' }));
	is($r->{status}, 201, 'created, its wake stream not there yet');
	$s->must(201, PUT => 'lq/a', $J, '{"n":1}');
	sleep 0.6;    # a few delivery steps find no wake stream
	$s->must(201, PUT => 'lw/wake', $J, '[]');
	my @e;
	for (1 .. 100) {
		my ($body) = $s->read_all('lw/wake');
		@e = grep { $_->{subscription_id} eq 'late' } @{ decode_json($body) };
		last if @e;
		sleep 0.03;
	}
	is(scalar @e, 1, 'the wake event is written once the stream exists');
	is($e[0]{stream}, 'lq/a', '  for the stream with data');
	# An ack inside a JSON message is refused: a read from there would answer 400.
	my $c = doc(claim('late', 'w'));
	my $before = links('late')->{'lq/a'}{acked_offset};
	$r = op('ack', 'late', $c, acks => [ { stream => 'lq/a', offset => '0000000000000000_0000000000000001' } ]);
	is($r->{status}, 409, 'an ack inside a JSON message: 409');
	is(doc($r)->{error}{code}, 'INVALID_OFFSET', '  INVALID_OFFSET');
	is(links('late')->{'lq/a'}{acked_offset}, $before, '  and the acked offset is unchanged');
	my $tail = $s->req(HEAD => 'lq/a')->{headers}{'stream-next-offset'};
	is(op('ack', 'late', $c, acks => [ { stream => 'lq/a', offset => $tail } ], done => JSON::PP::true)->{status},
		200, 'an ack at the message end: 200');
};

$s->stop;
done_testing;
