#!/usr/bin/perl
# retention.pl BASE PATH MIB SEGDIR: appends MIB MiB to the stream at PATH (created here) in
# 64 KiB appends over one keep-alive connection, as fast as the server takes them, while a child
# samples the disk use of SEGDIR (du, which sees punched holes) every 100 ms.  Prints one line:
#   retention path=PATH appended=MIB MiB seconds=S MiB/s=R du_max_kib=K du_end_kib=K
# du_end is taken after the appends, once a further 4 s have let the last trims be punched.
use strict;
use warnings;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);

my ($base, $path, $mib, $segdir) = @ARGV;
die "usage: retention.pl BASE PATH MIB SEGDIR\n" unless $segdir;
my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 30);
my $url = "$base/v1/stream/$path";
my $h = { 'Content-Type' => 'application/octet-stream' };
my $r = $http->put($url, { headers => $h });
die "PUT $path: $r->{status}\n" unless $r->{status} == 201;

sub du_kib { my $o = `du -sk $segdir 2>/dev/null`; return $o =~ /^(\d+)/ ? $1 : 0 }

pipe(my $rd, my $wr) or die "pipe: $!";
my $pid = fork // die "fork: $!";
if (!$pid) {    # the sampler: the largest du seen until the parent closes the pipe
	close $rd;
	my $max = 0;
	my $stop = 0;
	local $SIG{TERM} = sub { $stop = 1 };
	while (!$stop) {
		my $k = du_kib();
		$max = $k if $k > $max;
		sleep 0.1;
	}
	print $wr "$max\n";
	exit 0;
}
close $wr;
my $body = 'r' x 65535 . "\n";
my $n = $mib * 16;
my $t0 = time;
for my $i (1 .. $n) {
	$r = $http->post($url, { headers => $h, content => $body });
	die "POST $path: $r->{status} $r->{content}\n" unless $r->{status} == 204;
}
my $secs = time - $t0;
sleep 4;
my $end = du_kib();
kill TERM => $pid;
my $max = <$rd> // 0;
chomp $max;
waitpid $pid, 0;
printf "retention path=%s appended=%d MiB seconds=%.1f MiB/s=%.1f du_max_kib=%d du_end_kib=%d\n",
	$path, $mib, $secs, $mib / $secs, $max, $end;
