#!/usr/bin/perl
# Metrics (GET /metrics, Prometheus text format) for the whole pool.
#
#  1. After a known mix of requests, the counters have exactly the values the mix implies:
#     requests by method and status class, appends, bytes appended and read, streams created
#     and deleted, batch sizes, fsyncs (the histograms agree with their counts).
#  2. They are the pool's sums: six appends held in flight at once on a pool of 3 workers x 2
#     threads land in every worker's slot of DATA/run/metrics, every scrape (whichever worker
#     answers it) shows the same sums, and the slots of the file add up to what it shows.
#  3. Gauges: a parked long-poll and a connected SSE reader are counted while they wait and no
#     longer after; every worker is connected to ds-notify; the LMDB map adds up.
#  4. A worker SIGKILLed and respawned counts as a restart, and what it had counted stays.
#  5. /metrics is never reached through a stream URL (/v1/stream/metrics, dot segments, their
#     encodings), and answers only GET and HEAD.
#  6. lighttpd and Caddy serve /metrics too (skipped when not installed).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "86-metrics: timed out after 120 s\n" };
alarm 120;

my $T = { 'Content-Type' => 'text/plain' };

# scrape($s): { 'name{labels}' => value } from GET /metrics; checks the format on the way.
sub scrape {
	my ($s) = @_;
	my $r = $s->req(GET => '/metrics');
	die "GET /metrics: $r->{status} $r->{content}\n" unless $r->{status} == 200;
	my (%m, %typed, @bad);
	for my $l (split /\n/, $r->{content}) {
		if ($l =~ /^# (HELP|TYPE) (\w+) (.+)$/) {
			$typed{$2} = $3 if $1 eq 'TYPE';
			next;
		}
		if ($l =~ /^(\w+)(\{[^}]*\})? (-?[0-9.e+]+)$/) {
			my ($n, $fam) = ($1, $1);
			$m{ $n . ($2 // '') } = $3;
			$fam =~ s/_(bucket|sum|count)$// unless $typed{$n};
			push @bad, "$l (no TYPE)" unless $typed{$fam};
			next;
		}
		push @bad, $l;
	}
	die "malformed metrics lines:\n" . join("\n", @bad) . "\n" if @bad;
	return \%m;
}

sub req_count {
	my ($m, $method, $class) = @_;
	return $m->{"ds_http_requests_total{method=\"$method\",code=\"$class\"}"} // 'missing';
}

# slots($s): per-slot request totals and the summed request counters, from DATA/run/metrics.
sub slots {
	my ($s) = @_;
	my $f = $s->data_dir . '/run/metrics';
	open my $fh, '<:raw', $f or die "$f: $!";
	local $/;
	my $d = <$fh>;
	my ($magic, $size, $nslots) = unpack('a8 L L', $d);
	die "$f: magic $magic" unless $magic eq 'DSMETRC3' && $size == length $d;
	my $slot = (length($d) - 64) / $nslots;    # the slots start at byte 64
	my (@per, $total);
	for my $i (0 .. $nslots - 1) {
		my $off = 64 + $i * $slot;
		my @req = unpack('Q35', substr($d, $off + 8, 35 * 8));
		my $n = 0;
		$n += $_ for @req;
		push @per, $n;
		$total += $n;
	}
	return (\@per, $total);
}

my $s = Stack->start(workers => 3, threads => 2, args => [ '--', '--test-hooks', '--sse-heartbeat', '1000' ]);

# ---- 1 and 2: a known mix ---------------------------------------------------------------------
my $m0 = scrape($s);
$s->must(201, PUT => 'a', $T, '0123456789');
$s->must(201, PUT => 'b', $T);
$s->must(201, PUT => 'c', { %$T, 'Stream-Closed' => 'true' }, 'xyz');
$s->must(204, POST => 'a', $T, 'abcde') for 1 .. 3;
my %P = ('Producer-Id' => 'p1', 'Producer-Epoch' => 0);
$s->must(200, POST => 'b', { %$T, %P, 'Producer-Seq' => 0 }, '12345678');
$s->must(200, POST => 'b', { %$T, %P, 'Producer-Seq' => 1 }, '12');
$s->must(204, POST => 'b', { %$T, %P, 'Producer-Seq' => 1 }, '12', 'producer retry: a duplicate');
$s->must(409, POST => 'c', $T, 'q', 'append to a closed stream');
$s->must(409, POST => 'a', { 'Content-Type' => 'application/json' }, '[1]', 'content type mismatch');
my $ra = $s->must(200, GET => 'a?offset=-1');
is($ra->{content}, '0123456789abcdeabcdeabcde', 'a reads back');
$s->must(200, GET => 'b?offset=-1');
$s->must(200, GET => 'c?offset=-1');
$s->must(200, GET => "a?offset=$ra->{headers}{'stream-next-offset'}", undef, undef, 'read at the tail');
$s->must(200, HEAD => 'a') for 1 .. 2;
$s->must(404, GET => 'nope') for 1 .. 2;
$s->must(201, PUT => 'f', { 'Stream-Forked-From' => '/v1/stream/a' });
$s->must(204, DELETE => 'b');
$s->must(404, DELETE => 'nope');
$s->must(204, OPTIONS => 'a');

# Six appends held 1 s each between their check and the store (--test-hooks): with 3 workers
# of 2 threads, all six threads hold one at once, so every worker serves two.
$s->must(201, PUT => "p$_", $T) for 0 .. 5;
my @kids;
for my $i (0 .. 5) {
	my $pid = fork // die "fork: $!";
	if (!$pid) {
		my $r = $s->req(POST => "p$i", { %$T, 'X-DS-Test-Pause' => 1000 }, 'data');
		_exit($r->{status} == 204 ? 0 : 1);
	}
	push @kids, $pid;
}
my %done = Stack::reap(@kids);
is(scalar(grep { $_ == 0 } values %done), 6, 'six paused appends answered 204');

my $m1 = scrape($s);
my %want = (    # differences from the first scrape, which itself is one GET 2xx
	'GET 2xx' => 4 + 1, 'GET 4xx' => 2, 'HEAD 2xx' => 2, 'PUT 2xx' => 4 + 6,
	'POST 2xx' => 6 + 6, 'POST 4xx' => 2, 'DELETE 2xx' => 1, 'DELETE 4xx' => 1,
	'OPTIONS 2xx' => 1, 'PUT 4xx' => 0, 'GET 5xx' => 0, 'POST 5xx' => 0,
);
for my $k (sort keys %want) {
	my ($meth, $class) = split / /, $k;
	is(req_count($m1, $meth, $class) - req_count($m0, $meth, $class), $want{$k},
		"ds_http_requests_total $meth $class grew by $want{$k}");
}
my %d = map { $_ => ($m1->{$_} // 0) - ($m0->{$_} // 0) } keys %$m1;
is($d{ds_appends_total}, 5 + 6, 'appends: 5 of the mix (not the retry) and the 6 held ones');
is($d{ds_appended_bytes_total}, 15 + 10 + 24, 'bytes appended');
is($d{ds_read_bytes_total}, 25 + 10 + 3, 'bytes read: a, b and c whole, nothing at the tail');
is($d{ds_streams_created_total}, 4 + 6, 'streams created (a fork counts)');
is($d{ds_streams_deleted_total}, 1, 'streams deleted');
is($d{ds_append_batch_size_count}, 11, 'one batch per append: one stream each, or one after another');
is($d{ds_append_batch_size_sum}, 11, 'batch sizes sum to the appends');
is($d{'ds_append_batch_size_bucket{le="1"}'}, 11, 'every batch in the le="1" bucket');
# Every batch syncs LMDB. A segment is synced when it is made: by the creates with a body (a, c)
# and the first bytes of b and p0-p5. (A create without a body makes no segment file, so syncs
# none: store/segment.c; an append into a segment's room commits its bytes with its metadata
# and syncs no segment: store/journal.c.)
my %least = (segment => [ 2 + 1 + 6, 'one per segment file made' ], lmdb => [ 11, 'one per batch' ]);
for my $f (qw(segment lmdb)) {
	ok($d{"ds_fsyncs_total{file=\"$f\"}"} >= $least{$f}[0], "$f fsyncs: at least $least{$f}[1]");
	is($m1->{"ds_fsync_duration_seconds_count{file=\"$f\"}"}, $m1->{"ds_fsyncs_total{file=\"$f\"}"},
		"$f fsync histogram counts every fsync");
	is($m1->{"ds_fsync_duration_seconds_bucket{file=\"$f\",le=\"+Inf\"}"},
		$m1->{"ds_fsyncs_total{file=\"$f\"}"}, "$f +Inf bucket holds them all");
}

subtest 'the scrape is the sum over every worker' => sub {
	my ($per, $total) = slots($s);
	my @busy = grep { $_ > 0 } @$per;
	diag('requests per slot: ' . join(' ', @busy));
	cmp_ok(scalar(@busy), '>=', 3, 'three workers counted requests in their own slots');
	my $m = scrape($s);
	my $sum = 0;
	$sum += $m->{$_} for grep { /^ds_http_requests_total/ } keys %$m;
	is($sum, $total, 'the scrape shows the slots summed (a scrape counts itself after it is written)');
	# Whichever worker answers, the sums are the same.
	my @apps = map { scrape($s)->{ds_appends_total} } 1 .. 8;
	is_deeply(\@apps, [ ($m1->{ds_appends_total}) x 8 ], 'eight scrapes show the same appends');
	is($m->{ds_workers}, 3, 'ds_workers is 3');
};

# ---- 3: gauges --------------------------------------------------------------------------------
sub wait_for {
	my ($name, $want, $limit) = @_;
	my $v;
	my $t0 = time;
	do { $v = scrape($s)->{$name}; return $v if $v == $want; sleep 0.1 } while time - $t0 < $limit;
	return $v;
}

subtest 'gauges: long-polls waiting, SSE readers, notifier, LMDB map' => sub {
	my $m = scrape($s);
	is($m->{ds_longpolls_waiting}, 0, 'no long-poll waiting yet');
	is($m->{ds_sse_readers}, 0, 'no SSE reader yet');
	is($m->{ds_notifier_connected}, 3, 'every worker is connected to ds-notify');
	is($m->{ds_lmdb_map_used_bytes} + $m->{ds_lmdb_map_free_bytes}, $m->{ds_lmdb_map_size_bytes},
		'LMDB map: used + free = size');
	cmp_ok($m->{ds_lmdb_map_used_bytes}, '>', 0, 'LMDB map: some of it used');

	my $lp = $s->live_socket('a', 'now', 'long-poll');
	is(wait_for('ds_longpolls_waiting', 1, 5), 1, 'a parked long-poll counts');
	$s->must(204, POST => 'a', $T, 'wake');
	is(wait_for('ds_longpolls_waiting', 0, 5), 0, 'answered, it counts no more');
	close $lp;

	my $sse = $s->live_socket('a', 'now', 'sse');
	is(wait_for('ds_sse_readers', 1, 5), 1, 'a connected SSE reader counts');
	close $sse;
	is(wait_for('ds_sse_readers', 0, 10), 0, 'gone, it counts no more (seen at a heartbeat)');
};

# ---- 3b: publishes ------------------------------------------------------------------------------
# An append is published to ds-notify only while some worker waits on its stream (the interest
# table, fcgi-app/notify.h); the waiting reader still gets it at once.
subtest 'appends are published to ds-notify only while a reader waits on the stream' => sub {
	my $pubs = sub { scrape($s)->{ds_notify_publishes_total} };
	$s->must(201, PUT => 'quiet', $T);
	my $p0 = $pubs->();
	$s->must(204, POST => 'quiet', $T, "n$_") for 1 .. 20;
	is($pubs->(), $p0, '20 appends nobody waits for: nothing published');

	my $lp = $s->live_socket('quiet', 'now', 'long-poll');
	is(wait_for('ds_longpolls_waiting', 1, 5), 1, 'a long-poll parks on the stream');
	my $t0 = time;
	$s->must(204, POST => 'quiet', $T, 'wake');
	my $got = '';
	$lp->blocking(0);
	while (time - $t0 < 5 && $got !~ /wake/) {
		my $n = sysread($lp, my $buf, 65536);
		$got .= $buf if $n;
		sleep 0.01 unless $n;
	}
	close $lp;
	like($got, qr/wake/, 'the parked reader gets the append');
	cmp_ok(time - $t0, '<', 0.5, '... at once, not at a re-check');
	is($pubs->(), $p0 + 1, 'that append was published');

	# The daemon counts the reader's subscription out when it handles the worker's UNSUB.
	my ($n, $t1) = (0, time);
	while (time - $t1 < 5) {
		my $before = $pubs->();
		$s->must(204, POST => 'quiet', $T, 'after');
		last if $pubs->() == $before;
		$n++;
	}
	cmp_ok($n, '<', 50, "once the reader is gone, appends stop being published ($n were)");
	my $p1 = $pubs->();
	$s->must(204, POST => 'quiet', $T, "m$_") for 1 .. 20;
	is($pubs->(), $p1, '20 more appends: nothing published');
};

# ---- 4: a worker restart ----------------------------------------------------------------------
subtest 'a SIGKILLed worker is a restart, and its counts stay' => sub {
	my $before = scrape($s);
	$s->kill_worker('KILL');
	ok($s->wait_pool(15), 'the pool is whole again');
	wait_for('ds_workers', 3, 10);
	my $m = scrape($s);
	is($m->{ds_worker_restarts_total} - $before->{ds_worker_restarts_total}, 1, 'one restart counted');
	is($m->{ds_worker_starts_total}, 4, 'four worker starts in all');
	is($m->{ds_workers}, 3, 'three workers alive');
	is($m->{ds_appends_total}, $before->{ds_appends_total}, 'appends counted before the kill stay');
	cmp_ok(req_count($m, 'POST', '2xx'), '>=', req_count($before, 'POST', '2xx'),
		'requests counted before the kill stay');
};

# ---- 5: never through a stream URL ------------------------------------------------------------
subtest '/metrics is not reachable through a stream URL' => sub {
	my $r = $s->req(GET => 'metrics');
	is($r->{status}, 404, '/v1/stream/metrics is a stream path: 404, no such stream');
	unlike($r->{content}, qr/ds_http_requests_total/, '...and no metrics in it');
	for my $raw ('/v1/stream/../metrics', '/v1/stream/%2e%2e/metrics', '/v1/stream/%2E%2E%2Fmetrics',
		'/v1/stream//metrics', '/v1/stream/metrics?x=/metrics') {
		my $a = $s->raw("GET $raw HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
		unlike($a->{content} // '', qr/ds_http_requests_total/, "GET $raw: no metrics (status $a->{status})");
	}
	$s->must(201, PUT => 'metrics', $T, 'just a stream');
	is($s->req(GET => 'metrics?offset=-1')->{content}, 'just a stream', 'a stream named metrics reads as one');
	is($s->req(POST => '/metrics', $T, 'x')->{status}, 405, 'POST /metrics: 405');
	my $h = $s->req(HEAD => '/metrics');
	is($h->{status}, 200, 'HEAD /metrics: 200');
	like($h->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'Prometheus text format 0.0.4');
};
$s->stop;

# ---- 6: the other fronts ----------------------------------------------------------------------
for my $front (qw(lighttpd caddy)) {
	subtest "/metrics behind $front" => sub {
		my $f = Stack->start(front => $front, workers => 2, threads => 4);
		$f->must(201, PUT => 'x', $T, 'hi');
		my $m = scrape($f);
		is($m->{ds_streams_created_total}, 1, 'the create is counted');
		is($m->{ds_workers}, 2, 'both workers alive');
		my $r = $f->req(GET => 'metrics');
		is($r->{status}, 404, '/v1/stream/metrics: 404');
		unlike($r->{content}, qr/ds_http_requests_total/, '...and no metrics in it');
		$f->stop;
	};
}

done_testing();
