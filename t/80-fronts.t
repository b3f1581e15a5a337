#!/usr/bin/perl
# The same behaviour behind every front server (nginx, lighttpd, Caddy), each in turn:
#   - SSE events arrive as they are written (the first before the second is appended);
#   - a chunked upload of 3 MiB is appended whole;
#   - HEAD, 204 and 304 answers carry no body, and no CGI "Status:" header reaches the client;
#   - a body just over ds-fcgi's limit gets 413 from ds-fcgi (not the front) with nothing stored;
#   - a waiting long-poll whose client hangs up gives its FastCGI connection back within the
#     long-poll timeout (counted on the pool's socket);
#   - scripts/run stops on SIGTERM with status 0 and leaves no process behind.
#
# Environment: DS_FRONTS="nginx lighttpd caddy" (default) picks the fronts.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "80-fronts: timed out after 200 s\n" };
alarm 200;

my $MAX = 4 << 20;
my $T = { 'Content-Type' => 'text/plain' };
my @fronts = Stack::fronts();

# connect_raw($s, $request): a socket with the request written.
sub connect_raw {
	my ($s, $req) = @_;
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port, Proto => 'tcp',
		Timeout => 5) or die "connect: $!";
	$c->autoflush(1);
	print $c $req;
	return $c;
}

# read_until($sock, $re, $timeout, \$buf): read until $buf matches $re; true if it did.
sub read_until {
	my ($c, $re, $timeout, $buf) = @_;
	my $sel = IO::Select->new($c);
	my $end = time + $timeout;
	while ($$buf !~ $re) {
		my $left = $end - time;
		return 0 if $left <= 0 || !$sel->can_read($left);
		my $n = sysread($c, $$buf, 65536, length $$buf);
		return $$buf =~ $re if !$n;
	}
	return 1;
}

# fcgi_conns($s): connections open on the pool's FastCGI socket (ss counts both ends once).
sub fcgi_conns {
	my ($s) = @_;
	my $sock = $s->data_dir . '/run/fcgi.sock';
	my @l = grep { index($_, $sock) >= 0 } `ss -xH 2>/dev/null`;
	return scalar @l;
}

sub procs_using {
	my ($dir) = @_;
	my @p;
	opendir my $d, '/proc' or return ();
	for my $pid (grep { /^\d+$/ } readdir $d) {
		open my $fh, '<', "/proc/$pid/cmdline" or next;
		local $/;
		my $cmd = <$fh> // next;
		push @p, $pid if index($cmd, $dir) >= 0;
	}
	return @p;
}

for my $front (@fronts) {
	subtest "behind $front" => sub { front_checks($front) };
}
done_testing;

# front_checks($front): every check against one stack behind $front (skipped when $front is not
# installed).
sub front_checks {
	my ($front) = @_;
	my $s = Stack->start(front => $front, workers => 2, threads => 8, max_body => $MAX,
		args => [ '--', '--long-poll-timeout', 2000 ]);
	my $p = "front/$front";
	$s->must(201, PUT => $p, $T, undef, "$front: stream created");

	# SSE, incremental.
	subtest "$front: SSE events arrive as they are written" => sub {
		my $c = connect_raw($s, "GET /v1/stream/$p?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n");
		my $buf = '';
		ok(read_until($c, qr/\r\n\r\n/, 5, \$buf), "$front: SSE headers arrive before any event");
		is($s->req(POST => $p, $T, 'first-event')->{status}, 204, "$front: first append");
		ok(read_until($c, qr/first-event/, 5, \$buf), "$front: the first event arrives on its own");
		unlike($buf, qr/second-event/, "$front:   before the second is written");
		is($s->req(POST => $p, $T, 'second-event')->{status}, 204, "$front: second append");
		ok(read_until($c, qr/second-event/, 5, \$buf), "$front: the second event follows");
		unlike($buf, qr/^Status:/mi, "$front: no Status header in the SSE answer");
		close $c;
	};

	# A 3 MiB chunked upload.
	subtest "$front: a 3 MiB chunked upload is appended whole" => sub {
		my $chunk = join '', map { chr(65 + $_ % 26) x 1024 } 0 .. 63;    # 64 KiB
		my $req = "POST /v1/stream/$p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
			. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
		$req .= sprintf("%x\r\n%s\r\n", length $chunk, $chunk) for 1 .. 48;
		$req .= "0\r\n\r\n";
		my $r = $s->raw($req, 20);
		is($r->{status}, 204, "$front: 3 MiB chunked upload appended") or diag(substr($r->{raw}, 0, 300));
		my ($body) = eval { $s->read_all($p) };
		is(length($body // ''), 23 + 48 * 65536, "$front:   whole");
		ok(defined $body && substr($body, 23) eq $chunk x 48, "$front:   byte for byte");
	};

	# No body where there must be none; no Status header anywhere.
	subtest "$front: HEAD, 204 and 304 carry no body, and no Status header reaches the client" => sub {
		my $h = $s->raw("HEAD /v1/stream/$p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
		is($h->{status}, 200, "$front: HEAD 200");
		is($h->{content}, '', "$front:   without a body");
		my $a = $s->raw("POST /v1/stream/$p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
			. "Content-Length: 1\r\nConnection: close\r\n\r\nz");
		is($a->{status}, 204, "$front: append 204");
		is($a->{content}, '', "$front:   without a body");
		my $g = $s->req(GET => "$p?offset=-1");
		my $etag = $g->{headers}{etag} // '';
		my $n = $s->raw("GET /v1/stream/$p?offset=-1 HTTP/1.1\r\nHost: x\r\nIf-None-Match: $etag\r\n"
			. "Connection: close\r\n\r\n");
		is($n->{status}, 304, "$front: conditional GET 304");
		is($n->{content}, '', "$front:   without a body");
		my @status = grep { /^status:/mi } map { $_->{raw} } $h, $a, $n;
		is(scalar @status, 0, "$front: no Status header reaches the client");
	};

	# Just over the limit: ds-fcgi's 413, nothing stored.
	subtest "$front: a body one byte over the limit gets the 413 of ds-fcgi and stores nothing" => sub {
		my $before = $s->req(HEAD => $p)->{headers}{'stream-next-offset'};
		my $r = $s->req(POST => $p, $T, 'x' x ($MAX + 1));
		is($r->{status}, 413, "$front: a body one byte over the limit gets 413");
		like($r->{content}, qr/request body too large/, "$front:   from ds-fcgi");
		is($s->req(HEAD => $p)->{headers}{'stream-next-offset'}, $before, "$front:   nothing stored");
	};

	# A waiting long-poll whose client hangs up.
	subtest "$front: a long-poll whose client hangs up gives its FastCGI connection back" => sub {
		Stack->need(commands => ['ss']);
		my $base = fcgi_conns($s);
		my $off = $s->req(HEAD => $p)->{headers}{'stream-next-offset'};
		my @c = map { connect_raw($s, "GET /v1/stream/$p?offset=$off&live=long-poll HTTP/1.1\r\n"
			. "Host: x\r\n\r\n") } 1 .. 5;
		my $t0 = time;
		my $held = 0;
		while (time - $t0 < 3) {
			last if ($held = fcgi_conns($s)) >= $base + 5;
			sleep 0.05;
		}
		ok($held >= $base + 5, "$front: 5 waiting long-polls hold FastCGI connections ($base -> $held)");
		close $_ for @c;
		my $left = $held;
		$t0 = time;
		while (time - $t0 < 6) {
			last if ($left = fcgi_conns($s)) <= $base;
			sleep 0.1;
		}
		ok($left <= $base, sprintf("%s: given back after the clients hung up (%d left, %.1f s)",
			$front, $left - $base, time - $t0));
	};

	subtest "$front: scripts/run stops on SIGTERM with status 0 and leaves no process" => sub {
		my $dir = $s->data_dir;
		$s->stop;
		is($s->{exit_status}, 0, "$front: scripts/run stops on SIGTERM with status 0");
		my @left = procs_using($dir);
		is(scalar @left, 0, "$front: no process of the stack left") or diag("left: @left");
	};
}
