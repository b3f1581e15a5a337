#!/usr/bin/perl
# A full disk.  The data directory lives on a small tmpfs that appends to several streams fill
# (byte and JSON streams, idempotent producers on some).  On the full disk:
#   - appends and creates answer 507 Insufficient Storage (never 500) and store nothing: HEAD
#     tails and reads are unchanged, no byte lies past a committed tail, no orphan segment;
#   - 100 concurrent plain GETs (during the fill and after it) all answer 200 and no worker
#     dies (every page a worker maps must be allocated before it is touched: a first touch of a
#     sparse page on a full tmpfs is SIGBUS);
#   - DELETE answers 204 and frees the space, so that a create and an append succeed again;
# and at the end every acknowledged append reads back intact and `ds-admin verify` passes.
#
# Mounting needs root with CAP_SYS_ADMIN: skipped otherwise.  The tmpfs is unmounted at the end,
# also when a check dies.
#
# Environment: DS_FULL_SIZE=N tmpfs size (default 24m); DS_SEED=N replays the append sizes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::MD5 qw(md5_hex);
use File::Find;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Stack;

my $SIZE = $ENV{DS_FULL_SIZE} // '24m';
my $seed = $ENV{DS_SEED} // (time() ^ ($$ << 8)) & 0x7fffffff;
my $t0   = time;

Stack->need(root => 'to mount a tmpfs');
my $mnt = tempdir('ds-full-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $mount_out = `mount -t tmpfs -o size=$SIZE,mode=0755 tmpfs $mnt 2>&1`;
Stack::skip_all("cannot mount a tmpfs here (no CAP_SYS_ADMIN? e.g. an unprivileged "
	. "container): " . ($mount_out =~ s/\s+/ /gr =~ s/\s+$//r)) if $?;

my $owner = $$;
my ($mounted, $s) = (1);
# Stop the stack (it holds files on the mount), then unmount.  END blocks run in reverse order
# of definition, so this runs before Stack's and File::Temp's.
sub cleanup {
	return unless $mounted && $$ == $owner;
	$s->stop if $s;
	system('umount', $mnt) == 0 or system('umount', '-l', $mnt);
	$mounted = 0;
}
END { local $?; cleanup() }
local $SIG{ALRM} = sub { die "70-full-disk: timed out after 110 s\n" };
alarm 110;

srand($seed);
diag("seed $seed (DS_SEED=$seed replays); tmpfs $SIZE on $mnt");
my $data = "$mnt/data";
# The default 256 threads per worker matter: a thread's first read claims an LMDB reader slot (64
# bytes of lock.mdb, kept by the thread's cached read transaction), and the fill takes far fewer
# requests than the pool has threads, so requests on the full disk still claim slots on lock.mdb
# pages that nobody touched before.
$s = Stack->start(workers => 4, data => $data);
note($s->{ready_line});
my @w0 = $s->worker_pids;
subtest 'the stack starts with four workers' => sub {
	is(scalar @w0, 4, 'four workers');
};

# ---- the model ----------------------------------------------------------------------------
# Per stream: json, producer id (or undef), next producer seq, the acknowledged next offsets, and
# every attempt in order as [what, state]: what is the body (byte stream) or the list of message
# keys (JSON); state is 'acked', 'refused' (507: must not be stored) or 'unknown' (any other
# failure: may be stored or not, whole).
my %st;
my @order = qw(full/b0 full/b1 full/b2 full/j0 full/j1 full/b3);
my %spec = (
	'full/b0' => [ 0, undef ], 'full/b1' => [ 0, 'pb1' ], 'full/b2' => [ 0, undef ],
	'full/j0' => [ 1, undef ], 'full/j1' => [ 1, 'pj1' ], 'full/b3' => [ 0, 'pb3' ],
);
my $VICTIM = 'full/b1';    # deleted on the full disk (it has producer state)
my $SMALL  = 'full/small';
my $js = JSON::PP->new->canonical;
my (%fill_status, $fill_ok, @unexpected);

sub new_stream {
	my ($path, $json, $prod, $body) = @_;
	my $r = $s->req(PUT => $path, { 'Content-Type' => $json ? 'application/json' : 'text/plain' },
		$body);
	$st{$path} = { json => $json, prod => $prod, seq => 0, n => 0, ents => [], offs => [] }
		if $r->{status} == 201;
	return $r;
}

# make_body($path, $len): a body of about $len bytes whose every part names the stream and the
# attempt, so that a read can tell exactly which attempts it holds.
sub make_body {
	my ($path, $len) = @_;
	my $e = $st{$path};
	my $n = $e->{n}++;
	if (!$e->{json}) {
		my $head = sprintf('<%s#%05d|', $path, $n);
		my $pad = $len - length($head) - 1;
		$pad = 0 if $pad < 0;
		my $b = $head . ('x' x $pad) . '>';
		return ($b, $b);
	}
	my $m = 1 + int rand 4;
	my @msgs = map { { s => $path, n => $n, k => $_, p => 'y' x int($len / $m) } } 1 .. $m;
	return ($js->encode(\@msgs), [ map { msg_key($_) } @msgs ]);
}

sub msg_key {
	my ($m) = @_;
	return ref $m eq 'HASH' && defined $m->{s} && defined $m->{n} && defined $m->{k} && defined $m->{p}
		? "$m->{s}#$m->{n}#$m->{k}#" . length($m->{p}) : 'stray:' . $js->encode($m);
}

# append($path, $len): one append; a producer whose last attempt has an unknown fate sends that
# attempt again (same seq, same body) until it is known.  Returns the response.
sub append {
	my ($path, $len) = @_;
	my $e = $st{$path};
	my $ent = $e->{pending};
	if (!$ent) {
		my ($body, $what) = make_body($path, $len);
		$ent = [ $what, 'unknown', $body, $e->{seq} ];
		push @{ $e->{ents} }, $ent;
	}
	my %h = ('Content-Type' => $e->{json} ? 'application/json' : 'text/plain');
	%h = (%h, 'Producer-Id' => $e->{prod}, 'Producer-Epoch' => 0, 'Producer-Seq' => $ent->[3])
		if $e->{prod};
	my $r = $s->req(POST => $path, \%h, $ent->[2]);
	my $st = $r->{status};
	delete $e->{pending};
	if ($st >= 200 && $st < 300) {
		$ent->[1] = 'acked';
		$e->{seq}++ if $e->{prod};
		push @{ $e->{offs} }, $r->{headers}{'stream-next-offset'};
	} elsif ($st == 507) {
		$ent->[1] = 'refused';
	} else {
		$e->{pending} = $ent if $e->{prod};
		push @unexpected, "POST $path: $st " . ($r->{content} // '') =~ s/\s+/ /gr;
	}
	return $r;
}

# ---- helpers ------------------------------------------------------------------------------
sub df_avail {    # bytes free on the tmpfs
	my ($line) = grep { /\S/ } reverse split /\n/, `df -B1 -P $mnt 2>/dev/null`;
	return (split ' ', $line // '')[3] // -1;
}

sub segments {    # path => size of every segment file
	my %f;
	find(sub { $f{$File::Find::name} = -s _ if -f $_ && /\.seg$/ }, "$data/segments");
	return \%f;
}

sub room {    # ds_seg_room(): the length a segment holding $own bytes is kept at
	my ($own) = @_;
	return 0 if $own == 0;
	return int(($own + 65535) / 65536) * 65536 if $own > 65536;
	my $r = 4096;
	$r *= 2 while $r < $own;
	return $r;
}

sub tail_of {    # committed tail (byte position) from HEAD, or undef
	my ($path) = @_;
	my $r = $s->req(HEAD => $path);
	my ($b) = ($r->{headers}{'stream-next-offset'} // '') =~ /^\d{16}_(\d{16})$/;
	return $r->{status} == 200 && defined $b ? $b + 0 : undef;
}

# read_stream($path): the stream's content as a string (byte stream) or a list of message keys
# (JSON), or undef after a diagnostic.
sub read_stream {
	my ($path) = @_;
	my ($body, undef, $resps) = eval { $s->read_all($path) };
	unless (defined $body) { diag("read $path: $@"); return undef }
	return $body unless $st{$path}{json};
	my @keys;
	for my $r (@$resps) {
		my $arr = eval { $js->decode($r->{content}) };
		unless (ref $arr eq 'ARRAY') { diag("$path: not a JSON array"); return undef }
		push @keys, map { msg_key($_) } @$arr;
	}
	return \@keys;
}

# check_content($path, $got): every acknowledged attempt is there, whole and in order; no
# refused one is; an unknown one is whole or absent; nothing else is there.
sub check_content {
	my ($path, $got) = @_;
	my $e = $st{$path};
	my ($pos, @bad) = (0);
	for my $ent (@{ $e->{ents} }) {
		my ($what, $state) = @$ent;
		my $hit = $e->{json}
			? (@$got - $pos >= @$what && !grep { $got->[ $pos + $_ ] ne $what->[$_] } 0 .. $#$what)
			: substr($got, $pos, length $what) eq $what;
		if ($hit) {
			$pos += $e->{json} ? @$what : length $what;
			push @bad, 'refused attempt stored: ' . ($e->{json} ? $what->[0] : substr($what, 0, 20))
				if $state eq 'refused';
		} elsif ($state eq 'acked') {
			push @bad, 'acknowledged attempt missing: ' . ($e->{json} ? $what->[0] : substr($what, 0, 20));
		}
	}
	my $len = $e->{json} ? @$got : length $got;
	push @bad, "stray data at " . ($e->{json} ? "message $pos: $got->[$pos]" : "byte $pos: "
		. substr($got, $pos, 30)) if $pos != $len;
	return @bad;
}

# burst($n, @targets): $n GETs at once over $n connections (targets taken in turn); returns
# { status => count } (status 0: no parsable answer).
sub burst {
	my ($n, @targets) = @_;
	my (%count, %buf);
	my $sel = IO::Select->new;
	for my $i (0 .. $n - 1) {
		my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port,
			Proto => 'tcp', Timeout => 5);
		unless ($sock) { $count{'connect failed'}++; next }
		my $t = $targets[ $i % @targets ];
		syswrite $sock, "GET $t HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
		$buf{"$sock"} = '';
		$sel->add($sock);
	}
	my $deadline = time + 30;
	while ($sel->count && time < $deadline) {
		for my $sock ($sel->can_read(1)) {
			my $got = sysread($sock, $buf{"$sock"}, 65536, length $buf{"$sock"});
			next if $got;
			$count{ Stack::parse_response($buf{"$sock"})->{status} }++;
			$sel->remove($sock);
			close $sock;
		}
	}
	$count{timeout} += $sel->count if $sel->count;
	return \%count;
}

sub burst_targets {
	my @t = ("/v1/stream/$SMALL?offset=-1");
	for my $p ('full/b0', 'full/j0', 'full/b2') {
		my $o = $st{$p}{offs};
		push @t, "/v1/stream/$p?offset=" . (@$o >= 2 ? $o->[-2] : '-1');
	}
	return @t;
}

sub digest {    # a short stand-in for a stream's content, for comparisons and diagnostics
	my ($c) = @_;
	return 'unreadable' unless defined $c;
	$c = join("\n", @$c) if ref $c;
	return length($c) . ' bytes, md5 ' . md5_hex($c);
}

sub fmt { my ($h) = @_; join(', ', map { "$_: $h->{$_}" } sort keys %$h) || 'none' }

# ---- fill ---------------------------------------------------------------------------------
my $r = new_stream($SMALL, 0, undef, 'small stream: read by every burst of GETs');
$s->must_status($r, 201, "create $SMALL", "PUT $SMALL");
for my $p (@order) {
	$r = new_stream($p, @{ $spec{$p} });
	$s->must_status($r, 201, "create $p", "PUT $p");
}
subtest 'appends fill the disk; what does not fit answers 507; concurrent GETs meanwhile all answer 200' => sub {
	my $total = df_avail();
	my ($i, $fails, $bursting) = (0, 0, 0);
	my $burst_file = tempdir('ds-full-burst-XXXXXX', TMPDIR => 1, CLEANUP => 1) . '/counts';
	my $fill_end = time + 40;
	while ($fails < 2 * @order && time < $fill_end) {
		my $p = $order[ $i++ % @order ];
		next unless $st{$p};
		$r = append($p, 24576 + int rand 40960);
		$fill_status{ $r->{status} }++;
		if ($r->{status} >= 200 && $r->{status} < 300) { $fails = 0; $fill_ok++ } else { $fails++ }
		# Once about half full, 100 GETs at once from a child while the appends go on.
		if (!$bursting && df_avail() < $total / 2) {
			$bursting = fork // die "fork: $!";
			if ($bursting == 0) {
				my $c = burst(100, burst_targets());
				open my $fh, '>', $burst_file;
				print $fh "$_ $c->{$_}\n" for keys %$c;
				close $fh;
				POSIX::_exit(0);
			}
		}
	}
	my $mid = {};
	if ($bursting) {
		waitpid($bursting, 0);
		if (open my $fh, '<', $burst_file) { while (<$fh>) { my ($k, $v) = split; $mid->{$k} = $v } }
	}
	note(sprintf('fill: %d appends acknowledged, answers %s, %.1f s; %d bytes free', $fill_ok // 0,
		fmt(\%fill_status), time - $t0, df_avail()));
	ok($fails >= 2 * @order, 'the appends filled the disk') or diag('free: ' . df_avail());
	is_deeply([ grep { $_ < 200 || $_ >= 300 } sort keys %fill_status ], [507],
		'every append that did not fit answered 507') or diag('fill answers: ' . fmt(\%fill_status));
	is_deeply($mid, { 200 => 100 }, '100 concurrent GETs during the fill: all 200')
		or diag('answers: ' . fmt($mid));
};

# ---- the full disk refuses writes cleanly --------------------------------------------------
subtest 'on the full disk, appends and creates answer 507 and store nothing' => sub {
	my %tail = map { $_ => tail_of($_) } @order;
	my %content = map { $_ => digest(read_stream($_)) } @order;
	my $segs0 = segments();
	for my $p (@order) {
		next unless $st{$p};
		# Bytes that fit in the segment's room need no new blocks and are stored even
		# on a full disk: this append is larger than what is left of the room.
		$r = append($p, 49152 + room($tail{$p} // 0) - ($tail{$p} // 0));
		is($r->{status}, 507, "append to $p on the full disk: 507") or diag("$r->{status} $r->{content}");
		is(tail_of($p), $tail{$p}, "$p: tail unchanged");
	}
	$r = new_stream('full/new', 0, undef, 'z' x 65536);
	is($r->{status}, 507, 'create with a body on the full disk: 507') or diag("$r->{status} $r->{content}");
	is($s->req(HEAD => 'full/new')->{status}, 404, '... and the stream is not there');
	$r = new_stream('full/newjson', 1, undef, $js->encode([ map { { s => 'full/newjson', n => $_, k => 1, p => 'q' x 8000 } } 1 .. 8 ]));
	is($r->{status}, 507, 'create of a JSON stream with a body on the full disk: 507')
		or diag("$r->{status} $r->{content}");
	$r = $s->req(PUT => 'full/empty', { 'Content-Type' => 'text/plain' });
	ok($r->{status} == 201 || $r->{status} == 507, 'create of an empty stream: 201 or 507, no other error')
		or diag("$r->{status} $r->{content}");
	my $empty_made = $r->{status} == 201;
	is($s->req(HEAD => 'full/empty')->{status}, $empty_made ? 200 : 404, '... and HEAD agrees');
	my %content2 = map { $_ => digest(read_stream($_)) } @order;
	is_deeply(\%content2, \%content, 'reads unchanged by the refused writes');
	my $segs1 = segments();
	# A stream created empty has no segment file until its first append.
	is(scalar(keys %$segs1), scalar(keys %$segs0), 'no orphan segment file')
		or diag(join ' ', sort keys %$segs1);
	my %tails_now = map { $_ => tail_of($_) } $SMALL, @order;
	# A segment is kept zero-filled up to its room (store/segment.c); a refused write
	# leaves it at that length.
	my ($sum_rooms, $sum_files) = (0, 0);
	$sum_rooms += room($_ // 0) for values %tails_now;
	$sum_files += $_ for values %$segs1;
	is($sum_files, $sum_rooms, 'no byte stored past a committed tail\'s room (segment bytes == sum of rooms)');
};

# ---- GETs on the full disk ------------------------------------------------------------------
subtest 'on the full disk, 300 concurrent GETs answer 200 and no worker dies' => sub {
	my %after;
	for (1 .. 3) {
		my $c = burst(100, burst_targets());
		$after{$_} += $c->{$_} for keys %$c;
	}
	is_deeply(\%after, { 200 => 300 }, '3 x 100 concurrent GETs on the full disk: all 200')
		or diag('answers: ' . fmt(\%after));
	my @w1 = $s->worker_pids;
	is("@w1", "@w0", 'no worker died (same worker pids)') or diag("before: @w0; after: @w1");
	my @deaths = grep { /died|signal|SIGBUS|Bus error/i } split /\n/, $s->stderr;
	ok(!@deaths, 'no worker death in the stack stderr') or diag(join "\n", @deaths[0 .. ($#deaths < 5 ? $#deaths : 5)]);
};

# ---- DELETE on the full disk frees space ---------------------------------------------------
subtest 'DELETE on the full disk answers 204 and frees the space for new writes' => sub {
	my $free0 = df_avail();
	$r = $s->req(DELETE => $VICTIM);
	is($r->{status}, 204, "DELETE $VICTIM on the full disk: 204") or diag("$r->{status} $r->{content}");
	if ($r->{status} == 204) { delete $st{$VICTIM}; @order = grep { $_ ne $VICTIM } @order }
	is($s->req(HEAD => $VICTIM)->{status}, 404, '... and it is gone');
	cmp_ok(df_avail(), '>', $free0 + 1_000_000, '... and its space is free again');
	$r = new_stream('full/after', 0, 'pa', 'after the delete: ' . ('w' x 30000));
	is($r->{status}, 201, 'create with a body after the delete: 201') or diag("$r->{status} $r->{content}");
	if ($st{'full/after'}) {
		push @{ $st{'full/after'}{ents} }, [ 'after the delete: ' . ('w' x 30000), 'acked' ];
		push @order, 'full/after';
		$r = append('full/after', 40000);
		ok($r->{status} >= 200 && $r->{status} < 300, 'append after the delete: 2xx')
			or diag("$r->{status} $r->{content}");
	}
	$r = append('full/b0', 20000);
	ok($r->{status} >= 200 && $r->{status} < 300, 'append to an old stream after the delete: 2xx')
		or diag("$r->{status} $r->{content}");
};

# ---- every acknowledged append is there ----------------------------------------------------
subtest 'every acknowledged append reads back intact, nothing else' => sub {
	ok(!@unexpected, 'no append answered anything but 2xx or 507')
		or diag(join "\n", @unexpected[0 .. ($#unexpected < 9 ? $#unexpected : 9)]);
	for my $p ($SMALL, @order) {
		next unless $st{$p};
		my $got = read_stream($p);
		unless (defined $got) { fail("$p: read back"); next }
		if ($p eq $SMALL) {
			is($got, 'small stream: read by every burst of GETs', "$p: intact");
			next;
		}
		my @bad = check_content($p, $got);
		my $acked = grep { $_->[1] eq 'acked' } @{ $st{$p}{ents} };
		ok(!@bad, "$p: all $acked acknowledged appends read back intact, nothing else")
			or diag(join "\n", @bad[0 .. ($#bad < 5 ? $#bad : 5)]);
		is(tail_of($p), length $got, "$p: HEAD tail is the byte length") unless $st{$p}{json};
	}
};

# ---- the store verifies --------------------------------------------------------------------
subtest 'ds-admin verify passes on the stopped store' => sub {
	$s->stop;
	my $verify = `${\ Stack::admin_bin()} --data $data verify 2>&1`;
	is($?, 0, 'ds-admin verify passes') or diag($verify);
};
diag(sprintf('seed %d: %.1f s', $seed, time - $t0));
alarm 0;
cleanup();
done_testing;
