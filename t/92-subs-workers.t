#!/usr/bin/perl
# With 4 worker processes each running a delivery thread, every wake is issued once and sent
# once: while 4 writers append to 3 streams of a pattern, the receiver sees each generation
# and each wake id exactly once, in increasing order, all signed, until everything is acked.
# The same load on a pull-wake subscription, claimed and acked in a loop: no wake event is
# written twice for one generation and stream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use POSIX qw(_exit);
use Stack;
use Receiver;

my $s = Stack->start(workers => 4, threads => 8);
my $rcv = Receiver->start($s, default => '200 {"done":true}');
my $J = { 'Content-Type' => 'application/json' };
my $T = JSON::PP::true;
my ($WRITERS, $APPENDS, @STREAMS) = (4, 40, map { "load/s$_" } 0 .. 2);

sub doc { my $r = shift; my $d = eval { decode_json($r->{content}) }; return $d // {} }

$s->must(201, PUT => 'wake/w', $J, '[]');
$s->must(201, PUT => '__ds/subscriptions/hook', $J, encode_json({ type => 'webhook',
	pattern => 'load/*', webhook => { url => $rcv->url }, lease_ttl_ms => 5000 }));
$s->must(201, PUT => '__ds/subscriptions/pull', $J, encode_json({ type => 'pull-wake',
	pattern => 'load/*', wake_stream => 'wake/w', lease_ttl_ms => 5000 }));
$s->must(201, PUT => $_, $J, '[]') for @STREAMS;

my @pids;
for my $w (1 .. $WRITERS) {
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		my $bad = 0;
		for my $i (1 .. $APPENDS) {
			my $r = $s->req(POST => $STREAMS[($w + $i) % @STREAMS], $J, qq({"w":$w,"i":$i}));
			$bad++ unless $r->{status} == 204;
			sleep 0.01;    # spread over time: many wakes, not one
		}
		_exit($bad ? 1 : 0);
	}
	push @pids, $pid;
}

# Meanwhile a pull-wake worker claims and acks whatever is pending.
my ($claims, $busy, $deadline) = (0, 0, time + 60);
my $writing = scalar @pids;
while (time < $deadline) {
	for my $p (@pids) {
		next unless $p;
		if (waitpid($p, POSIX::WNOHANG()) == $p) {
			is($? >> 8, 0, "writer $p appended everything");
			$p = 0;
			$writing--;
		}
	}
	my $r = $s->req(POST => '__ds/subscriptions/pull/claim', $J, '{"worker":"t"}');
	if ($r->{status} == 200) {
		my $c = doc($r);
		$claims++;
		my @acks = map { { stream => $_->{path}, offset => $_->{tail_offset} } } @{ $c->{streams} };
		my $a = $s->req(POST => '__ds/subscriptions/pull/ack',
			{ %$J, Authorization => "Bearer $c->{token}" },
			encode_json({ wake_id => $c->{wake_id}, generation => $c->{generation},
				acks => \@acks, done => $T }));
		is($a->{status}, 200, "ack of claim $claims") unless $a->{status} == 200;
	} elsif ($r->{status} == 409 && doc($r)->{error}{code} eq 'NO_PENDING_WORK') {
		last if !$writing;
		sleep 0.02;
	} else {
		$busy++;
		diag("claim: $r->{status} $r->{content}") if $busy < 3;
		sleep 0.02;
	}
}
is($writing, 0, 'all writers done');
cmp_ok($claims, '>=', 1, "pull-wake: $claims claims until nothing was pending");
is($busy, 0, 'never ALREADY_CLAIMED or an error for the only claimer');

# The webhook side: wait until everything is acked, then a quiet second.
my %tail = map { $_ => $s->req(HEAD => $_)->{headers}{'stream-next-offset'} } @STREAMS;
my @got;
my $end = time + 30;
while (time < $end) {
	my $w = $rcv->next(0.5);
	if ($w) { push @got, $w; next; }
	my $d = doc($s->req(GET => '__ds/subscriptions/hook'));
	my $left = grep { $_->{acked_offset} ne $tail{ $_->{path} } } @{ $d->{streams} // [] };
	last if !$left && @{ $d->{streams} // [] } == @STREAMS;
}
while (my $w = $rcv->next(1)) { push @got, $w }
my $d = doc($s->req(GET => '__ds/subscriptions/hook'));
is(scalar(grep { $_->{acked_offset} eq $tail{ $_->{path} } } @{ $d->{streams} }), scalar @STREAMS,
	'webhook: every stream acked to its tail');
my @gen = map { $_->{body}{generation} } @got;
note(scalar(@got) . " webhooks for " . $WRITERS * $APPENDS . " appends");
my (%g, %wid);
$g{$_}++ for @gen;
$wid{ $_->{body}{wake_id} }++ for @got;
is(scalar(grep { $_ > 1 } values %g), 0, 'no generation delivered twice');
is(scalar(grep { $_ > 1 } values %wid), 0, 'no wake id delivered twice');
is_deeply(\@gen, [ sort { $a <=> $b } @gen ], 'generations arrive in increasing order');
is(scalar(grep { !$_->{sig_ok} } @got), 0, 'every webhook signed');

# The pull side: no wake event twice for one generation and stream.
my ($body) = $s->read_all('wake/w');
my $ev = decode_json($body);
my %seen;
$seen{"$_->{generation} $_->{stream}"}++ for grep { $_->{subscription_id} eq 'pull' } @$ev;
note(scalar(@$ev) . " wake events");
cmp_ok(scalar(keys %seen), '>=', 1, 'wake events written');
is(scalar(grep { $_ > 1 } values %seen), 0, 'no wake event written twice');

$rcv->stop;
$s->stop;
done_testing;
