#!/usr/bin/perl
# Live reads against the real stack: losing ds-notify costs latency, never data; readers that
# hang up give their threads back.
#
#  1. Readers parked in long-poll get an append quickly while ds-notify runs (push).
#  2. ds-notify is SIGKILLed while readers are parked: the next append still reaches every one
#     of them within a second (workers fall back to polling the store).
#  3. scripts/run starts ds-notify again; workers reconnect and push wake-ups resume.
#  4. With one worker of 4 threads, 20 parked long-polls leave every thread free (they wait in
#     the worker's lot) and their connections are released when they hang up; 4 SSE readers
#     saturate it, and when they disconnect their threads come back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "50-live: timed out after 90 s\n" };
alarm 90;

my $T = { 'Content-Type' => 'text/plain' };

# started(\@socks, $limit): how many of the sockets received a response head within $limit
# seconds (an SSE reader then holds its thread).  Reads what came, leaves the sockets open.
sub started {
	my ($socks, $limit) = @_;
	my (%buf, $n);
	my $sel = IO::Select->new(@$socks);
	my $t0 = time;
	while ($sel->count && time < $t0 + $limit) {
		for my $h ($sel->can_read(0.02)) {
			sysread($h, my $chunk, 65536) or do { $sel->remove($h); next };
			$buf{$h} .= $chunk;
			if ($buf{$h} =~ m{^HTTP/1\.1 200}) { $n++; $sel->remove($h) }
		}
	}
	return $n // 0;
}

# arrivals(\@socks, $needle, $t0, $limit): seconds after $t0 at which each socket's data
# contained $needle (undef when it never did within $limit seconds).
sub arrivals {
	my ($socks, $needle, $t0, $limit) = @_;
	my %buf;
	my %at;
	my $sel = IO::Select->new(@$socks);
	while ($sel->count && time < $t0 + $limit) {
		for my $h ($sel->can_read(0.02)) {
			my $n = sysread($h, my $chunk, 65536);
			$buf{$h} .= $chunk if $n;
			if (index($buf{$h} // '', $needle) >= 0) {
				$at{$h} = time - $t0;
				$sel->remove($h);
			} elsif (!$n) {
				$sel->remove($h);
			}
		}
	}
	close $_ for @$socks;
	return map { $at{$_} } @$socks;
}

sub tail_of {
	my ($s, $path) = @_;
	return $s->req(HEAD => $path)->{headers}{'stream-next-offset'};
}

# round($s, $path, $n, $label): park $n long-poll readers at the tail, append, return arrivals.
sub round {
	my ($s, $path, $n, $word) = @_;
	my $tail = tail_of($s, $path);
	my @socks = map { $s->live_socket($path, $tail, 'long-poll') } 1 .. $n;
	sleep 0.5;    # let them park
	my $t0 = time;
	$s->req(POST => $path, $T, $word)->{status} == 204 or die "append failed";
	return arrivals(\@socks, $word, $t0, 5);
}

sub max_of { my $m = 0; for (@_) { return undef unless defined; $m = $_ if $_ > $m } $m }

my $s = Stack->start(workers => 2, threads => 16, env => { DS_NOTIFY_RESTART_S => 4 });
$s->must(201, PUT => 'live/a', $T, undef, 'stream created');
my $pidfile = $s->data_dir . '/run/ds-notify.pid';
my $npid;

subtest 'push: readers parked in long-poll wake at once on an append' => sub {
	my @lat = round($s, 'live/a', 6, 'push-one');
	my $max = max_of(@lat);
	ok(defined $max && $max < 0.5, sprintf('push: all 6 readers woke (slowest %.0f ms)', 1000 * ($max // 99)));
};

subtest 'with ds-notify SIGKILLed, parked readers still get an append within a second' => sub {
	chomp($npid = do { local (@ARGV, $/) = $pidfile; <> } // '');
	ok($npid =~ /^\d+$/ && kill(0, $npid), "ds-notify runs (pid $npid)");
	my $tail = tail_of($s, 'live/a');
	my @socks = map { $s->live_socket('live/a', $tail, 'long-poll') } 1 .. 6;
	sleep 0.5;
	kill 'KILL', $npid;
	sleep 0.3;
	my $t0 = time;
	is($s->req(POST => 'live/a', $T, 'while-down')->{status}, 204, 'append while ds-notify is down');
	my @lat = arrivals(\@socks, 'while-down', $t0, 3);
	my $max = max_of(@lat);
	ok(defined $max && $max < 1.0,
		sprintf('notifier down: all 6 parked readers got the append within a second (slowest %.0f ms)',
			1000 * ($max // 99)));
	like($s->stderr, qr/notifier .* unreachable; parked requests poll/, 'workers noticed and fell back to polling');
};

subtest 'scripts/run restarts ds-notify, the workers reconnect and push resumes' => sub {
	my $deadline = time + 15;
	my $back = 0;
	while (time < $deadline) {
		my @backs = $s->stderr =~ /notifier \S+ back/g;
		if (@backs >= 2) { $back = 1; last }    # both workers reconnected
		sleep 0.1;
	}
	ok($back, 'scripts/run restarted ds-notify and both workers reconnected');
	# The workers can reconnect before scripts/run has written the new pid: wait for it too.
	my $npid2 = $npid;
	while (time < $deadline) {
		chomp($npid2 = do { local (@ARGV, $/) = $pidfile; <> } // '');
		last if $npid2 ne $npid && $npid2 =~ /^\d+$/;
		sleep 0.05;
	}
	isnt($npid2, $npid, "new ds-notify pid $npid2");
	my @lat = round($s, 'live/a', 6, 'push-two');
	my $max = max_of(@lat);
	ok(defined $max && $max < 0.5, sprintf('push after restart: all 6 woke (slowest %.0f ms)', 1000 * ($max // 99)));
};

subtest 'losing ds-notify costs no data: every append stored once, in order' => sub {
	is(($s->read_all('live/a'))[0], 'push-onewhile-downpush-two', 'every append stored once, in order');
};

# SSE readers at one position share one read per change (fcgi-app/live.c); readers elsewhere in
# the same stream, and later readers of the same position, must still get exactly their bytes.
sub sse_text {    # the data of the "data" events in the raw response $raw, concatenated
	my ($raw) = @_;
	my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
	return '' unless defined $rest;
	my $buf = $rest;
	if ($head =~ /^transfer-encoding:\s*chunked/mi) {    # whole chunks only
		$buf = '';
		while ($rest =~ s/^([0-9a-fA-F]+)\r\n//) {
			my $n = hex $1;
			last if $n == 0 || length($rest) < $n + 2;
			$buf .= substr($rest, 0, $n);
			substr($rest, 0, $n + 2) = '';
		}
	}
	my $out = '';
	for my $ev (split /\n\n/, $buf) {
		next unless $ev =~ /^event: data\n/;
		$out .= join "\n", map { /^data: ?(.*)$/ ? $1 : () } split /\n/, $ev;
	}
	return $out;
}

subtest 'SSE: readers of one stream each get the bytes from their own offset' => sub {
	$s->must(201, PUT => 'live/share', $T, '0123456789');
	my %want = (tail => '', 0 => '0123456789', 5 => '56789');
	my %at = (tail => tail_of($s, 'live/share'), 0 => sprintf('%016d_%016d', 0, 0),
		5 => sprintf('%016d_%016d', 0, 5));
	my @r = map { my $k = $_; map { [ $k, $s->live_socket('live/share', $at{$k}, 'sse'), '' ] } 1 .. ($k eq 'tail' ? 12 : 4) }
		qw(tail 0 5);
	sleep 0.5;
	for my $word (qw(AAAA BBBB CCCC)) {
		$s->must(204, POST => 'live/share', $T, $word);
		$want{$_} .= $word for keys %want;
		sleep 0.1;
	}
	# A reader that comes now, at the position the first ones started from.
	push @r, [ 'late', $s->live_socket('live/share', $at{tail}, 'sse'), '' ];
	$want{late} = $want{tail};
	my $sel = IO::Select->new(map { $_->[1] } @r);
	my $t0 = time;
	while (time - $t0 < 5 && grep { sse_text($_->[2]) ne $want{ $_->[0] } } @r) {
		for my $fh ($sel->can_read(0.2)) {
			my ($e) = grep { $_->[1] == $fh } @r;
			sysread($fh, $e->[2], 65536, length $e->[2]) or $sel->remove($fh);
		}
	}
	my @bad = grep { sse_text($_->[2]) ne $want{ $_->[0] } } @r;
	is(scalar @bad, 0, scalar(@r) . ' SSE readers at three offsets, and a late one: each got its own bytes')
		or diag(join "\n", map { "$_->[0]: got '" . sse_text($_->[2]) . "'" } @bad);
	close $_->[1] for @r;
};

$s->stop;

# --- parked long-polls hold no thread; hung-up readers free what they held ------------------
my $w = Stack->start(workers => 1, threads => 4);
$w->must(201, PUT => 'live/b', $T, undef, 'stream for the saturation test');
my ($wpid) = $w->worker_pids;
sub fds { my @f = glob("/proc/$wpid/fd/*"); scalar @f }
# Wait until the worker holds at most $max descriptors; returns seconds taken or undef.
sub fds_down_to {
	my ($max, $limit) = @_;
	my $t = time;
	while (time < $t + $limit) { return time - $t if fds() <= $max; sleep 0.05 }
	return undef;
}
subtest 'long-poll: parked readers hold no thread, and hung-up ones are released' => sub {
	my $base = fds();
	my $tl = tail_of($w, 'live/b');
	my @p = map { $w->live_socket('live/b', $tl, 'long-poll') } 1 .. 20;
	sleep 0.5;
	my $r = HTTP::Tiny->new(timeout => 1.5, keep_alive => 0)->request(HEAD => $w->url('live/b'));
	is($r->{status}, 200, 'long-poll: 20 parked readers leave all 4 threads free (HEAD answered)');
	my $held = fds() - $base;
	ok($held >= 20, "long-poll: the worker holds a connection per parked reader ($held more descriptors)");
	close $_ for @p;
	my $took = fds_down_to($base + 2, 5);
	ok(defined $took, sprintf('long-poll: hung-up readers released %.1f s after they left (%d descriptors now, %d before)',
		$took // 5, fds(), $base));
};
subtest 'long-poll: 20 readers parked on one worker all get the append' => sub {
	my $tl = tail_of($w, 'live/b');
	my @p = map { $w->live_socket('live/b', $tl, 'long-poll') } 1 .. 20;
	sleep 0.5;
	my $t1 = time;
	$w->must(204, POST => 'live/b', $T, 'after-long-poll');
	my @got = grep { defined } arrivals(\@p, 'after-long-poll', $t1, 3);
	is(scalar @got, 20, 'long-poll: 20 new readers parked and got the append');
};
subtest 'long-poll: an append over 64 KiB reaches parked readers whole' => sub {
	# An append too large for the lot to write itself (> 64 KiB) is answered from a thread.
	my $tl = tail_of($w, 'live/b');
	my @p = map { $w->live_socket('live/b', $tl, 'long-poll') } 1 .. 3;
	sleep 0.5;
	my $big = 'B' x 200_000 . 'end-of-big';
	my $t1 = time;
	$w->must(204, POST => 'live/b', $T, $big);
	my @got = grep { defined } arrivals(\@p, 'end-of-big', $t1, 3);
	is(scalar @got, 3, 'long-poll: 3 readers got a 200 KB append whole');
};
subtest 'long-poll: a stopping worker answers its waiting readers with 204' => sub {
	# A worker told to stop answers its waiting long-polls (204: poll again) before it exits.
	my $tl = tail_of($w, 'live/b');
	my @p = map { $w->live_socket('live/b', $tl, 'long-poll') } 1 .. 3;
	sleep 0.5;
	my $t1 = time;
	$w->kill_worker('TERM');
	my @got = grep { defined } arrivals(\@p, 'HTTP/1.1 204', $t1, 3);
	is(scalar @got, 3, 'long-poll: a stopping worker answers its 3 waiting readers with 204');
	ok($w->wait_pool(10), 'the worker was replaced');
};
subtest 'SSE: readers keep a thread each for the stream and give it back when they hang up' => sub {
	my $mode = 'sse';
	my $tl = tail_of($w, 'live/b');
	my @p = map { $w->live_socket('live/b', $tl, $mode) } 1 .. 4;
	is(started(\@p, 5), 4, "$mode: 4 readers got their stream's head");
	my $h = HTTP::Tiny->new(timeout => 1.5, keep_alive => 0);
	my $r = $h->request(HEAD => $w->url('live/b'));
	ok($r->{status} != 200, "$mode: 4 parked readers hold all 4 threads (HEAD got $r->{status})");
	close $_ for @p;
	my $t = time;
	my $ok = 0;
	while (time < $t + 5) {
		$r = HTTP::Tiny->new(timeout => 1, keep_alive => 0)->request(HEAD => $w->url('live/b'));
		if ($r->{status} == 200) { $ok = 1; last }
	}
	ok($ok, sprintf('%s: threads free again %.1f s after the readers hung up', $mode, time - $t));
	# The pool is back: 3 new readers park (a fourth thread serves the append) and all get it.
	$tl = tail_of($w, 'live/b');
	@p = map { $w->live_socket('live/b', $tl, $mode) } 1 .. 3;
	sleep 0.5;
	my $t1 = time;
	my $word = "after-$mode";
	$w->must(204, POST => 'live/b', $T, $word);
	my $m = max_of(arrivals(\@p, $word, $t1, 3));
	ok(defined $m, "$mode: 3 new readers parked on the freed threads and got the append");
};
$w->stop;

# A worker told to stop takes no new connection from the pool's listening socket: a request it
# took would die with it. Here the old worker lingers (a request paused for 3 s keeps it busy)
# while its replacement serves; long-polls parked meanwhile must all get the append made after
# the old worker is gone, none of them a 502 from a connection that died with it.
subtest 'a stopping worker accepts no new request' => sub {
	my $x = Stack->start(workers => 1, threads => 4, args => [ '--', '--test-hooks' ]);
	$x->must(201, PUT => 'live/stop', $T);
	my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $x->port,
		Proto => 'tcp', Timeout => 5) or die "connect: $!";
	print $slow "POST /v1/stream/live/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
		. "Content-Type: text/plain\r\nX-DS-Test-Pause: 3000\r\nContent-Length: 5\r\n\r\nslow\n";
	sleep 0.5;
	$x->kill_worker('TERM');
	ok($x->wait_pool(10), 'the worker was replaced');
	my $tl = tail_of($x, 'live/stop');
	my @p = map { $x->live_socket('live/stop', $tl, 'long-poll') } 1 .. 8;
	sleep 3.5;    # the old worker finished its paused request and exited
	my $t1 = time;
	$x->must(204, POST => 'live/stop', $T, "after-stop\n");
	my @got = grep { defined } arrivals(\@p, 'after-stop', $t1, 3);
	is(scalar @got, 8, 'all 8 long-polls parked after the stop got the append');
	close $slow;
	$x->stop;
};

done_testing();
