#!/usr/bin/perl
# Slow readers must not hold workers.  On a small pool (2 workers x 4 threads = 8 threads), 50
# clients each ask for a 1 MiB catch-up chunk of an 8 MiB stream and then do not read (receive
# buffer 4 KiB, set before connect).  While they hang:
#   - HEAD, a small GET and a POST on another stream are each answered within 100 ms (20 of
#     them; p50 and max are printed, with the same measured before the readers came);
#   - the ds-fcgi workers' resident memory (VmRSS summed over Stack->worker_pids) grows by at
#     most 32 MiB: the answers are held by the front server (nginx buffers catch-up
#     reads, which ds-fcgi marks X-Accel-Buffering: yes when the front sets DS_FRONT_BUFFERS),
#     not by worker threads;
#   - the 50 connections are still open; afterwards each reader, reading at last, gets its whole
#     chunk, byte for byte.
# Behind each front server in turn (DS_FRONTS, default "nginx lighttpd caddy").  Each buffers
# catch-up answers for the client its own way: nginx on X-Accel-Buffering: yes, lighttpd with
# server.stream-response-body = 0 and Caddy with buffer_responses for requests without live=
# (deploy/*.in).  Without that, 8 of the 50 answers start (one per worker thread) and every
# probe times out until the readers read.
#
# The readers ask for a 1400-byte MSS, as over Ethernet (see slow_reader()): over loopback's
# 64 KiB MSS the kernel alone would take each whole 1 MiB answer and the test would prove nothing.
#
# Environment: DS_FRONTS="nginx lighttpd caddy" picks the fronts.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use HTTP::Tiny;
use IO::Select;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF IPPROTO_TCP TCP_MAXSEG MSG_PEEK MSG_DONTWAIT pack_sockaddr_in inet_aton);
use Errno qw(EAGAIN EWOULDBLOCK);
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "85-slow-readers: timed out after 120 s\n" };
alarm 120;

my $READERS       = 50;
my $STREAM_MIB    = 8;
my $PROBES        = 20;
my $LATENCY_MS    = 100;     # each probe, while the readers hang
my $PROBE_TIMEOUT = 1;       # s; a starved pool would otherwise stall the file for minutes
# Growth of the workers' summed VmRSS while the readers hang: 8 threads holding a 1 MiB chunk
# each, plus allocator slack, stay well under it; holding every reader's chunk (50 MiB) does not.
my $RSS_BOUND_MIB = 32;
my @fronts = Stack::fronts();


for my $front (@fronts) {
	subtest "behind $front" => sub { front_checks($front) };
}
done_testing;
exit;

# rss($pid): (VmRSS, RssAnon) of a process in KiB, from /proc/PID/status.
sub rss {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return (0, 0);
	my ($vm, $anon) = (0, 0);
	while (<$fh>) {
		$vm = $1 if /^VmRSS:\s+(\d+)/;
		$anon = $1 if /^RssAnon:\s+(\d+)/;
	}
	return ($vm, $anon);
}

# front_pids($s, $front): the front server's processes (descendants of scripts/run named $front).
sub front_pids {
	my ($s, $front) = @_;
	my %kids;
	opendir my $d, '/proc' or return ();
	for my $pid (grep { /^\d+$/ } readdir $d) {
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $st = <$fh> // next;
		push @{ $kids{$2} }, [ $pid, $1 ] if $st =~ /^\d+ \((.*)\) \S+ (\d+)/s;
	}
	my @out;
	my @todo = ($s->pid);
	while (defined(my $p = shift @todo)) {
		for my $k (@{ $kids{$p} // [] }) {
			push @todo, $k->[0];
			push @out, $k->[0] if $k->[1] eq $front;
		}
	}
	return @out;
}

# mem($s, @pids): summed (VmRSS, RssAnon) in MiB.
sub mem {
	my ($vm, $anon) = (0, 0);
	for my $p (@_) {
		my ($v, $a) = rss($p);
		$vm += $v;
		$anon += $a;
	}
	return ($vm / 1024, $anon / 1024);
}

# probe($s, $i): one small request (HEAD, small GET, POST in turn); returns (ms, status, name).
sub probe {
	my ($s, $i, $http) = @_;
	my @r = ([ HEAD => 'slow/small', undef, 200 ], [ GET => 'slow/small?offset=-1', undef, 200 ],
		[ POST => 'slow/small', 'x', 204 ]);
	my ($m, $p, $body, $want) = @{ $r[ $i % 3 ] };
	my %o = (headers => { 'Content-Type' => 'text/plain' });
	$o{content} = $body if defined $body;
	my $t0 = time;
	my $res = $http->request($m, $s->url($p), \%o);
	my $ms = (time - $t0) * 1000;
	return ($ms, $res->{status}, $want, "$m $p");
}

# probes($s, $label): $PROBES probes, stopping after 3 that time out; returns (\@ms, \@bad).
sub probes {
	my ($s) = @_;
	my $http = HTTP::Tiny->new(keep_alive => 0, timeout => $PROBE_TIMEOUT);
	my (@ms, @bad);
	my $timeouts = 0;
	for my $i (0 .. $PROBES - 1) {
		my ($ms, $st, $want, $what) = probe($s, $i, $http);
		push @ms, $ms;
		push @bad, sprintf('%s: %s after %.0f ms', $what, $st, $ms) if $st != $want;
		$timeouts++ if $st == 599;
		last if $timeouts >= 3;
		sleep 0.02;
	}
	return (\@ms, \@bad);
}

sub stats {
	my ($ms) = @_;
	my @s = sort { $a <=> $b } @$ms;
	return (0, 0) unless @s;
	return ($s[ int($#s / 2) ], $s[-1]);
}

# slow_reader($s, $offset): a connection with a 4 KiB receive buffer that has sent a catch-up GET.
# It also asks for an MSS of 1400 bytes, as over Ethernet: with loopback's 64 KiB MSS, Linux grows
# the server's send buffer past 1 MiB at once (tcp_wmem allows 4 MiB), the kernel takes the whole
# answer, and nothing would show whether the front or a worker would have had to hold it.  With
# 1400 the server's socket takes about 64 KiB and the rest waits in the front (or the worker).
sub slow_reader {
	my ($s, $offset) = @_;
	socket(my $fh, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
	setsockopt($fh, SOL_SOCKET, SO_RCVBUF, 4096) or die "SO_RCVBUF: $!";
	setsockopt($fh, IPPROTO_TCP, TCP_MAXSEG, 1400) or die "TCP_MAXSEG: $!";
	connect($fh, pack_sockaddr_in($s->port, inet_aton('127.0.0.1'))) or die "connect: $!";
	my $req = "GET /v1/stream/slow/big?offset=$offset HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	defined syswrite($fh, $req) or die "write: $!";
	return $fh;
}

# conn_state($fh): 'data' (bytes waiting), 'open' (nothing yet) or 'closed' (EOF or error).
sub conn_state {
	my ($fh) = @_;
	my $buf;
	my $n = recv($fh, $buf, 1, MSG_PEEK | MSG_DONTWAIT);
	return 'open' if !defined $n && ($! == EAGAIN || $! == EWOULDBLOCK);
	return 'closed' if !defined $n;
	return length $buf ? 'data' : 'closed';
}

sub front_checks {
	my ($front) = @_;
	my $s = Stack->start(front => $front, workers => 2, threads => 4);
	my $T = { 'Content-Type' => 'text/plain' };

	# An 8 MiB stream whose every byte says where it is; its 1 MiB chunks' offsets.
	my $big = join '', map { sprintf("%015d\n", $_ * 16) } 0 .. ($STREAM_MIB << 16) - 1;
	$s->must(201, PUT => 'slow/big', $T, $big, "$front: an $STREAM_MIB MiB stream");
	$s->must(201, PUT => 'slow/small', $T, 'hi', "$front: a small stream");
	my ($all, undef, $resps) = $s->read_all('slow/big');
	my @offsets = ('-1', map { $_->{headers}{'stream-next-offset'} } @$resps[0 .. $#$resps - 1]);
	my @chunks = map { $_->{content} } @$resps;
	is($all, $big, "$front: the stream reads back whole in " . scalar(@chunks) . ' chunks');

	my @workers = $s->worker_pids;
	is(scalar @workers, 2, "$front: two workers") or diag("workers: @workers");
	my ($ms0) = probes($s);
	my ($p50_0, $max_0) = stats($ms0);
	my ($w_rss0, $w_anon0) = mem(@workers);
	my ($f_rss0) = mem(front_pids($s, $front));

	# The slow readers, over every chunk in turn.
	my @r = map { slow_reader($s, $offsets[ $_ % @offsets ]) } 0 .. $READERS - 1;
	my $t0 = time;
	my $answered = 0;
	while (time - $t0 < 3) {
		$answered = grep { conn_state($_) eq 'data' } @r;
		last if $answered == $READERS;
		sleep 0.05;
	}
	note(sprintf('%s: %d of %d slow readers have their answer started after %.1f s', $front,
		$answered, $READERS, time - $t0));
	sleep 0.5;    # whatever would block on them has blocked by now

	{
		is($answered, $READERS, "$front: every slow reader's answer has started");
		my ($ms, $bad) = probes($s);
		my ($p50, $max) = stats($ms);
		my $msg = sprintf('%s: probes before the readers: p50 %.1f ms, max %.1f ms; while %d '
			. 'readers hang: p50 %.1f ms, max %.1f ms (%d probes)', $front, $p50_0, $max_0,
			$READERS, $p50, $max, scalar @$ms);
		diag($msg);
		is(scalar @$ms, $PROBES, "$front: all $PROBES probes answered (none timed out after $PROBE_TIMEOUT s)");
		is(scalar @$bad, 0, "$front: HEAD 200, GET 200, POST 204 while the readers hang")
			or diag(join "\n", @$bad);
		ok($max <= $LATENCY_MS, sprintf('%s: each answered within %d ms (max %.1f ms)', $front,
			$LATENCY_MS, $max));
	}
	{
		my ($w_rss1, $w_anon1) = mem($s->worker_pids);
		my ($f_rss1) = mem(front_pids($s, $front));
		diag(sprintf('%s: ds-fcgi workers VmRSS %.1f -> %.1f MiB (RssAnon %.1f -> %.1f); '
			. '%s VmRSS %.1f -> %.1f MiB', $front, $w_rss0, $w_rss1, $w_anon0, $w_anon1,
			$front, $f_rss0, $f_rss1));
		SKIP: {
			# ASan keeps freed memory in quarantine (256 MiB): resident memory says
			# nothing there about what the workers hold.
			skip("$front: resident memory under AddressSanitizer (DS_SAN_REPORTS set)", 1)
				if $ENV{DS_SAN_REPORTS};
			ok($w_rss1 - $w_rss0 <= $RSS_BOUND_MIB, sprintf('%s: the workers\' resident '
				. 'memory grows by at most %d MiB (%+.1f MiB)', $front, $RSS_BOUND_MIB,
				$w_rss1 - $w_rss0));
		}
	}

	my %st;
	$st{ conn_state($_) }++ for @r;
	is($st{closed} // 0, 0, "$front: the $READERS slow connections are still open after the checks")
		or diag(join ', ', map { "$_ $st{$_}" } sort keys %st);

	# Now read: each gets its whole chunk.
	my %buf = map { fileno($_) => '' } @r;
	my $sel = IO::Select->new(@r);
	my $end = time + 20;
	while ($sel->count && time < $end) {
		for my $fh ($sel->can_read(1)) {
			my $n = sysread($fh, $buf{ fileno $fh }, 1 << 16, length $buf{ fileno $fh });
			$sel->remove($fh) unless $n;
		}
	}
	my $whole = 0;
	my @why;
	for my $i (0 .. $#r) {
		my $res = Stack::parse_response($buf{ fileno $r[$i] });
		my $want = $chunks[ $i % @chunks ];
		if ($res->{status} == 200 && $res->{content} eq $want) { $whole++; next }
		push @why, sprintf('reader %d (offset %s): status %s, %d of %d bytes', $i,
			$offsets[ $i % @offsets ], $res->{status}, length $res->{content}, length $want);
	}
	is($whole, $READERS, sprintf('%s: every slow reader gets its whole chunk once it reads (%.1f s)',
		$front, 20 - ($end - time))) or diag(join "\n", @why[0 .. ($#why < 4 ? $#why : 4)]);
	close $_ for @r;
	$s->stop;
}
