#!/usr/bin/perl
# Privilege drop (root only): scripts/run --user NAME as root runs every ds-fcgi worker and
# ds-notify as that user, with no way back to root, and the stack works.
#
#  1. Each worker and ds-notify: real, effective, saved and file-system uid and gid are the
#     user's, the only group is the user's, and no capability is left (permitted, effective,
#     inheritable, ambient): setuid(0) can no longer succeed. The processes checked that
#     themselves at start-up (ds-fcgi --check --user says so).
#  2. The data directory and every file the workers make are the user's; reads, appends,
#     forks and live reads through ds-notify work; a respawned worker drops again.
#  3. Refusals: --user root, an unknown user, --user when not started as root, and a user that
#     cannot reach the data directory.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Stack;

Stack->need(root => 'to drop privileges', commands => ['setpriv']);

local $SIG{ALRM} = sub { die "88-privdrop: timed out after 90 s\n" };
alarm 90;

# The service account scripts/setup creates, or nobody on a machine without it.
my ($user) = grep { defined getpwnam($_) } qw(durable-streams nobody);
my ($uid, $gid) = (getpwnam($user))[2, 3];
my $T = { 'Content-Type' => 'text/plain' };

# A data directory the user can reach (File::Temp makes 0700 directories).
my $top = tempdir('ds-privdrop-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $top or die "chmod $top: $!";

my $s = Stack->start(workers => 2, threads => 4, data => "$top/data", args => [ '--user', $user ]);

# status($pid): { Uid => [4], Gid => [4], Groups => [...], CapPrm => hex, ... }
sub status {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	my %st;
	while (<$fh>) {
		my ($k, $v) = /^(\w+):\s*(.*)$/ or next;
		$st{$k} = $k =~ /^(Uid|Gid|Groups)$/ ? [ split ' ', $v ] : $v;
	}
	return \%st;
}

sub notify_pid {
	open my $fh, '<', $s->data_dir . '/run/ds-notify.pid' or return undef;
	my ($p) = <$fh> =~ /(\d+)/;
	return $p;
}

sub dropped_ok {
	my ($what, $pid) = @_;
	subtest "$what ($pid) runs as $user and cannot regain root" => sub {
		my $st = status($pid) or return fail("no /proc/$pid/status");
		is_deeply($st->{Uid}, [ ($uid) x 4 ], "real, effective, saved and fs uid are $uid");
		is_deeply($st->{Gid}, [ ($gid) x 4 ], "real, effective, saved and fs gid are $gid");
		is_deeply($st->{Groups}, [$gid], "supplementary groups: $gid only");
		for my $cap (qw(CapPrm CapEff CapInh CapAmb)) {
			is(($st->{$cap} // 'f') =~ /^0+$/ ? 0 : $st->{$cap}, 0,
				"$cap is empty: no CAP_SETUID to get root back");
		}
	};
}

my @w = $s->worker_pids;
is(scalar @w, 2, 'two workers');
dropped_ok('ds-fcgi worker', $_) for @w;
my $np = notify_pid();
ok($np, 'ds-notify runs');
dropped_ok('ds-notify', $np);
like($s->stderr, qr/ds-fcgi: configuration and store in .* are fine; running as \Q$user\E \(uid $uid, gid $gid\), root cannot be regained/,
	'the start-up check dropped to the user and found root out of reach');

# ---- 2: the stack works as the user -----------------------------------------------------------
$s->must(201, PUT => 'x', $T, 'one');
$s->must(204, POST => 'x', $T, 'two');
$s->must(201, PUT => 'xf', { 'Stream-Forked-From' => '/v1/stream/x' });
is($s->req(GET => 'xf?offset=-1')->{content}, 'onetwo', 'a fork reads its source');

# A long-poll woken through ds-notify (both run as the user).
my $tail = $s->req(HEAD => 'x')->{headers}{'stream-next-offset'};
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port, Timeout => 5) or die;
print $sock "GET /v1/stream/x?offset=$tail&live=long-poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
sleep 0.3;
my $t0 = time;
$s->must(204, POST => 'x', $T, 'three');
my $ans = '';
while (time - $t0 < 5 && sysread($sock, my $buf, 4096)) { $ans .= $buf }
like($ans, qr/three/, 'a parked long-poll gets the append');
cmp_ok(time - $t0, '<', 0.9, 'quickly: pushed by ds-notify, not found by the 1 s re-check');
my $m = $s->req(GET => '/metrics')->{content};
like($m, qr/^ds_notifier_connected 2$/m, 'both workers are connected to ds-notify');

my @notmine;
find(sub { my @st = lstat $_; push @notmine, $File::Find::name if $st[4] != $uid }, $s->data_dir . '/meta',
	$s->data_dir . '/segments');
is_deeply(\@notmine, [], "every file under meta/ and segments/ belongs to $user");
is((lstat $s->data_dir)[4], $uid, "the data directory belongs to $user");

$s->kill_worker('KILL');
ok($s->wait_pool(15), 'a killed worker is respawned');
# A new worker starts as root and drops once its socket and metrics file are open: give it the
# moment that takes (longer under ASan) before looking.
for my $pid ($s->worker_pids) {
	my $t0 = time;
	while (time < $t0 + 10) {
		my $st = status($pid) or last;
		last if ($st->{Uid}[0] // 0) == $uid;
		select undef, undef, undef, 0.05;
	}
	dropped_ok('respawned worker', $pid);
}
$s->stop;

# ---- 3: refusals ------------------------------------------------------------------------------
my $fcgi = Stack::fcgi_bin();
my $out = `$fcgi --data $top/data --user root --check 2>&1`;
is($? >> 8, 2, 'ds-fcgi --user root: exit 2');
like($out, qr/is root: name an unprivileged user/, '...saying why');
$out = `$fcgi --data $top/data --user no-such-user-here --check 2>&1`;
is($? >> 8, 2, 'an unknown user: exit 2');
$out = `setpriv --reuid=$uid --regid=$gid --clear-groups -- $fcgi --data $top/data --user root --check 2>&1`;
is($? >> 8, 2, 'not root, --user root: still refused');
my ($other) = grep { defined getpwnam($_) && $_ ne $user } qw(nobody daemon bin);
$out = `setpriv --reuid=$uid --regid=$gid --clear-groups -- $fcgi --data $top/data --user $other --check 2>&1`;
is($? >> 8, 1, "not root, --user $other: exit 1");
like($out, qr/not started as root/, '...it cannot become another user, and says so');
my $notify = Stack::_bin($ENV{DS_NOTIFY_BIN} // 'build/ds-notify');
$out = `$notify --socket $top/n.sock --user $user --check 2>&1`;
is($? >> 8, 0, 'ds-notify --user --check: exit 0');
like($out, qr/running as \Q$user\E .*root cannot be regained/, '...having dropped');

my $shut = tempdir('ds-privdrop-XXXXXX', TMPDIR => 1, CLEANUP => 1);    # 0700: the user is shut out
$out = `$Stack::ROOT/scripts/run --port 1 --data $shut/data --user $user 2>&1`;
isnt($? >> 8, 0, 'scripts/run --user with a data directory the user cannot reach fails');
like($out, qr/cannot reach/, '...saying so');

done_testing();
