#!/usr/bin/perl
# Forks over HTTP: a chain three deep reads stitched; deleting sources soft-deletes them; deleting
# the last fork cascades up the chain and the segment files are really gone; and SIGKILLs of the
# whole stack while forks are being created and deleted leave refcounts and links consistent
# (ds-admin verify) after a restart, with everything still collectable.
#
# Environment: DS_SEED=N replays the create/delete mix.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find;
use HTTP::Tiny;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Stack;

my $seed = $ENV{DS_SEED} // (time() ^ ($$ << 8)) & 0x7fffffff;
srand($seed);
diag("seed $seed");
local $SIG{ALRM} = sub { die "60-forks: timed out after 100 s\n" };
alarm 100;

my $ADMIN = Stack::admin_bin();    # ds-admin (the ASan one under make sanitize)
my $s = Stack->start(workers => 2, threads => 8);
my $T = { 'Content-Type' => 'text/plain' };
my $prefix = '/v1/stream/';

sub segments {
	my @f;
	find(sub { push @f, $File::Find::name if /\.seg$/ }, $s->data_dir . '/segments');
	return scalar @f;
}

sub verify {
	my $out = `$ADMIN --data ${\ $s->data_dir} verify 2>&1`;
	my $rc = $? >> 8;
	chomp $out;
	return ($rc, $out);
}

# --- a chain three deep --------------------------------------------------------------------
my $base_segs = segments();
my ($rc, $out);
subtest 'a fork chain three deep reads stitched, one segment per stream, nothing copied' => sub {
	$s->must(201, PUT => 'c/root', $T, 'A', 'root created');
	$s->must(201, PUT => 'c/f1', { %$T, 'Stream-Forked-From' => "${prefix}c/root" }, undef, 'fork 1 of root');
	$s->must(204, POST => 'c/f1', $T, 'B', 'append to fork 1');
	$s->must(204, POST => 'c/root', $T, 'x', 'append to root after the fork');
	$s->must(201, PUT => 'c/f2', { %$T, 'Stream-Forked-From' => "${prefix}c/f1" }, undef, 'fork 2 of fork 1');
	$s->must(204, POST => 'c/f2', $T, 'C', 'append to fork 2');
	$s->must(201, PUT => 'c/f3', { %$T, 'Stream-Forked-From' => "${prefix}c/f2" }, undef, 'fork 3 of fork 2');
	$s->must(204, POST => 'c/f3', $T, 'D', 'append to fork 3');
	is(($s->read_all('c/f3'))[0], 'ABCD', 'three levels read stitched');
	is(($s->read_all('c/f2'))[0], 'ABC', 'middle level');
	is(($s->read_all('c/root'))[0], 'Ax', 'root unaffected by its forks');
	is(segments(), $base_segs + 4, 'one segment per stream, nothing copied');
};

# --- soft delete and the cascade -------------------------------------------------------------
subtest 'deleting a source soft-deletes it; deleting the last fork cascades up the chain and frees the segments' => sub {
	is($s->req(DELETE => 'c/root')->{status}, 204, 'delete root (has forks)');
	is($s->req(GET => 'c/root?offset=-1')->{status}, 410, 'root soft-deleted: 410');
	is($s->req(PUT => 'c/root', $T)->{status}, 409, 'soft-deleted path cannot be re-created');
	is($s->req(DELETE => 'c/f1')->{status}, 204, 'delete fork 1 (has a fork)');
	is($s->req(DELETE => 'c/f2')->{status}, 204, 'delete fork 2 (has a fork)');
	is(($s->read_all('c/f3'))[0], 'ABCD', 'leaf still reads through three soft-deleted levels');
	is(segments(), $base_segs + 4, 'soft-deleted data kept');
	is($s->req(DELETE => 'c/f3')->{status}, 204, 'delete the leaf');
	is($s->req(HEAD => "c/$_")->{status}, 404, "cascade removed c/$_") for qw(f3 f2 f1 root);
	is(segments(), $base_segs, 'cascade removed the segment files from disk');
	is($s->req(PUT => 'c/root', $T, 'new')->{status}, 201, 'path reusable after the cascade');
	($rc, $out) = verify();
	is($rc, 0, "store consistent after the cascade: $out");
};

# --- SIGKILL of the whole stack during fork creation and deletion ----------------------------
# Clients build and tear down fork chains on a shared root as fast as they can; the stack is
# killed outright mid-burst, twice, and restarted on the same data.
subtest 'SIGKILLs of the whole stack during fork churn leave refcounts and links consistent' => sub {
	$s->must(201, PUT => 'k/root', $T, 'root-data', 'crash root created');
	for my $round (1 .. 2) {
		my @kids;
		for my $c (1 .. 4) {
			my $pid = fork // die "fork: $!";
			if ($pid == 0) {
				my $h = HTTP::Tiny->new(timeout => 5, keep_alive => 0);
				my $u = $s->base . $prefix;
				my $end = time + 3;
				my $i = 0;
				while (time < $end) {
					$i++;
					my ($a, $b) = ("k/r$round-c$c-$i-a", "k/r$round-c$c-$i-b");
					$h->put("$u$a", { headers => { %$T, 'Stream-Forked-From' => "${prefix}k/root" } });
					$h->put("$u$b", { headers => { %$T, 'Stream-Forked-From' => "$prefix$a" } });
					my @order = rand() < 0.5 ? ($a, $b) : ($b, $a);
					$h->request('DELETE', "$u$_") for @order;
					$h->request('DELETE', "$u$a") if rand() < 0.3;
				}
				POSIX::_exit(0);
			}
			push @kids, $pid;
		}
		sleep 1 + rand(1.5);
		$s->crash;
		waitpid($_, 0) for @kids;
		($rc, $out) = verify();
		is($rc, 0, "round $round: refcounts and links consistent after SIGKILL: $out");
		$s->restart;
		ok($s->wait_pool(15), "round $round: stack back after restart");
	}
	is(($s->read_all('k/root'))[0], 'root-data', 'root data intact');
};

# Everything left must still be collectable: delete every stream the clients may have left,
# whatever order (the cascade does not care), then the roots.
subtest 'every stream the crashed clients left is collectable, down to the last segment file' => sub {
	my @left = map { (split /\t/)[0] } grep { m{^k/r\d} }
		split /\n/, `$ADMIN --data ${\ $s->data_dir} list`;
	diag(scalar(@left) . ' streams left by the crashed clients');
	my $bad = 0;
	for my $p (@left) {
		my $st = $s->req(DELETE => $p)->{status};
		$bad++ unless $st == 204 || $st == 404 || $st == 410;
	}
	is($bad, 0, 'every leftover stream deletes (204, or 410 when already soft-deleted)');
	is($s->req(DELETE => 'k/root')->{status}, 204, 'crash root deleted');
	is($s->req(DELETE => 'c/root')->{status}, 204, 'last plain stream deleted');
	($rc, $out) = verify();
	is($rc, 0, "store consistent at the end: $out");
	like($out, qr/verify: 0 streams/, 'no record left behind: soft-deleted ones were collected');
	$s->stop;
	my $rec = `$ADMIN --data ${\ $s->data_dir} recover --orphan-age 0 2>&1`;
	chomp $rec;
	diag($rec);
	is(segments(), 0, 'no segment file left on disk after recovery');
};

done_testing();
