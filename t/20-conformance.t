#!/usr/bin/perl
# Upstream conformance suite (npm @durable-streams/server-conformance-tests, vitest) against the
# whole stack (front server + ds-fcgi, 4 workers x 32 threads).  Every upstream test becomes one TAP test
# named "<group> > <test name>"; tests matching an entry of t/conformance-todo.txt are TODO.
#
# By default the suite runs through a two-line runner that calls runConformanceTests() with
# subscriptions enabled, so that nothing is skipped (upstream's dist/test-runner.js leaves the
# subscription tests out).  Environment:
#   DS_CONFORMANCE_UPSTREAM_RUNNER=1  use dist/test-runner.js as it is
#   DS_CONFORMANCE_TIMEOUT=SECONDS    kill vitest after this long (default 480)
#   DS_CONFORMANCE_FILTER=REGEX       vitest -t filter (test name pattern), for debugging
#   DS_CONFORMANCE_URL=URL            run against an already running server instead of a stack
#   DS_CONFORMANCE_LONG_POLL_MS=MS    ds-fcgi --long-poll-timeout for the stack (default 3000;
#                                     empty: the server's default)
#   DS_CONFORMANCE_FRONT=NAME         front server of the stack: nginx (default), lighttpd or
#                                     caddy (t/21 and t/22 run this file behind the other two)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Stack;

my $root  = $Stack::ROOT;
my $pkg   = "$root/node_modules/\@durable-streams/server-conformance-tests";
my $vitest = "$root/node_modules/.bin/vitest";
my $todo_file = "$FindBin::Bin/conformance-todo.txt";
my $tb = Test::More->builder;

Stack::skip_all("the conformance suite is not installed ($pkg, $vitest): run scripts/setup (npm ci)")
	unless -d "$pkg/dist" && -x $vitest;

# ---- TODO list --------------------------------------------------------------------------------
my @todo;    # [pattern, reason, regex or undef, hits]
open my $tf, '<', $todo_file or die "$todo_file: $!";
while (my $l = <$tf>) {
	chomp $l;
	next if $l =~ /^\s*(#|$)/;
	my ($pat, $reason) = split /\t+/, $l, 2;
	$pat =~ s/^\s+|\s+$//g;
	$reason = defined $reason && $reason =~ /\S/ ? $reason =~ s/^\s+|\s+$//gr : 'open issue';
	my $re = eval { qr/^(?:$pat)/ };
	push @todo, [ $pat, $reason, $re, 0 ];
}
close $tf;

sub todo_reason {
	my ($name) = @_;
	for my $t (@todo) {
		if (index($name, $t->[0]) == 0 || ($t->[2] && $name =~ $t->[2])) {
			$t->[3]++;
			return $t->[1];
		}
	}
	return undef;
}

# ---- server -----------------------------------------------------------------------------------
my ($stack, $base);
if ($ENV{DS_CONFORMANCE_URL}) {
	$base = $ENV{DS_CONFORMANCE_URL};
} else {
	# Two long-poll tests have vitest's default 5 s limit and wait for the server's long-poll
	# timeout (offset=now on a quiet stream), so the stack gets a shorter one than its default.
	my $lp = $ENV{DS_CONFORMANCE_LONG_POLL_MS} // 3000;
	$stack = Stack->start(workers => 4, threads => 32,
		front => $ENV{DS_CONFORMANCE_FRONT} // 'nginx',
		args => [ length $lp ? ('--', '--long-poll-timeout', $lp) : () ]);
	$base = $stack->base;
}
note("server: $base" . ($stack ? " ($stack->{ready_line})" : ''));

# ---- run vitest -------------------------------------------------------------------------------
my $tmp = tempdir('ds-conformance-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DS_KEEP});
my $runner;
if ($ENV{DS_CONFORMANCE_UPSTREAM_RUNNER}) {
	$runner = "$pkg/dist/test-runner.js";
} else {
	$runner = "$tmp/conformance.mjs";
	open my $fh, '>', $runner or die "$runner: $!";
	print $fh "import { runConformanceTests } from ", js_str("$pkg/dist/index.js"), ";\n",
		"runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL, subscriptions: true });\n";
	close $fh;
}
# vitest only runs files matching its include globs; name the runner explicitly.
open my $cf, '>', "$tmp/vitest.config.mjs" or die "$tmp/vitest.config.mjs: $!";
print $cf "export default { cacheDir: ", js_str("$tmp/cache"), ", test: { include: [",
	js_str($runner), "], root: ", js_str($pkg), " } };\n";
close $cf;

my $json_out = "$tmp/results.json";
my $log = "$tmp/vitest.log";
my @cmd = ($vitest, 'run', $runner, '--config', "$tmp/vitest.config.mjs", '--root', $pkg,
	'--no-coverage', '--reporter=json', "--outputFile=$json_out");
push @cmd, '-t', $ENV{DS_CONFORMANCE_FILTER} if $ENV{DS_CONFORMANCE_FILTER};
my $limit = $ENV{DS_CONFORMANCE_TIMEOUT} // 480;

my $t0 = time;
my $pid = fork // die "fork: $!";
if ($pid == 0) {
	setpgrp(0, 0);
	chdir $pkg or POSIX::_exit(126);
	open STDIN, '<', '/dev/null';
	open STDOUT, '>', $log or POSIX::_exit(126);
	open STDERR, '>&', \*STDOUT;
	$ENV{CONFORMANCE_TEST_URL} = $base;
	$ENV{NO_COLOR} = 1;
	delete $ENV{FORCE_COLOR};
	exec @cmd or POSIX::_exit(127);
}
my ($timed_out, $status) = (0);
while (1) {
	my $w = waitpid($pid, WNOHANG);
	if ($w == $pid) { $status = $?; last }
	if (time - $t0 > $limit) {
		$timed_out = 1;
		kill 'TERM', -$pid;
		sleep 2;
		kill 'KILL', -$pid;
		waitpid($pid, 0);
		$status = $?;
		last;
	}
	sleep 0.2;
}
my $elapsed = time - $t0;

my $res = -s $json_out ? eval { open my $jf, '<:raw', $json_out or die $!; local $/;
	JSON::PP->new->decode(scalar <$jf>) } : undef;
if (!$res || !$res->{numTotalTests}) {
	fail('conformance suite ran');
	diag($timed_out ? "vitest killed after $limit s" : sprintf('vitest exited with status %d', $status >> 8));
	diag("no usable JSON report" . ($@ ? ": $@" : ''));
	diag("--- vitest output (tail) ---");
	diag(tail_lines($log, 40));
	diag("--- stack stderr (tail) ---\n" . tail_str($stack->stderr, 40)) if $stack;
	done_testing;
	exit;
}

# ---- report -----------------------------------------------------------------------------------
my %n = map { $_ => 0 } qw(pass fail todo todo_pass skip);
my @fail_names;
# One subtest per upstream group (the first describe() below the titles every test shares), in
# the suite's order; inside it one check per upstream test, named by its whole title path.
my (@results, %group_of, @groups);
for my $file (@{ $res->{testResults} }) {
	if (($file->{message} // '') ne '') {
		diag("suite file error: " . first_lines($file->{message}, 5));
	}
	push @results, @{ $file->{assertionResults} };
}
my $shared = common_prefix(map { $_->{ancestorTitles} } @results);
for my $r (@results) {
	my $g = $r->{ancestorTitles}[$shared] // $r->{title};
	push @groups, $g unless $group_of{$g};
	push @{ $group_of{$g} }, $r;
}
for my $g (@groups) {
	subtest tap_name($g) => sub {
		report($_) for @{ $group_of{$g} };
	};
}

# report($result): the TAP check for one upstream test.
sub report {
	my ($r) = @_;
	my $name = join ' > ', @{ $r->{ancestorTitles} }, $r->{title};
	my $status = $r->{status};
	my $reason = todo_reason($name);
	my $msg = join "\n", @{ $r->{failureMessages} // [] };
	if ($status eq 'skipped' || $status eq 'pending' || $status eq 'todo') {
		$n{skip}++;
		$tb->skip("not run by the suite ($status)", tap_name($name));
		return;
	}
	my $ok = $status eq 'passed';
	if (defined $reason) {
		$n{todo}++;
		$n{todo_pass}++ if $ok;
		$tb->todo_start($reason);
		$tb->ok($ok, tap_name($name));
		$tb->todo_end;
		note('    ' . fail_msg($msg, 2)) if !$ok && $msg ne '';
	} else {
		$ok ? $n{pass}++ : $n{fail}++;
		$tb->ok($ok, tap_name($name));
		unless ($ok) {
			push @fail_names, $name;
			diag('    ' . fail_msg($msg, 4)) if $msg ne '';
		}
	}
}

for my $t (@todo) {
	diag("conformance-todo.txt: entry matches no test: $t->[0]") unless $t->[3];
}
my $total = $n{pass} + $n{fail} + $n{todo} + $n{skip};
diag(sprintf('summary: %d passed, %d failed, %d todo', $n{pass}, $n{fail}, $n{todo}));
diag(sprintf('non-TODO tests: %d (%d passing, %d failing); TODO tests: %d (%d passing); '
	. 'skipped by the suite: %d; total: %d', $n{pass} + $n{fail}, $n{pass}, $n{fail},
	$n{todo}, $n{todo_pass}, $n{skip}, $total));
diag(sprintf('vitest ran %.1f s%s', $elapsed, $timed_out ? " (killed at the $limit s limit)" : ''));
diag("failing non-TODO: $_") for @fail_names;
fail("vitest finished within $limit s") if $timed_out;
done_testing;

# ---- helpers ----------------------------------------------------------------------------------
# common_prefix(\@titles, ...): how many leading titles every list shares (one fewer than the
# shortest list, so that every test keeps a group of its own below them).
sub common_prefix {
	my @lists = @_;
	return 0 unless @lists;
	my $min = (sort { $a <=> $b } map { scalar @$_ } @lists)[0];
	my $n = 0;
	while ($n < $min - 1) {
		my $t = $lists[0][$n];
		last if grep { ($_->[$n] // '') ne $t } @lists;
		$n++;
	}
	return $n;
}

sub js_str {
	my ($s) = @_;
	return JSON::PP->new->allow_nonref->encode($s);
}

sub tap_name {
	my ($s) = @_;
	$s =~ s/\s+/ /g;
	$s =~ s/#/\\#/g;
	return $s;
}

sub first_lines {
	my ($s, $n) = @_;
	my @l = grep { /\S/ } split /\n/, $s;
	@l = @l[0 .. $n - 1] if @l > $n;
	return join "\n    ", @l;
}

# fail_msg($text, $n): the first $n lines of a vitest failure message without the stack trace,
# plus the one stack line that points into the suite (file:line to read the test).
sub fail_msg {
	my ($text, $n) = @_;
	my (@l, $where);
	for my $l (grep { /\S/ } split /\n/, $text) {
		if ($l =~ /^\s*at\s/) {
			$where //= $1 if $l =~ m{/(src-[^/]*?\.js:\d+)};
			next;
		}
		push @l, $l if @l < $n;
	}
	push @l, "at $where" if $where;
	return join "\n    ", @l;
}

sub tail_str {
	my ($s, $n) = @_;
	my @l = split /\n/, $s // '';
	@l = @l[-$n .. -1] if @l > $n;
	return join "\n", @l;
}

sub tail_lines {
	my ($f, $n) = @_;
	open my $fh, '<', $f or return "($f: $!)";
	local $/;
	return tail_str(scalar <$fh>, $n);
}
