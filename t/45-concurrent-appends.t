#!/usr/bin/perl
# Many writers on one stream at once.  32 clients, forked, each with its own keep-alive
# connection, append to ONE stream for a few seconds across all workers of a pool
# of 4; first to a text/plain stream, then to an application/json one.  The store may
# batch concurrent appends (group commit); whatever it does, the stream must afterwards hold
# exactly what was acknowledged, whole, once, in each writer's order, and nothing else.
#
# The clients:
#   - 24 plain appenders: unique payloads "[c7-i12...]" (text) or {"c":7,"t":"i12",...} (JSON,
#     one value or an array of one to three values), some padded to a few KiB, a few to 16-64 KiB;
#   - 8 idempotent producers (Producer-Id distinct per client, epoch 0, seq 0,1,2,...), among them
#       * one that moves to epoch 1 (seq 0 again) mid-run and later sends one request still at
#         epoch 0: 403 with Producer-Epoch: 1, and that body is not stored;
#       * one that skips a seq twice mid-run: 409 with Producer-Expected-Seq and
#         Producer-Received-Seq, not stored; it then goes on with the expected seq;
#       * one that now and then sends an acknowledged seq again with the same body: 204, stored
#         once, Producer-Seq the highest accepted.
# Afterwards, per stream: every answer was the expected one (with its headers); every 2xx
# append is stored exactly once and each client's appends are stored in the order it sent them;
# the values of one JSON append are stored next to each other; every refused append is absent;
# the content is whole payloads only; a text append's Stream-Next-Offset points right after its
# payload; HEAD's Stream-Next-Offset is the read's (and, for text, the byte length); no worker
# died.  At the end ds-admin verify passes on the stopped stack's data.
#
# Environment: DS_SEED=N replays a run (payload sizes, JSON shapes, the producers' timing);
# DS_CONC_SECONDS=N sets each burst's length (default 4).
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
diag("seed $seed (DS_SEED=$seed replays payload sizes, JSON shapes and the producers' timing)");

my $BURST   = $ENV{DS_CONC_SECONDS} // 4;
my $CLIENTS = 32;
my %ROLE = (24 => 'stale', 25 => 'gap', 26 => 'dup');    # 27..31: plain producers
my $t_start = time;
my @kids;
local $SIG{ALRM} = sub {
	kill 'KILL', @kids if @kids;
	die "45-concurrent-appends: timed out after 60 s\n";
};
alarm 60;

# Four workers, more than scripts/run's default on 2 CPUs: more processes contending per stream.
my $s = Stack->start(workers => 4);
note($s->{ready_line});
my @workers0 = $s->worker_pids;
subtest 'the pool starts with four workers' => sub {
	is(scalar @workers0, 4, 'four workers') or diag("workers: @workers0");
};

my $logdir = tempdir('ds-conc-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DS_KEEP});
my $js = JSON::PP->new->canonical;
my %summary;

for my $st ([ 'conc/text', 0 ], [ 'conc/json', 1 ]) {
	my ($path, $is_json) = @$st;
	my $ctype = $is_json ? 'application/json' : 'text/plain';
	$s->must(201, PUT => $path, { 'Content-Type' => $ctype }, undef, "$path: created");
	subtest "$path: $CLIENTS clients append at once for ${BURST} s" => sub {
		run_clients($path, $is_json);
	};
	subtest "$path: every answer is the expected one, with its headers" => sub {
		check_answers($path);
	};
	subtest "$path: every acknowledged append is stored once, in order, refused ones absent, nothing else" => sub {
		check_stream($path, $is_json);
	};
	subtest "$path: no worker died" => sub {
		is(join(' ', $s->worker_pids), join(' ', @workers0), 'the same four workers');
	};
}

subtest 'ds-admin verify passes on the stopped stack' => sub {
	$s->stop;
	is($s->{exit_status}, 0, 'the stack stopped cleanly');
	my $bin = Stack::admin_bin();
	my $out = `$bin --data ${\ $s->data_dir} verify 2>&1`;
	my $rc = $? >> 8;
	is($rc, 0, 'ds-admin verify exits 0') or diag($out);
	like($out, qr/verify: \d+ streams, 0 problems/, 'no problems reported') or diag($out);
};

diag(sprintf('seed %d: %s; %.1f s', $seed,
	join('; ', map { "$_: $summary{$_}" } sort keys %summary), time - $t_start));
alarm 0;
done_testing;
exit;

# ---- clients ----------------------------------------------------------------------------------

sub run_clients {
	my ($path, $is_json) = @_;
	my $t0 = time;
	my $t_end = $t0 + $BURST;
	my $go = $t0 + 0.3;    # all start together
	for my $id (0 .. $CLIENTS - 1) {
		my $pid = fork // die "fork: $!";
		if ($pid == 0) {
			$SIG{$_} = sub { POSIX::_exit(0) } for qw(TERM INT HUP);
			$SIG{ALRM} = 'DEFAULT';
			alarm 0;
			srand($seed + 1000 * $is_json + $id);
			my $ok = eval { client($path, $is_json, $id, $go, $t_end); 1 };
			print STDERR "# client $id: $@" unless $ok;
			POSIX::_exit($ok ? 0 : 1);
		}
		push @kids, $pid;
	}
	my %done = Stack::reap(@kids);
	@kids = ();
	my @bad = grep { $done{$_} } keys %done;
	ok(!@bad, "all $CLIENTS clients exited cleanly") or diag("exit statuses: @done{@bad}");
	note(sprintf('%s: burst over after %.1f s', $path, time - $t0));
}

# pad(): the padding of one payload: mostly short, sometimes a few KiB, rarely 16-64 KiB.
sub pad {
	my $r = rand;
	return '.' x ($r < 0.02 ? 16384 + int rand 49152 : $r < 0.15 ? int rand 4096 : int rand 40);
}

# client($path, $is_json, $id, $go, $t_end): appends until $t_end, logging one JSON line per
# request to $logdir/<path>.c<id>: {tags => [[tag, padlen], ...], want => expected status,
# st => status, off => Stream-Next-Offset, h => producer headers of the answer, ep/sq => the
# epoch and seq sent, dup => 1 for a producer's repeat of an acknowledged seq}.
sub client {
	my ($path, $is_json, $id, $go, $t_end) = @_;
	my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 15, agent => "ds-conc/$id");
	(my $f = $path) =~ s{/}{-}g;
	sysopen my $log, "$logdir/$f.c$id", O_WRONLY | O_APPEND | O_CREAT or die "log: $!";
	my $url = $s->url($path);
	my $ctype = $is_json ? 'application/json' : 'text/plain';
	my $role = $id < 24 ? 'plain' : $ROLE{$id} // 'prod';
	my $pid_hdr = "p$id-$seed";
	my $span = $t_end - $go;
	# When the stale producer moves to epoch 1 and sends its stale request, when the gap
	# producer skips: fractions of the burst, from the seed.
	my @events = $role eq 'stale' ? ($go + $span * (0.2 + rand 0.15), $go + $span * (0.55 + rand 0.2))
		: $role eq 'gap' ? ($go + $span * (0.25 + rand 0.15), $go + $span * (0.6 + rand 0.15)) : ();

	# body(@tags): the body carrying these [tag, pad] payloads (JSON: an array when $arr).
	my $body = sub {
		my ($arr, @t) = @_;
		return join '', map { "[c$id-$_->[0]$_->[1]]" } @t unless $is_json;
		my @v = map { { c => $id, t => $_->[0], p => $_->[1] } } @t;
		return $js->encode($arr ? \@v : $v[0]);
	};
	my $send = sub {
		my ($rec, $b, %prod) = @_;
		my %h = ('Content-Type' => $ctype);
		if (%prod) {
			%h = (%h, 'Producer-Id' => $pid_hdr, 'Producer-Epoch' => $prod{ep}, 'Producer-Seq' => $prod{sq});
			@$rec{qw(ep sq)} = @prod{qw(ep sq)};
		}
		my $r = $http->request(POST => $url, { headers => \%h, content => $b });
		$rec->{st} = $r->{status};
		$rec->{off} = $r->{headers}{'stream-next-offset'};
		$rec->{h}{$_} = $r->{headers}{$_} for grep { defined $r->{headers}{$_} }
			qw(producer-epoch producer-seq producer-expected-seq producer-received-seq);
		if ($r->{status} >= 400 || $r->{status} == 599) {
			($rec->{body} = substr($r->{content} // '', 0, 200)) =~ s/\s+/ /g;
		}
		$rec->{pads} = [ map { length $_->[1] } @{ $rec->{tags} } ];
		$rec->{tags} = [ map { $_->[0] } @{ $rec->{tags} } ];
		syswrite $log, $js->encode($rec) . "\n";
		return $r->{status};
	};

	sleep($go - time) if $go > time;
	my ($ep, $sq, $n) = (0, 0, 0);
	my $ep_letter = 's';    # tags of epoch 0 are s<seq>, of epoch 1 e<seq>
	while (time < $t_end || @events) {
		$n++;
		if ($role eq 'plain') {
			my $k = $is_json && rand() < 0.5 ? 1 + int rand 3 : 1;
			my $arr = $is_json && ($k > 1 || rand() < 0.5);
			my @t = map { [ $k > 1 ? "i${n}x$_" : "i$n", pad() ] } 1 .. $k;
			$send->({ tags => \@t, want => 204 }, $body->($arr, @t));
			next;
		}
		if ($role eq 'stale' && @events && time >= $events[0]) {
			shift @events;
			if ($ep == 0) {    # a new session: epoch 1, seq from 0
				($ep, $sq, $ep_letter) = (1, 0, 'e');
			} else {           # one request from the old session: refused
				my @t = ([ "z$n", pad() ]);
				$send->({ tags => \@t, want => 403, stale => 1 }, $body->(0, @t), ep => 0, sq => $n);
				next;
			}
		}
		if ($role eq 'gap' && @events && time >= $events[0]) {
			shift @events;
			my $skip = 1 + int rand 4;
			my @t = ([ "g$n", pad() ]);
			$send->({ tags => \@t, want => 409, gap => 1, expect_seq => $sq }, $body->(0, @t),
				ep => $ep, sq => $sq + $skip);
			next;
		}
		my @t = ([ "$ep_letter$sq", pad() ]);
		my $b = $body->(rand() < 0.3, @t);
		my $st = $send->({ tags => [@t], want => 200 }, $b, ep => $ep, sq => $sq);
		# A repeat of the seq just acknowledged, with the same body: a duplicate.
		$send->({ tags => [@t], want => 204, dup => 1 }, $b, ep => $ep, sq => $sq)
			if $role eq 'dup' && $st == 200 && rand() < 0.3;
		$sq++;
	}
}

# ---- checks -----------------------------------------------------------------------------------

# logs($path): { client id => [records in send order] }.
sub logs {
	my ($path) = @_;
	(my $f = $path) =~ s{/}{-}g;
	my %log;
	for my $id (0 .. $CLIENTS - 1) {
		open my $fh, '<', "$logdir/$f.c$id" or do { $log{$id} = []; next };
		$log{$id} = [ map { $js->decode($_) } <$fh> ];
	}
	return \%log;
}

sub check_answers {
	my ($path) = @_;
	my $log = logs($path);
	my (%n, @bad, @hbad);
	for my $id (sort { $a <=> $b } keys %$log) {
		for my $r (@{ $log->{$id} }) {
			my $what = $r->{stale} ? 'stale' : $r->{gap} ? 'gap' : $r->{dup} ? 'dup'
				: defined $r->{ep} ? 'producer' : 'plain';
			$n{$what}++;
			if ($r->{st} != $r->{want}) {
				push @bad, "client $id $what [@{ $r->{tags} }] (epoch "
					. ($r->{ep} // '-') . ' seq ' . ($r->{sq} // '-') . "): $r->{st}, wanted $r->{want}"
					. ($r->{body} ? ": $r->{body}" : '');
				next;
			}
			my $h = $r->{h} // {};
			my @want = $what eq 'stale' ? ([ 'producer-epoch', 1 ])
				: $what eq 'gap' ? ([ 'producer-expected-seq', $r->{expect_seq} ],
					[ 'producer-received-seq', $r->{sq} ])
				: $what eq 'producer' || $what eq 'dup' ? ([ 'producer-epoch', $r->{ep} ],
					[ 'producer-seq', $r->{sq} ])
				: ();
			for my $w (@want) {
				next if defined $h->{ $w->[0] } && $h->{ $w->[0] } eq $w->[1];
				push @hbad, "client $id $what seq $r->{sq}: $w->[0] is "
					. ($h->{ $w->[0] } // 'missing') . ", wanted $w->[1]";
			}
			push @hbad, "client $id $what: no Stream-Next-Offset"
				if $r->{st} < 300 && !defined $r->{off};
		}
	}
	ok($n{plain} && $n{producer}, "plain appends ($n{plain}) and producer appends ("
		. ($n{producer} // 0) . ') were sent');
	is($n{stale} // 0, 1, 'one stale-epoch request was sent');
	is($n{gap} // 0, 2, 'two sequence gaps were sent');
	ok($n{dup}, 'duplicates were sent (' . ($n{dup} // 0) . ')');
	is(scalar @bad, 0, 'every request got its expected status (plain 204, producer 200, '
		. 'duplicate 204, stale epoch 403, gap 409)') or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
	is(scalar @hbad, 0, 'answers carry the right Producer-Epoch/-Seq, Producer-Expected-Seq/'
		. '-Received-Seq and Stream-Next-Offset headers') or diag(join "\n", @hbad[0 .. ($#hbad < 9 ? $#hbad : 9)]);
}

sub read_stream {
	my ($path) = @_;
	my @r = eval { $s->read_all($path) };
	return @r if @r;
	fail("read $path");
	diag($@);
	return;
}

sub check_stream {
	my ($path, $is_json) = @_;
	my $log = logs($path);
	my ($content, $next, $resps) = read_stream($path) or return;
	my $head = $s->req(HEAD => $path);
	is($head->{headers}{'stream-next-offset'}, $next, "HEAD's Stream-Next-Offset is the read's last one");

	# The stored payloads in order: [client, tag, pad length, end byte (text)].
	my @tok;
	if ($is_json) {
		my $whole = 1;
		for my $resp (@$resps) {
			my $arr = eval { $js->decode($resp->{content}) };
			if (ref $arr ne 'ARRAY') {
				$whole = 0;
				diag('not a JSON array: ' . substr($resp->{content}, 0, 200));
				last;
			}
			for my $m (@$arr) {
				if (ref $m ne 'HASH' || keys %$m != 3 || grep({ !defined $m->{$_} } qw(c t p))
					|| $m->{p} !~ /^\.*\z/) {
					$whole = 0;
					diag('stray message ' . $js->encode($m));
					next;
				}
				push @tok, [ $m->{c}, $m->{t}, length $m->{p}, undef ];
			}
		}
		ok($whole, 'every message is a whole client value (' . scalar(@tok) . ' messages, '
			. length($content) . ' bytes read)');
	} else {
		while ($content =~ /\G\[c(\d+)-([a-z0-9]+)(\.*)\]/gc) {
			push @tok, [ $1, $2, length $3, pos($content) ];
		}
		my $pos = pos($content) // 0;
		ok($pos == length $content, 'the content is whole payloads only (' . scalar(@tok)
			. ' payloads, ' . length($content) . ' bytes)')
			or diag("junk at byte $pos: '" . substr($content, $pos, 60) . "'");
		my ($tail) = ($head->{headers}{'stream-next-offset'} // '') =~ /^\d{16}_(\d{16})$/;
		is(defined $tail ? $tail + 0 : undef, length $content, "HEAD's Stream-Next-Offset is the byte length");
	}

	my (%where, %count);
	for my $k (0 .. $#tok) {
		my $key = "$tok[$k][0]-$tok[$k][1]";
		$count{$key}++;
		$where{$key} //= $k;
	}
	my ($stored, $lost, $dup, $order, $present, $padbad, $offbad, $apart) = (0) x 8;
	my %known;
	my $say = sub { my ($n, $msg) = @_; diag($msg) if $n <= 5 };
	for my $id (sort { $a <=> $b } keys %$log) {
		my $last = -1;
		for my $r (@{ $log->{$id} }) {
			my @keys = map { "$id-$_" } @{ $r->{tags} };
			$known{$_} = 1 for @keys;
			next if $r->{dup};    # the original is checked on its own record
			if ($r->{st} < 200 || $r->{st} >= 300) {    # refused (or failed): absent
				for my $k (grep { $count{$_} } @keys) {
					$say->(++$present, "$k was answered $r->{st} but is stored $count{$k} times");
				}
				next;
			}
			my $prev;
			for my $i (0 .. $#keys) {
				my $k = $keys[$i];
				my $c = $count{$k} // 0;
				if ($c == 0) { $say->(++$lost, "acknowledged $k ($r->{st}) is missing"); next }
				$stored++;
				$say->(++$dup, "acknowledged $k is stored $c times") if $c > 1;
				my $w = $where{$k};
				$say->(++$order, "$k is stored before an append client $id sent earlier") if $w < $last;
				$last = $w;
				$say->(++$apart, "$k is not stored right after the value before it in the same append")
					if defined $prev && $w != $prev + 1;
				$prev = $w;
				$say->(++$padbad, "$k stored with $tok[$w][2] bytes of padding, sent with $r->{pads}[$i]")
					if $tok[$w][2] != $r->{pads}[$i];
			}
			# Text: the acknowledgement's Stream-Next-Offset points right after the payload.
			if (!$is_json && @keys == 1 && $count{ $keys[0] }) {
				my ($end) = ($r->{off} // '') =~ /^\d{16}_(\d{16})$/;
				my $at = $tok[ $where{ $keys[0] } ][3];
				$say->(++$offbad, "$keys[0] acknowledged with offset " . ($r->{off} // 'none')
					. ", stored ending at byte $at") if !defined $end || $end != $at;
			}
		}
	}
	my @stray = grep { !$known{$_} } sort keys %count;
	diag("stored but never sent: @stray[0 .. ($#stray < 9 ? $#stray : 9)]") if @stray;

	ok($stored > 0, "acknowledged appends are stored ($stored payloads)");
	is($lost, 0, 'every acknowledged append is stored');
	is($dup, 0, 'no acknowledged append (or repeated producer seq) is stored twice');
	is($order, 0, "each client's appends are stored in the order it sent them");
	is($apart, 0, 'the values of one JSON append are stored together, in order') if $is_json;
	is($padbad, 0, 'every payload is stored with its own length');
	is($offbad, 0, "each append's Stream-Next-Offset points right after its payload") unless $is_json;
	is($present, 0, 'refused appends (stale epoch, sequence gap) are not stored');
	is(scalar @stray, 0, 'nothing is stored that no client sent');
	is(scalar @tok, $stored, 'the stream holds exactly the acknowledged payloads');
	my $reqs = 0;
	$reqs += @{ $log->{$_} } for keys %$log;
	$summary{$path} = sprintf('%d requests, %d payloads stored, %d bytes', $reqs, scalar @tok, length $content);
}
