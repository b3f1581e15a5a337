#!/usr/bin/perl
# Retention over HTTP (README "Retention"): a policy file names stream path prefixes and their
# size or age limits; the worker holding DATA/retention.lock trims in the background, in whole
# appends, and punches the bytes out of the segment files.  Checked: --check refuses a file with
# errors naming the line; size policies on byte and JSON streams keep at most their limit and
# free the disk blocks; an age policy drops data older than its limit; a read before the earliest
# retained offset answers 410 and reads from it, offset=-1 (catch-up and long-poll) start there,
# HEAD and reads name it in Stream-Earliest-Offset; a fork below it is refused with 410 and a fork
# above it reads from it; an edited policy file is reloaded; ds-admin trim does a one-off trim;
# ds-admin verify is clean afterwards.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find;
use File::Temp qw(tempdir);
use JSON::PP;
use Time::HiRes qw(time sleep);
use IO::Select;
use Stack;

local $SIG{ALRM} = sub { die "75-retention: timed out after 120 s\n" };
alarm 120;

my $DS = Stack::fcgi_bin();
my $tmp = tempdir('ds-ret-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $T = { 'Content-Type' => 'text/plain' };
my $J = { 'Content-Type' => 'application/json' };

sub write_file {
	my ($f, $text) = @_;
	open my $fh, '>', "$f.new" or die "$f: $!";
	print $fh $text;
	close $fh;
	rename "$f.new", $f or die "rename $f: $!";
}

# ---- --check ----------------------------------------------------------------------------------
write_file("$tmp/bad.conf", "# retention\nlogs/ max-bytes=1MiB\nx/ max-size=3\n"
	. "y/ max-age=soon\nlogs/ max-age=1d\nz/\n/v1/stream/a/ max-age=1d\n");
my $out = `$DS --data $tmp/checkdata --retention $tmp/bad.conf --check 2>&1`;
my $rc = $? >> 8;
is($rc, 2, '--check refuses a policy file with errors');
like($out, qr/bad\.conf:3: bad rule "max-size=3"/, '... naming line 3 (unknown rule)');
like($out, qr/bad\.conf:4: bad rule "max-age=soon"/, '... line 4 (bad duration)');
like($out, qr/bad\.conf:5: prefix "logs\/" given twice/, '... line 5 (prefix twice)');
like($out, qr/bad\.conf:6: prefix "z\/" has no rule/, '... line 6 (no rule)');
like($out, qr/bad\.conf:7: prefix "\/v1\/stream\/a\/" can match no stream/, '... line 7 (a URL path)');
write_file("$tmp/ret.conf", "ret/size/ max-bytes=256KiB\nret/json/ max-bytes=128KiB\n"
	. "ret/age/ max-age=2s\n* max-age=30d\n");
$out = `$DS --data $tmp/checkdata --retention $tmp/ret.conf --check 2>&1`;
is($? >> 8, 0, '--check accepts a good one') or diag($out);

my $s = Stack->start(workers => 2, threads => 8,
	args => [ '--', '--retention', "$tmp/ret.conf", '--retention-interval', 200, '--test-hooks' ]);

sub pos_of { my ($o) = @_; return defined $o && $o =~ /_(\d+)$/ ? $1 + 0 : undef }
sub off_of { sprintf('%016d_%016d', 0, $_[0]) }
sub head { $s->req(HEAD => $_[0]) }
sub earliest { pos_of(head($_[0])->{headers}{'stream-earliest-offset'}) }
sub tail_of { pos_of(head($_[0])->{headers}{'stream-next-offset'}) }

# Waits until the stream's earliest offset is defined and satisfies $ok, for up to $limit s.
sub wait_earliest {
	my ($path, $ok, $limit) = @_;
	my $t0 = time;
	while (time < $t0 + $limit) {
		my $e = earliest($path);
		return $e if defined $e && $ok->($e);
		sleep 0.1;
	}
	return earliest($path);
}

sub seg_blocks {
	my $blocks = 0;
	find(sub { $blocks += (stat $_)[12] if /\.seg$/ }, $s->data_dir . '/segments');
	return $blocks;
}

# ---- size policy, byte stream -------------------------------------------------------------------
subtest 'max-bytes on a byte stream' => sub {
	my $p = 'ret/size/a';
	$s->must(201, PUT => $p, $T);
	my $blocks0 = seg_blocks();
	for my $i (0 .. 99) {
		$s->must(204, POST => $p, $T, sprintf('%05d', $i) . ('x' x 10234) . "\n");
	}
	my $tail = tail_of($p);
	is($tail, 1_024_000, '100 appends of 10,240 bytes');
	my $e = wait_earliest($p, sub { $tail - $_[0] <= 256 * 1024 }, 5);
	ok(defined $e && $tail - $e <= 256 * 1024, 'trimmed to at most 256 KiB')
		or diag('earliest ' . ($e // 'none'));
	ok($e && $e % 10240 == 0, 'on an append boundary');
	ok($tail - $e > 256 * 1024 - 64 * 1024 - 10240, 'within one index step of the limit');
	my $r = $s->req(GET => "$p?offset=" . off_of(0));
	is($r->{status}, 410, 'a read from offset 0 answers 410 Gone');
	$r = $s->req(GET => "$p?offset=" . off_of($e - 1));
	is($r->{status}, 410, 'one byte before the earliest offset: 410');
	$r = $s->req(GET => "$p?offset=-1");
	is($r->{status}, 200, 'offset=-1 reads');
	is(pos_of($r->{headers}{'stream-earliest-offset'}), $e, '... names the earliest offset');
	is(length $r->{content}, $tail - $e, '... and returns everything retained');
	is(substr($r->{content}, 0, 5), sprintf('%05d', $e / 10240), '... starting with a whole append');
	my $r2 = $s->req(GET => "$p?offset=" . off_of($e));
	is($r2->{content}, $r->{content}, 'the earliest offset reads the same');
	$r = $s->req(GET => "$p?offset=-1&live=long-poll");
	is($r->{status}, 200, 'a long-poll from offset=-1 answers at once');
	is(substr($r->{content}, 0, 5), sprintf('%05d', $e / 10240), '... from the earliest offset');
	# Punching waits for a pass after the trim's 2 s grace period: give it five seconds.
	my $bound = ($tail - $e) / 1024 + 64;    # KiB: what is retained, and 64 KiB of slack
	my $t0 = time;
	sleep 0.2 while time < $t0 + 5 && (seg_blocks() - $blocks0) / 2 > $bound;
	my $kib = (seg_blocks() - $blocks0) / 2;
	ok($kib <= $bound, "the segment holds about what is retained ($kib KiB on disk, of "
		. $tail / 1024 . ' KiB appended)');
};

sub read_until {    # what $sock sends until $re matches or it closes, within $secs
	my ($sock, $re, $secs) = @_;
	my $sel = IO::Select->new($sock);
	my ($buf, $t0) = ('', time);
	while (time - $t0 < $secs && $buf !~ $re && $sel->can_read($secs - (time - $t0))) {
		last unless sysread($sock, $buf, 65536, length $buf);
	}
	close $sock;
	return $buf;
}

subtest 'offset=-1 live reads start where a trim left off, even one after their first look' => sub {
	my $p = 'ret/size/race';
	$s->must(201, PUT => $p, $T);
	$s->must(204, POST => $p, $T, sprintf('%05d', $_) . ('x' x 10234) . "\n") for 0 .. 59;
	my $e1 = wait_earliest($p, sub { $_[0] > 0 }, 5);
	ok($e1, "trimmed once (earliest $e1)") or return;
	my $lp = $s->live_socket($p, -1, 'long-poll', 'X-DS-Test-Pause' => 2000);
	my $sse = $s->live_socket($p, -1, 'sse', 'X-DS-Test-Pause' => 2000);
	sleep 0.5;    # both have looked at the stream and sleep before their first read
	$s->must(204, POST => $p, $T, sprintf('%05d', $_) . ('x' x 10234) . "\n") for 60 .. 99;
	my $e2 = wait_earliest($p, sub { $_[0] > $e1 + 200 * 1024 }, 5);
	ok($e2 && $e2 > $e1 + 200 * 1024, "trimmed again past what they saw (earliest $e2)") or return;
	my $a = Stack::parse_response(read_until($lp, qr/\r\n\r\n.{5}/s, 10));
	is($a->{status}, 200, 'the long-poll answers 200, not 410');
	my $first = pos_of($a->{headers}{'stream-earliest-offset'});
	cmp_ok($first // 0, '>=', $e2, '... from the earliest offset as of its read');
	is(substr($a->{content} // '', 0, 5), sprintf('%05d', ($first // 0) / 10240), '... starting there');
	my $ev = read_until($sse, qr/event: data\r?\ndata:[^\n]*\n/, 10);
	my ($d) = $ev =~ /event: data\r?\ndata:\s?(\d{5})/;
	ok(defined $d, 'the SSE stream sends data rather than ending') or diag(substr($ev, 0, 300));
	cmp_ok(($d // 0) * 10240, '>=', $e2, '... from the earliest offset as of its first read');
};

# ---- size policy, JSON stream -------------------------------------------------------------------
subtest 'max-bytes on a JSON stream' => sub {
	my $p = 'ret/json/j';
	$s->must(201, PUT => $p, $J);
	for my $i (0 .. 199) {
		$s->must(204, POST => $p, $J, encode_json({ n => $i, pad => 'p' x 1000 }));
	}
	my $tail = tail_of($p);
	my $e = wait_earliest($p, sub { $tail - $_[0] <= 128 * 1024 }, 5);
	ok(defined $e && $e > 0 && $tail - $e <= 128 * 1024, 'trimmed to at most 128 KiB');
	my $r = $s->req(GET => "$p?offset=-1");
	is($r->{status}, 200, 'offset=-1 reads');
	my $msgs = eval { decode_json($r->{content}) };
	ok(ref $msgs eq 'ARRAY' && @$msgs > 50, 'a JSON array of whole messages')
		or diag(substr($r->{content}, 0, 200));
	my @n = map { $_->{n} } @{ $msgs // [] };
	is_deeply(\@n, [ $n[0] .. 199 ], 'consecutive, up to the last one');
	is($s->req(GET => "$p?offset=" . off_of(0))->{status}, 410, 'offset 0: 410');
};

# ---- age policy ---------------------------------------------------------------------------------
subtest 'max-age' => sub {
	my $p = 'ret/age/s';
	$s->must(201, PUT => $p, $T);
	$s->must(204, POST => $p, $T, "old\n");
	sleep 1.2;
	$s->must(204, POST => $p, $T, "newer\n");
	is(earliest($p), undef, 'nothing is 2 s old yet: no earliest offset');
	my $e = wait_earliest($p, sub { $_[0] >= 4 }, 6);
	is($e, 4, 'the first append is dropped once it is 2 s old');
	is($s->req(GET => "$p?offset=-1")->{content}, "newer\n", 'offset=-1 reads what is left');
	# The same on a JSON stream: whole messages go.
	my $q = 'ret/age/j';
	$s->must(201, PUT => $q, $J);
	$s->must(204, POST => $q, $J, '[{"m":"old"},{"m":"old2"}]');
	sleep 1.2;
	$s->must(204, POST => $q, $J, '{"m":"newer"}');
	my $len = length(qq({"m":"old"}\n{"m":"old2"}\n));
	is(wait_earliest($q, sub { $_[0] >= $len }, 6), $len, 'JSON: the first append goes, both its messages');
	is_deeply(decode_json($s->req(GET => "$q?offset=-1")->{content}), [ { m => 'newer' } ],
		'JSON: offset=-1 reads the message left');
};

# ---- forks --------------------------------------------------------------------------------------
subtest 'forks across the trimmed boundary' => sub {
	my $src = 'ret/size/a';
	my $e = earliest($src);
	my $r = $s->req(PUT => 'ret/fork/low', { %$T, 'Stream-Forked-From' => "/v1/stream/$src",
		'Stream-Fork-Offset' => off_of($e - 10240) });
	is($r->{status}, 410, 'a fork below the source\'s earliest offset: 410') or diag($r->{content});
	is(head('ret/fork/low')->{status}, 404, '... and not created');
	$s->must(201, PUT => 'ret/fork/f', { %$T, 'Stream-Forked-From' => "/v1/stream/$src" });
	is(earliest('ret/fork/f'), $e, 'a fork at the tail has its source\'s earliest offset');
	$s->must(204, POST => 'ret/fork/f', $T, "own\n");
	$r = $s->req(GET => 'ret/fork/f?offset=-1');
	is(length $r->{content}, tail_of($src) - $e + 4, 'and reads the retained source, then its own');
	$r = $s->req(PUT => 'ret/fork/start', { %$T, 'Stream-Forked-From' => "/v1/stream/$src",
		'Stream-Fork-Offset' => '-1' });
	is($r->{status}, 201, 'a fork at offset -1 starts at the source\'s earliest offset')
		or diag($r->{content});
	is(earliest('ret/fork/start'), earliest($src), '... and reads from there');
	# An untrimmed source: the fork has no earliest offset, for HEAD nor ds-admin.
	$s->must(201, PUT => 'ret/plain/src', $T, 'abcdef');
	$s->must(201, PUT => 'ret/plain/f', { %$T, 'Stream-Forked-From' => '/v1/stream/ret/plain/src' });
	is(earliest('ret/plain/f'), undef, 'a fork of an untrimmed source: no Stream-Earliest-Offset');
	my $o = `${\ Stack::admin_bin()} --data ${\ $s->data_dir} --json stat ret/plain/f 2>&1`;
	is(pos_of((eval { decode_json($o) } // {})->{earliest_offset}), 0, '... and ds-admin stat says 0')
		or diag($o);
};

# ---- reload -------------------------------------------------------------------------------------
subtest 'an edited policy file is reloaded' => sub {
	my $p = 'ret/reload/x';
	$s->must(201, PUT => $p, $T);
	$s->must(204, POST => $p, $T, ('r' x 70000) . "\n") for 1 .. 3;
	sleep 0.5;
	is(earliest($p), undef, 'no policy for it yet');
	write_file("$tmp/ret.conf", "ret/size/ max-bytes=256KiB\nret/json/ max-bytes=128KiB\n"
		. "ret/age/ max-age=2s\nret/reload/ max-bytes=100KiB\n");
	my $e = wait_earliest($p, sub { 1 }, 5);
	is($e, 140002, 'the new policy trims it');
	write_file("$tmp/ret.conf", "ret/ max-bytes=oops\n");
	sleep 0.6;
	like($s->stderr, qr/ret\.conf:1: bad rule "max-bytes=oops"/, 'a broken edit is logged');
	$s->must(204, POST => $p, $T, ('r' x 70000) . "\n") for 1 .. 2;
	is(wait_earliest($p, sub { $_[0] > 140002 }, 3), 280004, 'and the policies before it stay');
};

# ---- ds-admin trim ------------------------------------------------------------------------------
my $ADMIN = Stack::admin_bin();
subtest 'ds-admin trim PATH --before OFFSET' => sub {
	my $p = 'ret/admin/t';    # no policy matches it
	$s->must(201, PUT => $p, $T);
	$s->must(204, POST => $p, $T, ('a' x 69999) . "\n") for 1 .. 3;    # an index point each
	my $d = $s->data_dir;
	my $o = `$ADMIN --data $d --json trim $p --before ${\ off_of(150000)} 2>&1`;
	is($? >> 8, 0, 'trims while the server runs') or diag($o);
	my $j = eval { decode_json($o) } // {};
	is(pos_of($j->{earliest_offset}), 140000, 'to the last append boundary at or below the offset');
	is(earliest($p), 140000, 'HEAD agrees');
	is($s->req(GET => "$p?offset=" . off_of(139999))->{status}, 410, 'before it: 410');
	is(length $s->req(GET => "$p?offset=-1")->{content}, 70000, 'offset=-1: the last append');
	$o = `$ADMIN --data $d --json stat $p 2>&1`;
	is(pos_of((eval { decode_json($o) } // {})->{earliest_offset}), 140000, 'stat --json shows it');
	`$ADMIN --data $d trim $p 2>&1`;
	is($? >> 8, 2, 'trim without --before: usage (2)');
	`$ADMIN --data $d trim $p --before ${\ off_of(999999)} 2>&1`;
	is($? >> 8, 2, 'trim past the tail: usage (2)');
	is(earliest($p), 140000, '... and nothing trimmed');
	`$ADMIN --data $d trim ret/admin/none --before ${\ off_of(1)} 2>&1`;
	is($? >> 8, 3, 'trim of no stream: 3');
};

$s->stop;
$out = `$ADMIN --data ${\ $s->data_dir} verify 2>&1`;
is($? >> 8, 0, 'verify is clean after trims and punches') or diag($out);
done_testing();
