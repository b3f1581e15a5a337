#!/usr/bin/perl
# ds-admin against a store with plain streams (bytes and JSON), a TTL, forks two deep, a
# soft-deleted source kept for its fork, and a closed stream: every command, in text and with
# --json (parsed back), its exit codes, what it refuses while the server runs, and verify
# failing on a store broken on purpose.
#
#  1. While the server runs: list, stat, dump (--from, --json), verify, delete; recover refuses
#     (exit 4) because the store is open elsewhere.
#  2. Bad usage (2), a missing stream (3), no store at all (5).
#  3. Stopped: recover cuts a torn tail back to the room and removes an orphan segment file.
#  4. verify fails (exit 1, "ok": false) on a store with a segment cut short and one missing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(sleep);
use Stack;

local $SIG{ALRM} = sub { die "87-admin: timed out after 90 s\n" };
alarm 90;

my $ADMIN = Stack::admin_bin();
my $T = { 'Content-Type' => 'text/plain' };
my $J = { 'Content-Type' => 'application/json' };
my $json = JSON::PP->new;

my $s = Stack->start(workers => 2, threads => 4);
my $data = $s->data_dir;

# admin(@args): (exit code, stdout, stderr) of ds-admin --data DATA @args.
sub admin {
	my @args = @_;
	my $dir = tempdir(CLEANUP => 1);
	my $pid = fork // die "fork: $!";
	if (!$pid) {
		open STDOUT, '>', "$dir/out" or die;
		open STDERR, '>', "$dir/err" or die;
		exec $ADMIN, @args or POSIX::_exit(127);
	}
	waitpid($pid, 0);
	my $rc = $? >> 8;
	my ($out, $err) = map { local $/; open my $fh, '<', "$dir/$_" or die; scalar(<$fh>) // '' } qw(out err);
	return ($rc, $out, $err);
}
sub adm { admin('--data', $data, @_) }

# ---- the store --------------------------------------------------------------------------------
$s->must(201, PUT => 'plain', $T, 'hello ');
$s->must(204, POST => 'plain', $T, 'world');
$s->must(201, PUT => 'j', $J, '[{"a":1},2]');
$s->must(204, POST => 'j', $J, '"three"');
my $fork_at = $s->req(HEAD => 'j')->{headers}{'stream-next-offset'};
$s->must(204, POST => 'j', $J, '[4]');
$s->must(201, PUT => 'fk', { 'Stream-Forked-From' => '/v1/stream/j', 'Stream-Fork-Offset' => $fork_at });
$s->must(204, POST => 'fk', $J, '{"mine":true}');
$s->must(201, PUT => 'fk2', { 'Stream-Forked-From' => '/v1/stream/fk' });
$s->must(201, PUT => 'closed', { %$T, 'Stream-Closed' => 'true' }, 'the end');
$s->must(201, PUT => 'ttl', { %$T, 'Stream-TTL' => 3600 }, 't');
$s->must(201, PUT => 'src', $T, 'source bytes');
$s->must(201, PUT => 'srcf', { 'Stream-Forked-From' => '/v1/stream/src' });
$s->must(204, DELETE => 'src', undef, undef, 'src soft-deleted: srcf still reads it');

# ---- 1: while the server runs -----------------------------------------------------------------
subtest 'list' => sub {
	my ($rc, $out) = adm('list');
	is($rc, 0, 'exit 0');
	my @rows = map { [ split /\t/ ] } split /\n/, $out;
	is_deeply($rows[0], [qw(PATH CONTENT-TYPE SIZE TAIL STATE EXPIRY FORKS FORKED-FROM)], 'header');
	my %r = map { $_->[0] => $_ } @rows[1 .. $#rows];
	is_deeply([ sort keys %r ], [qw(closed fk fk2 j plain src srcf ttl)], 'every stream, the soft-deleted one too');
	is_deeply($r{plain}, [ 'plain', 'text/plain', 11, '0000000000000000_0000000000000011', 'open', '-', 0, '-' ], 'plain');
	is($r{closed}[4], 'closed', 'closed stream: closed');
	is($r{src}[4], 'deleted', 'src: deleted (kept for its fork)');
	is($r{ttl}[5], 'ttl=3600s', 'ttl: its TTL');
	is($r{j}[6], 1, 'j has one fork');
	is($r{fk}[7], 'j', 'fk forked from j');
	is($r{fk2}[7], 'fk', 'fk2 forked from fk');

	($rc, $out) = adm('--json', 'list');
	is($rc, 0, '--json: exit 0');
	my $l = eval { $json->decode($out) };
	ok($l, '--json parses') or diag($@, $out);
	is($l->{count}, 8, 'count 8');
	my %j = map { $_->{path} => $_ } @{ $l->{streams} };
	is($j{plain}{size}, 11, 'plain size 11');
	ok(!$j{plain}{json} && $j{j}{json}, 'json flag: j only');
	ok($j{closed}{closed} && !$j{plain}{closed}, 'closed flag');
	ok($j{src}{deleted}, 'src deleted');
	is($j{ttl}{ttl_s}, 3600, 'ttl_s');
	is($j{plain}{ttl_s}, undef, 'no TTL: null');
	is($j{fk}{forked_from}, 'j', 'fk forked_from');
	is($j{fk}{fork_offset}, $fork_at, 'fk fork_offset is the Stream-Fork-Offset given');
	is($j{j}{forks}, 1, 'j forks');
	is($j{src}{forks}, 1, 'src forks');
	like($j{plain}{id}, qr/^[0-9a-f]{16}$/, 'id in hex');
};

subtest 'stat' => sub {
	my ($rc, $out) = adm('stat', 'fk');
	is($rc, 0, 'exit 0');
	like($out, qr/^forked from:\s+j at \Q$fork_at\E$/m, 'names its source and fork point');
	like($out, qr/^content-type:\s+application\/json \(JSON messages\)$/m, 'content type');
	($rc, $out) = adm('stat', 'closed', '--json');
	my $st = eval { $json->decode($out) };
	ok($st, '--json parses') or diag($out);
	is($st->{state}, 'closed', 'closed');
	is($st->{size}, 7, 'size 7');
	my $err;
	($rc, $out, $err) = adm('stat', 'nope');
	is($rc, 3, 'no such stream: exit 3');
	like($err, qr/no such stream/, '...saying so');
};

subtest 'dump' => sub {
	my ($rc, $out) = adm('dump', 'plain');
	is($rc, 0, 'exit 0');
	is($out, 'hello world', 'plain: its bytes');
	($rc, $out) = adm('dump', 'plain', '--from', '0000000000000000_0000000000000006');
	is($out, 'world', '--from an offset: the rest');
	($rc, $out) = adm('dump', 'j');
	is($out, qq({"a":1}\n2\n"three"\n4\n), "JSON stream: one message a line (a POSTed array is its elements)");
	($rc, $out) = adm('dump', 'fk2');
	is($out, qq({"a":1}\n2\n"three"\n{"mine":true}\n), 'a fork of a fork: the chain stitched');
	($rc, $out) = adm('--json', 'dump', 'fk');
	my $d = eval { $json->decode($out) };
	ok($d, '--json parses') or diag($out);
	is_deeply($d->{messages}, [ { a => 1 }, 2, 'three', { mine => JSON::PP::true } ], 'messages');
	ok($d->{complete}, 'complete');
	($rc, $out) = adm('--json', 'dump', 'plain');
	$d = eval { $json->decode($out) };
	is($d->{encoding}, 'base64', 'bytes: base64');
	is(decode_base64($d->{data}), 'hello world', '...of the bytes');
	is($d->{next}, '0000000000000000_0000000000000011', 'next: the tail');
	($rc, $out) = adm('dump', 'ttl');
	is($out, 't', 'a TTL stream dumps');
	my $ttl_access = $json->decode((adm('--json', 'stat', 'ttl'))[1])->{access};
	sleep 1.1;
	adm('dump', 'ttl');
	is($json->decode((adm('--json', 'stat', 'ttl'))[1])->{access}, $ttl_access, 'dump does not renew the TTL');
	is((adm('dump', 'src'))[0], 3, 'a soft-deleted stream: exit 3');
	is((adm('dump', 'nope'))[0], 3, 'no such stream: exit 3');
	is((adm('dump', 'plain', '--from', 'bogus'))[0], 2, 'a malformed --from: exit 2');
	is((adm('dump', 'j', '--from', '0000000000000000_0000000000000003'))[0], 2,
		'--from inside a message: exit 2');
};

subtest 'verify, while the server runs' => sub {
	my ($rc, $out) = adm('verify');
	is($rc, 0, 'exit 0');
	like($out, qr/^verify: 8 streams, 0 problems$/m, 'eight streams, no problems');
	($rc, $out) = adm('verify', '--json');
	is_deeply(eval { $json->decode($out) }, { streams => 8, problems => 0, ok => JSON::PP::true }, '--json');
};

subtest 'recover refuses while the server runs' => sub {
	my ($rc, $out, $err) = adm('recover');
	is($rc, 4, 'exit 4');
	like($err, qr/open in process \d+.*stop it first/, 'says why');
};

subtest 'delete' => sub {
	my ($rc, $out) = adm('--json', 'delete', 'ttl');
	is($rc, 0, 'exit 0');
	is_deeply(eval { $json->decode($out) }, { deleted => 'ttl' }, '--json');
	is($s->req(GET => 'ttl?offset=-1')->{status}, 404, 'the server no longer has it');
	is((adm('delete', 'ttl'))[0], 3, 'again: exit 3');
	is((adm('delete', 'src'))[0], 3, 'a soft-deleted one: exit 3');
	($rc, $out) = adm('delete', 'fk2');
	is($rc, 0, 'a fork deletes');
	like($out, qr/^deleted fk2$/m, 'text');
};

# ---- 2: usage and missing stores --------------------------------------------------------------
subtest 'usage errors and a missing store' => sub {
	is((admin('list'))[0], 2, 'no --data: exit 2');
	is((adm())[0], 2, 'no command: exit 2');
	my ($rc, $out, $err) = adm('frob');
	is($rc, 2, 'unknown command: exit 2');
	like($err, qr/unknown command frob/, '...named');
	is((adm('stat'))[0], 2, 'stat without a path: exit 2');
	is((adm('list', 'extra'))[0], 2, 'list with an argument: exit 2');
	is((adm('list', '--from', '-1'))[0], 2, '--from with list: exit 2');
	is((adm('recover', '--orphan-age', 'x'))[0], 2, 'a bad --orphan-age: exit 2');
	my $empty = tempdir(CLEANUP => 1);
	($rc, $out, $err) = admin('--data', $empty, 'list');
	is($rc, 5, 'no store: exit 5');
	like($err, qr/no store in/, '...saying so');
	ok(!-e "$empty/meta", '...and none made');
};

$s->stop;

# ---- 3: recover on the stopped store ----------------------------------------------------------
sub seg_of {
	my ($path) = @_;
	my $st = $json->decode((adm('--json', 'stat', $path))[1]);
	return sprintf('%s/segments/%s/%s.seg', $data, substr($st->{id}, 0, 2), $st->{id});
}

subtest 'recover: a torn tail and an orphan segment' => sub {
	my $seg = seg_of('plain');
	ok(-f $seg, "plain's segment is $seg");
	open my $fh, '>>', $seg or die "$seg: $!";
	print $fh 'torn bytes past the tail';
	close $fh;
	# A segment file no record names, in the directory its id would use.
	mkdir "$data/segments/ff";
	my $orphan = "$data/segments/ff/ffffffffffffff00.seg";
	open $fh, '>', $orphan or die "$orphan: $!";
	print $fh 'nobody names me';
	close $fh;
	my ($rc, $out) = adm('--json', 'recover', '--orphan-age', '0');
	is($rc, 0, 'exit 0');
	is_deeply(eval { $json->decode($out) }, { truncated => 1, removed => 1 }, 'one tail cut, one orphan removed');
	# 11 committed bytes, zero-filled to their room (one 4 KiB block, store/segment.c).
	is(-s $seg, 4096, 'the segment is back to its room');
	ok(!-e $orphan, 'the orphan is gone');
	($rc, $out) = adm('recover');
	is($rc, 0, 'again: exit 0');
	like($out, qr/^recover: 0 torn tails truncated, 0 orphan segments removed$/m, 'nothing left to do');
};

# ---- 4: verify on a broken store --------------------------------------------------------------
subtest 'verify fails on a broken store' => sub {
	my $seg = seg_of('closed');
	truncate($seg, 3) or die "truncate $seg: $!";
	unlink(seg_of('j')) or die "unlink: $!";
	my ($rc, $out, $err) = adm('verify');
	is($rc, 1, 'exit 1');
	like($out, qr/^verify: \d+ streams, [2-9]\d* problems/m, 'problems counted');
	like($err, qr/closed/, 'the short segment is named');
	like($err, qr/\bj\b/, 'the missing one is named');
	($rc, $out) = adm('--json', 'verify');
	my $v = eval { $json->decode($out) };
	is($rc, 1, '--json: exit 1');
	ok($v && !$v->{ok} && $v->{problems} >= 2, '--json: ok false, problems counted') or diag($out);
};

done_testing();
