#!/usr/bin/perl
# Durability under worker crashes.  Clients append concurrently to a text stream and a JSON
# stream while ds-fcgi workers are SIGKILLed (multiwatch respawns them).  Afterwards the streams
# must hold every acknowledged append exactly once, in acknowledgement order per client, nothing
# torn or stray, producer retries never twice, and HEAD's tail must match the content.
#
# Clients: half send plain POSTs with unique payloads ("[c3-i17]"), never retried; the others
# are idempotent producers (Producer-Id, epoch 0, seq 0,1,2,...) that retry the same seq with the
# same body after a connection error or 5xx until it is acknowledged.
#
# Environment: DS_SEED=N replays a run; DS_CRASH_SECONDS=N sets the burst length (default 12).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use Fcntl qw(O_WRONLY O_APPEND O_CREAT);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Stack;

my $seed = $ENV{DS_SEED} // (time() ^ ($$ << 8)) & 0x7fffffff;
srand($seed);
diag("seed $seed (DS_SEED=$seed replays the client mix and kill schedule)");

my $BURST   = $ENV{DS_CRASH_SECONDS} // 12;   # seconds of appends
my $GRACE   = 10;                             # extra time producers get to finish a retry
my $TEXT    = 'crash/text';
my $JSONS   = 'crash/json';
my $t_start = time;
my @kids;
local $SIG{ALRM} = sub {
	kill 'KILL', @kids if @kids;
	die "40-crash: timed out after 58 s\n";
};
alarm 58;

my $s = Stack->start(workers => 2, threads => 8);
note($s->{ready_line});
$s->must(201, PUT => $TEXT, { 'Content-Type' => 'text/plain' }, undef, 'create text stream');
$s->must(201, PUT => $JSONS, { 'Content-Type' => 'application/json' }, undef, 'create JSON stream');
subtest 'the pool starts with two workers' => sub {
	my @w0 = $s->worker_pids;
	is(scalar @w0, 2, 'two workers') or diag("workers: @w0; pool pid " . ($s->pool_pid // 'none'));
};

# ---- clients ----------------------------------------------------------------------------------
# [id, stream, kind]: kind 'i' = plain POST (payload index i), 's' = producer (seq)
my @clients = ((map { [ $_, $TEXT, $_ % 2 ? 's' : 'i' ] } 0 .. 7),
	[ 8, $JSONS, 'i' ], [ 9, $JSONS, 's' ]);
my $logdir = tempdir('ds-crash-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DS_KEEP});
my $t_end = time + $BURST;
my ($kills, @killed) = (0);
subtest 'clients append while workers are SIGKILLed; killed workers are replaced' => sub {
	for my $c (@clients) {
		my $pid = fork // die "fork: $!";
		if ($pid == 0) {
			$SIG{$_} = sub { POSIX::_exit(0) } for qw(TERM INT HUP);
			$SIG{ALRM} = 'DEFAULT';
			alarm 0;
			srand($seed + $c->[0]);
			client(@$c);
			POSIX::_exit(0);
		}
		push @kids, $pid;
	}

	# kill schedule
	sleep 1;
	while (time < $t_end - 1.5) {
		my @w = $s->worker_pids;
		if (@w) {
			if (rand() < 0.3 && @w >= 2) {         # both, one after another
				for my $w (@w[0, 1]) {
					push @killed, $w if eval { $s->kill_worker('KILL', $w) };
					sleep 0.05 + rand(0.3);
				}
			} else {
				my $w = eval { $s->kill_worker('KILL') };
				push @killed, $w if $w;
			}
			$kills = @killed;
		}
		sleep 0.7 + rand(1.3);
	}
	my %done = Stack::reap(@kids);
	@kids = ();
	my @bad_exit = grep { $done{$_} } keys %done;
	ok(!@bad_exit, 'clients exited cleanly') or diag("exit statuses: @done{@bad_exit}");
	note(sprintf('burst over after %.1f s; %d workers killed: %s', time - $t_start, $kills, "@killed"));

	ok($s->wait_pool(15), 'pool is back (2 workers, requests answered)')
		or diag('workers now: ' . join(' ', $s->worker_pids) . "\n" . $s->stderr);
	my @w1 = $s->worker_pids;
	my %killed = map { $_ => 1 } @killed;
	ok(!grep({ $killed{$_} } @w1), 'killed workers were replaced') or diag("workers now: @w1");
};

# ---- verify -----------------------------------------------------------------------------------
my (%log, %summary);
for my $c (@clients) {
	my $id = $c->[0];
	open my $fh, '<', "$logdir/c$id" or do { fail("client $id log: $!"); next };
	while (my $l = <$fh>) {
		chomp $l;
		my ($what, $n, $status, $off) = split / /, $l;
		push @{ $log{$id}{$what} }, [ $n, $status, $off ];
	}
}

subtest "$TEXT: every acknowledged append is stored once, in order, nothing else" => sub {
	verify_stream($TEXT, 0, [ grep { $_->[1] eq $TEXT } @clients ]);
};
subtest "$JSONS: every acknowledged message is stored once, in order, nothing else" => sub {
	verify_stream($JSONS, 1, [ grep { $_->[1] eq $JSONS } @clients ]);
};

diag(sprintf('seed %d: %d workers killed; %s; %.1f s', $seed, $kills,
	join('; ', map { "$_: $summary{$_}" } sort keys %summary), time - $t_start));
alarm 0;
done_testing;
exit;

# ---- client process ---------------------------------------------------------------------------
# Appends until the burst ends; logs "A n status offset" for every acknowledged append, "U n
# status" for a plain append whose fate is unknown, "R n status" for a producer's retry, "G n"
# when a producer gave up on seq n, and "E n status body" for an answer that should never come.
sub client {
	my ($id, $path, $kind) = @_;
	my $http = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
	sysopen my $log, "$logdir/c$id", O_WRONLY | O_APPEND | O_CREAT or die "log: $!";
	my $json = $path eq $JSONS;
	my $url = $s->url($path);
	my $ctype = $json ? 'application/json' : 'text/plain';
	my $say = sub { my $l = join(' ', @_) . "\n"; syswrite $log, $l };
	for (my $n = 0; time < $t_end; $n++) {
		my $body = $json ? qq({"c":$id,"$kind":$n}) : "[c$id-$kind$n]";
		my %h = ('Content-Type' => $ctype);
		%h = (%h, 'Producer-Id' => "p$id-$seed", 'Producer-Epoch' => 0, 'Producer-Seq' => $n)
			if $kind eq 's';
		while (1) {
			my $r = $http->request(POST => $url, { headers => \%h, content => $body });
			my $st = $r->{status};
			if ($st >= 200 && $st < 300) {
				$say->('A', $n, $st, $r->{headers}{'stream-next-offset'} // '-');
				last;
			}
			if ($st != 599 && $st < 500) {
				(my $c = $r->{content} // '') =~ s/\s+/ /g;
				$say->('E', $n, $st, substr($c, 0, 100));
				return;
			}
			if ($kind eq 'i') { $say->('U', $n, $st); last }
			if (time > $t_end + $GRACE) { $say->('G', $n); return }
			$say->('R', $n, $st);
			sleep 0.02 + rand(0.05);
		}
	}
}

# ---- checks -----------------------------------------------------------------------------------
sub read_stream {
	my ($path) = @_;
	my $err;
	for (1 .. 20) {
		my @r = eval { $s->read_all($path) };
		return @r if @r;
		$err = $@;
		sleep 0.25;
	}
	fail("read $path");
	diag($err);
	return;
}

sub verify_stream {
	my ($path, $is_json, $clients) = @_;
	my ($content, $next, $resps) = read_stream($path) or return;
	my $head = $s->req(HEAD => $path);
	is($head->{headers}{'stream-next-offset'}, $next, "$path: HEAD tail equals the read's last Stream-Next-Offset");

	# Parse the whole content into tokens [client, kind, n, end position]; nothing else may be there.
	my @tok;
	my $parsed_ok = 1;
	if ($is_json) {
		my $js = JSON::PP->new;
		for my $resp (@$resps) {
			my $arr = eval { $js->decode($resp->{content}) };
			if (ref $arr ne 'ARRAY') { $parsed_ok = 0; diag("$path: not a JSON array: " . substr($resp->{content}, 0, 200)); last }
			for my $m (@$arr) {
				my ($kind) = ref $m eq 'HASH' ? grep { exists $m->{$_} } qw(i s) : ();
				if (!$kind || !defined $m->{c} || keys %$m != 2) {
					$parsed_ok = 0;
					diag("$path: stray message " . $js->encode($m));
					next;
				}
				push @tok, [ $m->{c}, $kind, $m->{$kind}, undef ];
			}
		}
		ok($parsed_ok, "$path: every message is a whole client message (" . scalar(@tok) . ' messages)');
	} else {
		while ($content =~ /\G\[c(\d+)-([is])(\d+)\]/gc) {
			push @tok, [ $1, $2, $3, pos($content) ];
		}
		my $pos = pos($content) // 0;
		$parsed_ok = $pos == length $content;
		ok($parsed_ok, "$path: content is whole payloads only (" . scalar(@tok) . " payloads, "
			. length($content) . ' bytes)')
			or diag("$path: junk at byte $pos: '" . substr($content, $pos, 60) . "'");
		my ($tail) = ($head->{headers}{'stream-next-offset'} // '') =~ /^\d{16}_(\d{16})$/;
		is(defined $tail ? $tail + 0 : undef, length $content, "$path: HEAD Stream-Next-Offset is the byte length");
	}

	my (%where, %count);
	for my $k (0 .. $#tok) {
		my $key = "$tok[$k][0]-$tok[$k][1]$tok[$k][2]";
		$count{$key}++;
		$where{$key} //= $k;
	}
	my ($acked, $dup, $lost, $order, $unk_stored, $unk_dup, $stray, $offbad, $errors, $gaveup) = (0) x 10;
	my %known;
	for my $c (@$clients) {
		my ($id, undef, $kind) = @$c;
		my $L = $log{$id} // {};
		$errors += @{ $L->{E} // [] };
		diag("$path: client $id: unexpected answer to #$_->[0]: $_->[1] $_->[2]") for @{ $L->{E} // [] };
		$gaveup += @{ $L->{G} // [] };
		my $last = -1;
		for my $ak (@{ $L->{A} // [] }) {
			my $key = "$id-$kind$ak->[0]";
			$known{$key} = 1;
			$acked++;
			my $n = $count{$key} // 0;
			if ($n == 0) { $lost++; diag("$path: acknowledged append $key is missing") if $lost <= 5; next }
			if ($n > 1) { $dup++; diag("$path: acknowledged append $key stored $n times") if $dup <= 5 }
			if ($where{$key} < $last) {
				$order++;
				diag("$path: $key stored before an earlier acknowledged append of client $id") if $order <= 5;
			}
			$last = $where{$key};
			# The acknowledgement's Stream-Next-Offset must point right after the payload (not for
			# a producer's duplicate, 204, which may carry the current tail).
			if (!$is_json && !($kind eq 's' && $ak->[1] == 204) && defined $tok[ $where{$key} ][3]) {
				my ($endb) = ($ak->[2] // '') =~ /^\d{16}_(\d{16})$/;
				if (!defined $endb || $endb != $tok[ $where{$key} ][3]) {
					$offbad++;
					diag("$path: $key acknowledged with offset $ak->[2], stored ending at byte $tok[$where{$key}][3]")
						if $offbad <= 5;
				}
			}
		}
		for my $u (@{ $L->{U} // [] }, @{ $L->{G} // [] }) {
			my $key = "$id-$kind$u->[0]";
			$known{$key} = 1;
			my $n = $count{$key} // 0;
			$unk_stored++ if $n;
			if ($n > 1) { $unk_dup++; diag("$path: unacknowledged append $key stored $n times") }
		}
	}
	for my $key (keys %count) {
		next if $known{$key};
		$stray++;
		diag("$path: $key is stored but was never sent or never finished") if $stray <= 5;
	}
	# A producer's seqs must be stored in seq order, whatever was acknowledged.
	my %pseq;
	my $porder = 0;
	for my $t (@tok) {
		next unless $t->[1] eq 's';
		$porder++ if defined $pseq{ $t->[0] } && $t->[2] <= $pseq{ $t->[0] };
		$pseq{ $t->[0] } = $t->[2];
	}

	ok($acked > 0, "$path: appends were acknowledged ($acked)");
	is($errors, 0, "$path: no unexpected (4xx) answers");
	is($lost, 0, "$path: every acknowledged append is stored");
	is($dup, 0, "$path: no acknowledged append is stored twice");
	is($order, 0, "$path: per client, acknowledged appends are stored in acknowledgement order");
	is($porder, 0, "$path: producers' appends are stored in seq order, each seq once");
	is($unk_dup, 0, "$path: unacknowledged appends are stored at most once");
	is($stray, 0, "$path: nothing stored that no client sent");
	is($offbad, 0, "$path: acknowledged offsets match stored positions") unless $is_json;
	is($gaveup, 0, "$path: producers got every retry acknowledged");
	my @L = map { $log{ $_->[0] } // {} } @$clients;
	my @P = map { $log{ $_->[0] } // {} } grep { $_->[2] eq 's' } @$clients;
	$summary{$path} = sprintf('%d acked (%d as duplicates), %d producer retries, %d plain appends '
		. 'unknown (%d of them stored), %d bytes', $acked,
		scalar(grep { $_->[1] == 204 } map { @{ $_->{A} // [] } } @P),
		scalar(map { @{ $_->{R} // [] } } @L), scalar(map { @{ $_->{U} // [] } } @L), $unk_stored,
		length $content);
}
