#!/usr/bin/perl
# Wake-up latency of parked long-polls with the interest table (fcgi-app/notify.h): a reader
# parked on one worker must get an append made on any worker at once (well under the 1 s
# safety re-check), in steady state and right after ds-notify restarts.
#
#  1. Many rounds: one long-poll parks at the tail, an append follows after a random delay
#     (0-60 ms, so some appends race the reader's registration); every wake must be < 0.5 s.
#  2. Readers come and go on one stream while another stays parked: the leaving readers'
#     unsubscribes must never uncount the one that waits.
#  3. ds-notify is SIGKILLed and restarted (DS_NOTIFY_RESTART_S=0) while rounds go on: once
#     every worker is back, no wake may take a safety re-check; before that, at most a poll.
#
# DS_SEED=N replays the random delays.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "51-notify-wake: timed out\n" };
alarm 300;

my $seed = $ENV{DS_SEED} // int(rand(1 << 30));
srand($seed);
diag("seed $seed (DS_SEED=$seed replays it)");

my $T = { 'Content-Type' => 'text/plain' };
my $ROUNDS = $ENV{DS_ROUNDS} // 60;

my $s = Stack->start(workers => 4, threads => 8, env => { DS_NOTIFY_RESTART_S => 0 });
my $pidfile = $s->data_dir . '/run/ds-notify.pid';

# wait_word($sock, $word, $t0, $limit): seconds after $t0 when $word came, or undef.
sub wait_word {
	my ($sock, $word, $t0, $limit) = @_;
	my $buf = '';
	my $sel = IO::Select->new($sock);
	while (time < $t0 + $limit) {
		next unless $sel->can_read(0.005);
		my $n = sysread($sock, my $chunk, 65536);
		$buf .= $chunk if $n;
		return time - $t0 if index($buf, $word) >= 0;
		last unless $n;
	}
	return undef;
}

sub tail_of { $s->req(HEAD => $_[0])->{headers}{'stream-next-offset'} }

sub connected {
	my $r = $s->req(GET => '/metrics');
	return $r->{content} =~ /^ds_notifier_connected (\d+)/m ? $1 : -1;
}

# one_round($path, $word, $delay): returns the wake latency (undef: none within 3 s).
sub one_round {
	my ($path, $word, $delay) = @_;
	my $tail = tail_of($path);
	my $lp = $s->live_socket($path, $tail, 'long-poll');
	sleep $delay;
	my $t0 = time;
	$s->req(POST => $path, $T, $word)->{status} == 204 or die "append failed";
	my $at = wait_word($lp, $word, $t0, 3);
	close $lp;
	return $at;
}

$s->must(201, PUT => 'w/a', $T, undef, 'stream created');
is(connected(), 4, 'all 4 workers connected to ds-notify');

subtest 'steady state: every wake at once' => sub {
	my (@slow, $max);
	for my $i (1 .. $ROUNDS) {
		my $d = rand() < 0.3 ? rand(0.01) : 0.03 + rand(0.03);
		my $at = one_round('w/a', "r$i.", $d);
		push @slow, sprintf('round %d (delay %.0f ms): %s', $i, 1000 * $d,
			defined $at ? sprintf('%.0f ms', 1000 * $at) : 'never') if !defined $at || $at > 0.5;
		$max = $at if defined $at && (!defined $max || $at > $max);
	}
	ok(!@slow, sprintf('%d rounds, slowest %.0f ms', $ROUNDS, 1000 * ($max // 0))) or diag(join "\n", @slow);
};

subtest 'readers come and go while one waits' => sub {
	$s->must(201, PUT => 'w/b', $T, undef, 'stream b');
	my @slow;
	for my $i (1 .. 20) {
		my $tail = tail_of('w/b');
		my $stay = $s->live_socket('w/b', $tail, 'long-poll');
		my @go = map { $s->live_socket('w/b', $tail, 'long-poll') } 1 .. 6;
		sleep 0.15;
		close $_ for @go;    # their workers notice within a second or so and unsubscribe
		sleep 1.3;
		my $t0 = time;
		$s->req(POST => 'w/b', $T, "g$i.")->{status} == 204 or die "append failed";
		my $at = wait_word($stay, "g$i.", $t0, 3);
		close $stay;
		push @slow, "round $i: " . (defined $at ? sprintf('%.0f ms', 1000 * $at) : 'never')
			if !defined $at || $at > 0.5;
	}
	ok(!@slow, 'the reader that stayed always woke at once') or diag(join "\n", @slow);
};

subtest 'across ds-notify restarts' => sub {
	my @bad;
	for my $k (1 .. ($ENV{DS_RESTARTS} // 5)) {
		chomp(my $npid = do { local (@ARGV, $/) = $pidfile; <> } // '');
		$npid =~ /^\d+$/ or do { fail("no ds-notify pid"); return };
		kill 'KILL', $npid;
		my $t_kill = time;
		# Rounds until every worker is back and a while after.
		my $all_back;
		while (time < $t_kill + 4) {
			my $c0 = connected();
			my $d = rand(0.03);
			my $at = one_round('w/a', "k$k." . int(rand 1e9) . '.', $d);
			my $c1 = connected();
			$all_back //= time if $c0 == 4 && $c1 == 4;
			my $when = time - $t_kill;
			if (!defined $at || $at > 0.5) {
				push @bad, sprintf('restart %d, %.2f s after the kill (connected %d -> %d): wake %s',
					$k, $when, $c0, $c1, defined $at ? sprintf('%.0f ms', 1000 * $at) : 'never');
			}
		}
	}
	ok(!@bad, 'no wake waited for a safety re-check across restarts') or diag(join "\n", @bad);
};

$s->stop;
done_testing;
