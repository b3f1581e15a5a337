#!/usr/bin/perl
# Catch-up reads sent from the segment files (README "Performance"): a read of a byte stream of
# 64 KiB or more goes to the front server with sendfile(), not copied through the worker.
# Behind each front server (DS_FRONTS, default "nginx lighttpd caddy"), checked byte for byte:
# a 1.5 MiB stream in 1 MiB chunks; a read from an odd offset; reads just under and at 64 KiB;
# a fork whose reads cross from inherited into its own bytes; 304 for a large read's ETag.
# And the guard: the bytes of such a read are the stream's only until retention trims past them
# (it may punch them out of the file while the front server still has to read them), so the
# worker holds the last bytes back until the front server has read the rest and the stream
# still retains the read's start. A trim landing meanwhile (X-DS-Test-Pause holds the read
# there) must cut the answer short: the client never gets a whole 200 of bytes that may be
# zeros. The same read without a trim completes.
#
# Environment: DS_FRONTS="nginx lighttpd caddy" picks the fronts.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Find qw(find);
use IO::Select;
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "76-read-in-place: timed out after 240 s\n" };
alarm 240;

my $T = { 'Content-Type' => 'application/octet-stream' };
my $tmp = tempdir('ds-rip-XXXXXX', TMPDIR => 1, CLEANUP => 1);
open my $fh, '>', "$tmp/ret.conf" or die "$tmp/ret.conf: $!";
print $fh "cut/ max-bytes=256KiB\n";
close $fh;

# $n bytes no two 8-byte words of which repeat within 2^32 bytes: a misplaced chunk shows.
sub bytes_of {
	my ($n, $seed) = @_;
	return substr(join('', map { pack('NN', $seed, $_) } 0 .. int($n / 8)), 0, $n);
}

sub pos_of { my ($o) = @_; return defined $o && $o =~ /_(\d+)$/ ? $1 + 0 : undef }
sub off_of { sprintf('%016d_%016d', 0, $_[0]) }

my @fronts = Stack::fronts();
for my $front (@fronts) {
	subtest "behind $front" => sub { front_checks($front) };
}
done_testing;
exit;

sub front_checks {
	my ($front) = @_;
	my $s = Stack->start(front => $front, workers => 2, threads => 8,
		args => [ '--', '--retention', "$tmp/ret.conf", '--retention-interval', 200,
			'--test-hooks' ]);
	my $prefix = '/v1/stream/';

	my $big = bytes_of(1536 * 1024, 1);
	$s->must(201, PUT => 'big', $T);
	$s->must(204, POST => 'big', $T, substr($big, $_ * 262144, 262144)) for 0 .. 5;
	my ($body, undef, $resp) = $s->read_all('big');
	ok($body eq $big, '1.5 MiB read back byte for byte') or diag(length($body) . ' bytes');
	is(scalar @$resp, 2, '... in two answers');
	is(length($resp->[0]{content}), 1 << 20, '... the first a whole 1 MiB chunk');

	my $r = $s->req(GET => 'big?offset=' . off_of(12345));
	is($r->{status}, 200, 'a read from an odd offset');
	ok($r->{content} eq substr($big, 12345, 1 << 20), '... has the bytes from there');
	is(pos_of($r->{headers}{'stream-next-offset'}), 12345 + (1 << 20), '... and says where it ended');

	for my $n (65535, 65536) {
		my $p = "edge$n";
		$s->must(201, PUT => $p, $T, substr($big, 7, $n));
		my $g = $s->req(GET => "$p?offset=-1");
		ok($g->{status} == 200 && $g->{content} eq substr($big, 7, $n), "a $n-byte read");
	}

	my $etag = $resp->[0]{headers}{etag};
	$r = $s->req(GET => 'big?offset=-1', { 'If-None-Match' => $etag });
	is($r->{status}, 304, 'If-None-Match with a large read\'s ETag answers 304');
	is($r->{content} // '', '', '... without a body');

	my $at = 700_001;
	$s->must(201, PUT => 'fk', { %$T, 'Stream-Forked-From' => "${prefix}big",
		'Stream-Fork-Offset' => off_of($at) });
	my $own = bytes_of(300_000, 2);
	$s->must(204, POST => 'fk', $T, $own);
	($body) = $s->read_all('fk');
	ok($body eq substr($big, 0, $at) . $own, 'a fork reads its source\'s bytes, then its own');
	$r = $s->req(GET => 'fk?offset=' . off_of(600_000));
	ok($r->{status} == 200 && $r->{content} eq substr($big, 600_000, $at - 600_000) . $own,
		'... in one answer across the fork point');

	# A segment file shorter than the committed tail (damage, a bad restore): the read cannot be
	# sent, and must say so (500, as a copied read does), not start a 200 it then cuts short,
	# which a client would only read again, and again.
	my $short = substr($big, 0, 100_000);
	$s->must(201, PUT => 'short', $T, $short);
	my ($id) = ($s->req(GET => 'short?offset=-1')->{headers}{etag} // '') =~ /^"([0-9a-f]{16}):/;
	my $seg;
	find(sub { $seg = $File::Find::name if $_ eq "$id.seg" }, $s->data_dir) if $id;
	ok($seg && truncate($seg, 70_000), 'setup: the segment cut to 70000 bytes') or diag($seg // 'no segment');
	$r = $s->req(GET => 'short?offset=-1');
	is($r->{status}, 500, 'a read past the end of a short segment answers 500')
		or diag("status $r->{status}, " . length($r->{content} // '') . ' bytes');

	# The guard.
	$s->must(201, PUT => 'cut/s', $T);
	$s->must(204, POST => 'cut/s', $T, substr($big, $_ * 10240, 10240)) for 0 .. 19;
	my $a = answer(paused_get($s, 'cut/s'));
	ok($a->{status} == 200 && $a->{whole} && $a->{content} eq substr($big, 0, 204800),
		'a held read without a trim completes, byte for byte')
		or diag("status $a->{status}, " . length($a->{content}) . " bytes");
	my $cuts = cuts($s);
	my $sock = paused_get($s, 'cut/s');
	sleep 0.5;    # the worker has sent all but the held-back bytes and sleeps
	$s->must(204, POST => 'cut/s', $T, substr($big, $_ * 10240, 10240)) for 20 .. 39;
	my $e = earliest_after($s, 'cut/s', 5);
	ok($e > 0, "a trim landed meanwhile (earliest offset $e)");
	$a = answer($sock);
	ok(!($a->{status} == 200 && $a->{whole}), 'the read it overtook is cut short, not whole')
		or diag("status $a->{status}, " . length($a->{content}) . ' bytes');
	is(cuts($s), $cuts + 1, '... and counted in ds_reads_cut_total');
	is($s->req(GET => 'cut/s?offset=' . off_of(0))->{status}, 410, '... and reading it again answers 410');
	($body, undef, $resp) = $s->read_all('cut/s');
	$e = pos_of($resp->[0]{headers}{'stream-earliest-offset'}) // 0;
	ok($e > 0 && $body eq substr($big, $e, 409600 - $e), "offset=-1 reads what is retained (from $e)");
}

# A catch-up GET of the whole stream with X-DS-Test-Pause: 1500, unread.
sub paused_get {
	my ($s, $path) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port,
		Proto => 'tcp', Timeout => 5) or die "connect: $!";
	$sock->autoflush(1);
	print $sock "GET /v1/stream/$path?offset=-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		. "X-DS-Test-Pause: 1500\r\nConnection: close\r\n\r\n";
	return $sock;
}

# Reads the answer until the connection closes: { status, content, whole (the body is as long
# as Content-Length says, or ends in the last chunk) }.
sub answer {
	my ($sock) = @_;
	my $sel = IO::Select->new($sock);
	my ($buf, $t0) = ('', time);
	while (time - $t0 < 15 && $sel->can_read(15 - (time - $t0))) {
		last unless sysread($sock, $buf, 65536, length $buf);
	}
	close $sock;
	my $r = Stack::parse_response($buf);
	my $cl = $r->{headers}{'content-length'};
	$r->{whole} = defined $cl ? length($r->{content}) == $cl
		: ($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i && $buf =~ /\r\n0\r\n\r\n\z/;
	return $r;
}

# ds_reads_cut_total of the pool.
sub cuts {
	my ($s) = @_;
	my $m = $s->req(GET => '/metrics');
	return $m->{content} =~ /^ds_reads_cut_total (\d+)$/m ? $1 : -1;
}

sub earliest_after {
	my ($s, $path, $limit) = @_;
	my $t0 = time;
	while (time < $t0 + $limit) {
		my $e = pos_of($s->req(HEAD => $path)->{headers}{'stream-earliest-offset'});
		return $e if $e;
		sleep 0.1;
	}
	return 0;
}
