#!/usr/bin/perl
# ds-notify against two fake workers on its socket (no stack): a subscription sent before a
# publish must be honoured, whatever order the daemon's epoll hands the two connections in.
#
# A worker counts its reader in the interest table, sends NOTIFY_SUB, and lets the reader
# check the store; an appender that commits after that check sees the count and sends
# NOTIFY_PUB. Both messages can be waiting when ds-notify next looks (it was busy, or
# preempted: SIGSTOP stands in for that here). If the appender's connection is ahead of the
# reader's in epoll's ready list (it had sent something before: a busy appender), the PUB is
# handled first, finds no subscriber and is dropped; the reader waits for its 1 s re-check.
# The fake workers do with the interest table (reached through /proc) what notify.c does:
# the reader counts in and sends the slot's publish generation with its SUB, the appender
# reads the count and bumps the generation before its PUB.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Socket qw(AF_UNIX SOCK_SEQPACKET pack_sockaddr_un);
use IO::Select;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

local $SIG{ALRM} = sub { die "52-notify-order: timed out\n" };
alarm 60;

my $bin = $ENV{DS_NOTIFY_BIN} // "$FindBin::Bin/../build/ds-notify";
plan skip_all => "$bin not built" unless -x $bin;

use constant { SUB => 1, UNSUB => 2, PUB => 3, WAKE => 4, HELLO => 5 };

my $dir = tempdir(CLEANUP => 1);
my $path = "$dir/notify.sock";
my $pid = fork // die "fork: $!";
if ($pid == 0) {
	open STDERR, '>', "$dir/stderr";
	exec $bin, '--socket', $path or POSIX::_exit(127);
}
END { if ($pid) { kill 'CONT', $pid; kill 'TERM', $pid; waitpid $pid, 0 } }
for (1 .. 100) { last if -S $path; sleep 0.02 }
ok(-S $path, 'ds-notify listens');

sub dial {
	socket(my $fh, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!";
	connect($fh, pack_sockaddr_un($path)) or die "connect: $!";
	my $m = recv_msg($fh, 1) // die "no hello";
	$m->[0] == HELLO or die "first message is $m->[0], not HELLO";
	return $fh;
}
sub send_msg { my ($fh, $t, $id, $gen) = @_; defined send($fh, pack('L L Q', $t, $gen // 0, $id), 0) or die "send: $!" }
sub recv_msg {
	my ($fh, $limit) = @_;
	return undef unless IO::Select->new($fh)->can_read($limit);
	my $n = sysread($fh, my $buf, 16) or return undef;
	my ($t, undef, $id) = unpack('L L Q', $buf);
	return [ $t, $id ];
}
sub woken {
	my ($fh, $id, $limit) = @_;
	my $t0 = time;
	while (time < $t0 + $limit) {
		my $m = recv_msg($fh, $t0 + $limit - time) // return 0;
		return 1 if $m->[0] == WAKE && $m->[1] == $id;
	}
	return 0;
}

my ($r, $a) = (dial(), dial());
use Math::BigInt;
sub slot_of { my $x = Math::BigInt->new($_[0]) * Math::BigInt->from_hex('9e3779b97f4a7c15');
	return (($x % Math::BigInt->new(2)**64) >> 48)->numify }
my ($memfd) = grep { (readlink($_) // '') =~ /ds-notify-interest/ } glob("/proc/$pid/fd/*");
my $tb;
plan skip_all => 'interest table not reachable through /proc' unless $memfd && open($tb, '+<', $memfd);
sub word { my ($i) = @_; sysseek($tb, 4 * $i, 0); sysread($tb, my $b, 4); unpack 'L', $b }
sub word_add { my ($i, $d) = @_; my $v = word($i) + $d; sysseek($tb, 4 * $i, 0); syswrite($tb, pack 'L', $v) }
sub count_of { word(slot_of($_[0])) }
# reader_sub($fh, $id): count in, then SUB with the generation read after.
# (NOTIFY_COUNTED: this SUB is counted in already; the generation is in the low 31 bits.)
sub reader_sub { my ($fh, $id) = @_; word_add(slot_of($id), 1); send_msg($fh, SUB, $id, 0x80000000 | (word(65536 + slot_of($id)) & 0x7fffffff)) }
sub reader_unsub { my ($fh, $id) = @_; send_msg($fh, UNSUB, $id) }
# appender_pub($fh, $id): when counted, bump the generation, then PUB.
sub appender_pub { my ($fh, $id) = @_; return unless count_of($id); word_add(65536 + slot_of($id), 1); send_msg($fh, PUB, $id) }
sleep 0.1;

# Control: SUB first, then PUB, ds-notify idle: the wake comes.
reader_sub($r, 42);
sleep 0.05;
appender_pub($a, 42);
ok(woken($r, 42, 0.5), 'idle daemon: SUB then PUB wakes the reader');
reader_unsub($r, 42);

# Both waiting at once, reader's connection first in the ready list: the wake comes.
kill 'STOP', $pid;
reader_sub($r, 43);
appender_pub($a, 43);
kill 'CONT', $pid;
ok(woken($r, 43, 0.5), 'busy daemon, reader ready first: the wake comes');
reader_unsub($r, 43);
sleep 0.05;

# Both waiting at once, the appender's connection ready first (it had published another
# stream a moment before): the SUB was sent before the PUB, yet the wake is lost.
kill 'STOP', $pid;
send_msg($a, PUB, 999);    # the busy appender's earlier publish
reader_sub($r, 44);        # reader counted in, SUB sent, store checked: nothing yet
appender_pub($a, 44);      # append committed after that check, count seen, PUB sent
kill 'CONT', $pid;
ok(woken($r, 44, 0.5), 'busy daemon, appender ready first: a SUB sent before the PUB still gets the wake');


# The interest count is the workers' (+1 per NOTIFY_SUB sent) minus the daemon's (-1 per
# subscription it drops). A worker whose NOTIFY_UNSUB was lost (EAGAIN on its 200 ms send
# timeout) sends NOTIFY_SUB again for its next reader: the daemon keeps one subscription, so
# the slot stays one too high for good (every append to the streams hashing there is then
# published). Read through /proc, as a worker sees it.
reader_sub($r, 77);                # reader 1: counted, subscribed
# (its NOTIFY_UNSUB is lost: never sent)
reader_sub($r, 77);                # reader 2: counted, subscribed again
reader_unsub($r, 77);              # reader 2 leaves; its UNSUB arrives
sleep 0.1;
is(count_of(77), 0, 'no reader left on stream 77: its slot is back to 0');

# A worker without the table (its mapping failed, its HELLO came late, or it predates the
# table) sends NOTIFY_SUB without NOTIFY_COUNTED: the daemon counts it in for it, so that
# the others still publish to its readers, and out again with its UNSUB.
send_msg($r, SUB, 88);
sleep 0.1;
is(count_of(88), 1, 'an uncounted SUB is counted in by the daemon');
reader_unsub($r, 88);
sleep 0.1;
is(count_of(88), 0, '... and out with its UNSUB');
done_testing;
