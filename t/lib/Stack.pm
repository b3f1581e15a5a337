package Stack;

# Stack: start the whole server stack (scripts/run) for one integration test.
#
#   use lib 't/lib';
#   use Stack;
#   my $s = Stack->start(workers => 2, threads => 8);  # skip_all if a prerequisite is missing,
#                                                       # BAIL_OUT if the stack does not come up
#   $s->must(201, PUT => 'a/b', { 'Content-Type' => 'text/plain' }, 'hi');   # setup: stop if not 201
#   my $r = $s->req(POST => 'a/b', { 'Content-Type' => 'text/plain' }, 'more');
#   $s->must_status($r, 204, 'appended');               # must() for a request already made
#   $s->kill_worker;                                    # SIGKILL one ds-fcgi worker
#   $s->stop;                                           # also done by DESTROY and END
#
# Each stack gets a fresh temporary directory (File::Temp) holding the data dir and the stack's
# stdout/stderr (the data option puts the data dir elsewhere, e.g. on a small tmpfs), and a free
# port on 127.0.0.1 picked from DS_TEST_PORTS (default 4600-4699).
# The stack runs in its own process group; stop() sends SIGTERM to scripts/run, waits 5 s, then
# SIGKILLs every process of the stack that is left (process group, descendants, and the pool).
#
# Environment:
#   DS_FCGI_BIN       ds-fcgi binary for the stack (read by scripts/run) and for fcgi_bin()
#   DS_ADMIN_BIN      ds-admin binary for the stack's recovery (scripts/run) and for admin_bin()
#   DS_STACK_RUN      run script to use instead of scripts/run
#   DS_STACK_TIMEOUT  seconds to wait for the ready line (default 30)
#   DS_TEST_PORTS     port range "LO-HI" to pick from (default 4600-4699)
#   DS_KEEP=1         keep the temporary directory (its path is printed as a diagnostic)
#   DS_SAN_REPORTS    set by scripts/sanitize: see below

use strict;
use warnings;
use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(basename dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Select;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

our $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../..');
my %LIVE;    # id => stack, so END can stop what DESTROY did not

# Under scripts/sanitize (DS_SAN_REPORTS=DIR), sanitizer reports of everything this test starts
# go to DIR/<test>.asan.<program>.<pid> (and .ubsan.), so that each can be traced to its test.
# Sanitizer lines on a stack's stderr are saved to DIR/<test>.stderr.<n> when it stops: gcc's
# libubsan prints to stderr whatever log_path says (the ASan report of its abort() goes to a file).
my $SAN_TEST = basename($0) =~ s/\.t$//r;
my $san_saved = 0;
if (my $d = $ENV{DS_SAN_REPORTS}) {
	$ENV{ASAN_OPTIONS}  = join ':', grep { length } $ENV{ASAN_OPTIONS} // '', "log_path=$d/$SAN_TEST.asan";
	$ENV{UBSAN_OPTIONS} = join ':', grep { length } $ENV{UBSAN_OPTIONS} // '', "log_path=$d/$SAN_TEST.ubsan";
}

# new(%opt): start a stack.  Options: workers, threads, max_body, front, port, args => [...]
# (extra scripts/run arguments), env => {...} (extra environment), timeout (ready, seconds),
# data => DIR (data directory to use instead of a fresh one in the temp dir, e.g. on a tmpfs the
# test mounted; created if missing, never removed by Stack; stdout/stderr stay in the temp dir).
sub new {
	my ($class, %opt) = @_;
	my $self = bless {
		opt     => \%opt,
		owner   => $$,
		timeout => $opt{timeout} // $ENV{DS_STACK_TIMEOUT} // 30,
	}, $class;
	$self->{dir} = tempdir('ds-stack-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DS_KEEP});
	$self->{data} = $opt{data} // "$self->{dir}/data";
	-d $self->{data} or mkdir $self->{data} or croak "mkdir $self->{data}: $!";
	$self->_diag("stack dir $self->{dir} (kept)") if $ENV{DS_KEEP};

	my $tries = $opt{port} ? 1 : 3;
	for my $try (1 .. $tries) {
		my $port = $opt{port} // _free_port();
		my $err = $self->_start($port);
		return $self unless defined $err;
		$self->_reap_all;
		# Another process may have taken the port between our probe and the bind.
		croak $err if $try == $tries || $err !~ /in use|bind\(\)|could not bind/i;
	}
}

# fcgi_bin(): the ds-fcgi binary the stack runs, for tests that run it themselves (--check, ...):
# DS_FCGI_BIN as scripts/run resolves it (relative to the top directory), else build/ds-fcgi.
sub fcgi_bin { _bin($ENV{DS_FCGI_BIN} // 'build/ds-fcgi') }

# admin_bin(): the ds-admin binary (verify, list, recover, ...): DS_ADMIN_BIN, else build/ds-admin.
sub admin_bin { _bin($ENV{DS_ADMIN_BIN} // 'build/ds-admin') }

# ---- starting a stack from a test file -------------------------------------------------------
#
# Every t/*.t starts its stacks with start(): one place decides what "cannot run here" means.
#
#   Stack->need(root => 'to mount a tmpfs', commands => ['ss'])
#       skip_all (the whole file, or the subtest it is called in) with the reason, unless the
#       test runs as root (when root is given) and every command is on PATH.
#   Stack->start(%opt)
#       new(%opt) for a test file.  First the prerequisites (missing()): the front server,
#       spawn-fcgi, multiwatch, curl and flock on PATH (as scripts/run looks them up) are the
#       environment's, so without one the file (or the subtest) is skipped with skip_all and the
#       reason; without ds-fcgi or ds-notify (DS_FCGI_BIN, DS_NOTIFY_BIN, else build/) the
#       project is not built, and that is a BAIL_OUT.  A stack that does not come up is a
#       BAIL_OUT too, after its stderr as a diagnostic.  Option root => WHY: skip unless root.
#   Stack::skip_all($reason)
#       plan skip_all => $reason (in a subtest, skips that subtest only).
#   Stack::bail($why, [$details])
#       $details as a diagnostic, then BAIL_OUT($why) (prefixed with the test file's name).
#
# Call start() and need() before the first check of a file, or first thing in a subtest.

# fronts(): the front servers a test runs behind: DS_FRONTS (space-separated), else every one
# the project supports.
sub fronts { return split ' ', ($ENV{DS_FRONTS} // 'nginx lighttpd caddy') }

# missing(%opt): (reason to skip, reason to bail out): what this machine lacks to run a stack.
sub missing {
	my ($class, %opt) = @_;
	return ("needs root $opt{root} (not root here)", undef) if $opt{root} && $> != 0;
	for my $b ([ 'ds-fcgi', fcgi_bin() ], [ 'ds-notify', _bin($ENV{DS_NOTIFY_BIN} // 'build/ds-notify') ]) {
		return (undef, "$b->[1] is missing or not executable (run make)") unless -x $b->[1];
	}
	my $run = $ENV{DS_STACK_RUN} // "$ROOT/scripts/run";
	return (undef, "$run is not executable") unless -x $run;
	my $front = $opt{front} // 'nginx';
	for my $tool ($front, qw(spawn-fcgi multiwatch curl flock)) {
		next if _which($tool);
		my $setup = $tool eq $front && $front ne 'nginx' ? "scripts/setup --front $front" : 'scripts/setup';
		return ("$tool is not installed (run $setup)", undef);
	}
	return (undef, undef);
}

sub need {
	my ($class, %opt) = @_;
	skip_all("needs root $opt{root} (not root here)") if $opt{root} && $> != 0;
	for my $c (@{ $opt{commands} // [] }) {
		skip_all("needs $c on PATH") unless _which($c);
	}
	return 1;
}

sub start {
	my ($class, %opt) = @_;
	my $root = delete $opt{root};
	my ($skip, $bail) = $class->missing(%opt, root => $root);
	skip_all($skip) if $skip;
	bail($bail) if $bail;
	my $s = eval { $class->new(%opt) };
	return $s if $s;
	bail('the stack did not start' . (defined $opt{front} ? " (front $opt{front})" : ''), $@);
}

# reap(@pids): waits for every one of the test's child processes; returns
# pid => wait status for each that ended.
sub reap {
	my @pids = @_;
	my %done;
	while (keys %done < @pids) {
		my $p = waitpid(-1, 0);
		last if $p == -1;
		$done{$p} = $?;
	}
	return %done;
}

sub skip_all {
	my ($reason) = @_;
	require Test::More;
	Test::More::plan(skip_all => $reason);
	exit 0;    # not reached: plan skip_all exits (or leaves the subtest)
}

sub bail {
	my ($why, $details) = @_;
	require Test::More;
	Test::More::diag($details) if defined $details && length $details;
	Test::More::BAIL_OUT("$SAN_TEST: $why");
}

# must($want, $method, $path, [\%headers], [$body], [$name]): a setup request that later checks
# rely on (the PUT of a stream they append to, ...).  $want is a status (201), a list of them
# ([200, 204]) or undef for any 2xx.  The expected answer passes a check named $name (default
# "setup: METHOD path") and the response is returned; any other answer fails that
# check and stops the test file at once (die) with the request, the status and the body, rather
# than letting it surface later as a confusing mismatch.
sub must {
	my ($self, $want, $method, $path, $headers, $body, $name) = @_;
	my $r = $self->req($method, $path, $headers, $body);
	my $req = "$method " . $self->url($path) . (defined $body ? ' (' . length($body) . '-byte body)' : '');
	$name //= "setup: $method $path";
	local $Test::Builder::Level = ($Test::Builder::Level // 1) + 1;
	return $self->must_status($r, $want, $name, $req);
}

# must_status($response, $want, [$name], [$request]): must() for a request already made (by a
# test's own helper): the same check, the same stop with $request (default: the response's URL),
# the status and the body.
sub must_status {
	my ($self, $r, $want, $name, $req) = @_;
	my @want = ref $want ? @$want : defined $want ? ($want) : ();
	my $wanted = @want ? join(' or ', @want) : '2xx';
	$req //= $r->{url} // '(request)';
	$name //= "setup: $req answers $wanted";
	my $st = $r->{status};
	my $ok = @want ? !!grep({ $st == $_ } @want) : $st >= 200 && $st < 300;
	require Test::More;
	my $tb = Test::More->builder;
	return $r if $tb->ok($ok, $name);
	my $c = $r->{content} // '';
	$c = substr($c, 0, 500) . '...(' . length($c) . ' bytes)' if length $c > 500;
	my $msg = sprintf("setup failed, stopping: %s: got %s %s (wanted %s)\n  body: %s",
		$req, $st, $r->{reason} // '', $wanted, $c);
	$tb->diag($msg);
	if ($st >= 500) {
		my @l = split /\n/, $self->stderr;
		$tb->diag(join "\n", '--- stack stderr (tail) ---', @l > 20 ? @l[-20 .. -1] : @l);
	}
	die "$SAN_TEST: stopped after a failed setup request: $req\n";
}

sub _bin {
	my ($b) = @_;
	return $b =~ m{^/} ? $b : "$ROOT/$b";
}

# _which($cmd): $cmd on PATH as scripts/run searches it (PATH plus the sbin directories).
sub _which {
	my ($cmd) = @_;
	for my $d (split(/:/, $ENV{PATH} // ''), qw(/usr/local/sbin /usr/sbin /sbin)) {
		return "$d/$cmd" if length $d && -f "$d/$cmd" && -x _;
	}
	return undef;
}

sub base      { $_[0]{base} }        # http://127.0.0.1:PORT
sub port      { $_[0]{port} }
sub data_dir  { $_[0]{data} }
sub dir       { $_[0]{dir} }         # temp dir: data/, stack.stdout, stack.stderr
sub pid       { $_[0]{pid} }         # scripts/run
sub stderr_file { "$_[0]{dir}/stack.stderr" }

# url($path): absolute URL of stream $path (no leading slash needed); a path starting with '/'
# is taken as the whole URL path.
sub url {
	my ($self, $path) = @_;
	return $self->{base} . ($path =~ m{^/} ? $path : "/v1/stream/$path");
}

sub _diag {
	my ($self, $msg) = @_;
	my $tb = eval { require Test::More; Test::More->builder };
	if ($tb) { $tb->diag($msg) } else { print STDERR "# $msg\n" }
}

sub _free_port {
	my ($lo, $hi) = ($ENV{DS_TEST_PORTS} // '4600-4699') =~ /^(\d+)-(\d+)$/
		or croak "DS_TEST_PORTS must look like 4600-4699";
	my @ports = ($lo .. $hi);
	for my $i (reverse 1 .. $#ports) {    # shuffle so parallel tests rarely collide
		my $j = int rand($i + 1);
		@ports[$i, $j] = @ports[$j, $i];
	}
	for my $p (@ports) {
		my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
			Proto => 'tcp', Listen => 1, ReuseAddr => 1) or next;
		close $s;
		# Also make sure nothing answers there (a server bound to 0.0.0.0 or another address).
		my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p, Timeout => 1);
		next if $c;
		return $p;
	}
	croak "no free port in $lo-$hi";
}

sub _start {
	my ($self, $port) = @_;
	my $o = $self->{opt};
	my $run = $ENV{DS_STACK_RUN} // "$ROOT/scripts/run";
	-x $run or return "stack: $run is not executable";
	my @cmd = ($run, '--port', $port, '--data', $self->{data});
	push @cmd, '--front', $o->{front} if defined $o->{front};
	push @cmd, '--workers', $o->{workers} if defined $o->{workers};
	push @cmd, '--threads', $o->{threads} if defined $o->{threads};
	push @cmd, '--max-body', $o->{max_body} if defined $o->{max_body};
	push @cmd, @{ $o->{args} } if $o->{args};
	$self->{cmd} = "@cmd";
	my ($out, $err) = ("$self->{dir}/stack.stdout", "$self->{dir}/stack.stderr");
	unlink $out, $err;

	my $pid = fork // croak "fork: $!";
	if ($pid == 0) {
		setpgrp(0, 0);    # own process group: stop() can signal the whole stack at once
		open STDIN, '<', '/dev/null';
		open STDOUT, '>', $out or POSIX::_exit(127);
		open STDERR, '>', $err or POSIX::_exit(127);
		chdir $ROOT;
		local %ENV = (%ENV, %{ $o->{env} // {} });
		# If this test dies without running END (SIGKILL), scripts/run still gets SIGTERM.
		my ($setpriv) = grep { -x } map { "$_/setpriv" } qw(/usr/bin /bin);
		unshift @cmd, $setpriv, '--pdeathsig', 'TERM', '--' if $setpriv;
		exec @cmd or do { print STDERR "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
	}
	@$self{qw(pid pgid port)} = ($pid, $pid, $port);
	$LIVE{"$self"} = $self;

	my $deadline = time + $self->{timeout};
	while (time < $deadline) {
		if (open my $fh, '<', $out) {
			while (my $line = <$fh>) {
				if ($line =~ m{^ready: (http://\S+)}) {
					($self->{base} = $1) =~ s{/+$}{};
					$self->{ready_line} = $line =~ s/\s+$//r;
					return undef;
				}
			}
		}
		my $w = waitpid($pid, WNOHANG);
		if ($w == $pid) {
			my $st = $?;
			delete $self->{pid};
			return sprintf("stack exited (status %d, signal %d) before ready: %s\n--- stderr ---\n%s",
				$st >> 8, $st & 127, $self->{cmd}, _slurp($err));
		}
		sleep 0.05;
	}
	my $msg = "stack not ready after $self->{timeout} s: $self->{cmd}\n--- stdout ---\n"
		. _slurp($out) . "--- stderr ---\n" . _slurp($err);
	$self->stop;
	return $msg;
}

sub _slurp {
	my ($f) = @_;
	open my $fh, '<', $f or return "($f: $!)\n";
	local $/;
	my $s = <$fh> // '';
	$s .= "\n" if length $s && $s !~ /\n\z/;
	return $s;
}

sub stderr { _slurp($_[0]->stderr_file) }

# ---- processes ------------------------------------------------------------------------------

# _procs(): { pid => [ppid, pgid, starttime] } for every process, from /proc/PID/stat.
sub _procs {
	my %p;
	opendir my $d, '/proc' or return {};
	for my $pid (grep { /^\d+$/ } readdir $d) {
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $st = <$fh> // next;
		$st =~ /\)\s+(.*)$/s or next;    # comm may contain spaces and parens
		my @f = split ' ', $1;            # f[0]=state f[1]=ppid f[2]=pgrp ... f[19]=starttime
		$p{$pid} = [ $f[1], $f[2], $f[19], $f[0] ];
	}
	return \%p;
}

sub _descendants {
	my ($procs, @roots) = @_;
	my %kids;
	push @{ $kids{ $procs->{$_}[0] } }, $_ for keys %$procs;
	my (%seen, @out);
	my @todo = @roots;
	while (defined(my $p = shift @todo)) {
		for my $k (@{ $kids{$p} // [] }) {
			next if $seen{$k}++;
			push @out, $k;
			push @todo, $k;
		}
	}
	return @out;
}

# pool_pid(): pid of the spawn-fcgi/multiwatch process (DATA/run/spawn-fcgi.pid), or undef.
sub pool_pid {
	my ($self) = @_;
	open my $fh, '<', "$self->{data}/run/spawn-fcgi.pid" or return undef;
	my $pid = <$fh> // return undef;
	($pid) = $pid =~ /(\d+)/ or return undef;
	return kill(0, $pid) ? $pid : undef;
}

# worker_pids(): sorted pids of the ds-fcgi workers (children of the pool process).
sub worker_pids {
	my ($self) = @_;
	my $pool = $self->pool_pid // return ();
	my $procs = _procs();
	# (A worker killed but not yet reaped is a zombie: not a worker any more.)
	return sort { $a <=> $b } grep { $procs->{$_}[0] == $pool && $procs->{$_}[3] ne 'Z' }
		keys %$procs;
}

# kill_worker([$sig = 'KILL'], [$pid]): signal one worker (random unless $pid), return its pid.
sub kill_worker {
	my ($self, $sig, $pid) = @_;
	$sig //= 'KILL';
	unless (defined $pid) {
		my @w = $self->worker_pids or croak "kill_worker: no workers found";
		$pid = $w[ int rand @w ];
	}
	kill($sig, $pid) or croak "kill_worker: kill $sig $pid: $!";
	$self->{dying}{$pid} = 1;
	return $pid;
}

# wait_pool([$timeout = 10]): wait until the pool has its full count of workers (when known),
# none of them is one that kill_worker signalled and is still dying, and a HEAD answers with
# something other than 5xx.  Returns 1 on success, 0 on timeout.
sub wait_pool {
	my ($self, $timeout) = @_;
	my $deadline = time + ($timeout // 10);
	my $want = $self->{opt}{workers};
	my $http = HTTP::Tiny->new(keep_alive => 0, timeout => 5);
	while (time < $deadline) {
		my @w = $self->worker_pids;
		# A signalled worker may not have died yet: it is not part of the pool.
		my %alive = map { $_ => 1 } @w;
		delete @{ $self->{dying} }{ grep { !$alive{$_} } keys %{ $self->{dying} || {} } };
		@w = grep { !$self->{dying}{$_} } @w;
		if (!%{ $self->{dying} || {} } && (!defined $want || @w >= $want)) {
			my $r = $http->request(HEAD => $self->url('__pool_probe__'));
			return 1 if $r->{status} < 500;
		}
		sleep 0.05;
	}
	return 0;
}

# stop(): SIGTERM to scripts/run, up to 5 s for it to finish, then SIGKILL to everything left.
sub stop {
	my ($self) = @_;
	return if $self->{owner} != $$;    # a forked client must never stop its parent's stack
	delete $LIVE{"$self"};
	return unless $self->{pid};
	my $procs = _procs();
	my %tree = map { $_ => $procs->{$_}[2] }
		grep { $procs->{$_} } ($self->{pid}, _descendants($procs, $self->{pid}),
			map { ($_, _descendants($procs, $_)) } grep { defined } $self->pool_pid);
	$tree{$_} //= $procs->{$_}[2] for grep { $procs->{$_}[1] == $self->{pgid} } keys %$procs;

	kill 'TERM', $self->{pid};
	my $deadline = time + 5;
	my $exited;
	while (time < $deadline) {
		my $w = waitpid($self->{pid}, WNOHANG);
		if ($w == $self->{pid} || $w == -1) { $exited = 1; last }
		sleep 0.05;
	}
	$self->{exit_status} = $? if $exited;
	$self->_diag("stack did not stop within 5 s of SIGTERM; sending SIGKILL") unless $exited;
	$self->_reap_all(\%tree);
	delete $self->{pid};
	$self->_save_san_stderr;
}

# crash(): SIGKILL every process of the stack at once, as a power cut or an OOM kill of the
# whole service would stop them.  restart() brings it back on the same data.
sub crash {
	my ($self) = @_;
	return if $self->{owner} != $$ || !$self->{pid};
	my $procs = _procs();
	my %tree = map { $_ => $procs->{$_}[2] }
		grep { $procs->{$_} } ($self->{pid}, _descendants($procs, $self->{pid}),
			map { ($_, _descendants($procs, $_)) } grep { defined } $self->pool_pid);
	$tree{$_} //= $procs->{$_}[2] for grep { $procs->{$_}[1] == $self->{pgid} } keys %$procs;
	$self->_reap_all(\%tree);
	delete $LIVE{"$self"};
	delete $self->{pid};
	$self->_save_san_stderr;
}

# _save_san_stderr(): under scripts/sanitize, copy every sanitizer message of the stack's stderr
# (with the stack-frame lines after it) to a report file.
sub _save_san_stderr {
	my ($self) = @_;
	my $d = $ENV{DS_SAN_REPORTS} or return;
	open my $in, '<', $self->stderr_file or return;
	my ($keep, $out) = (0, '');
	while (my $l = <$in>) {
		$keep = $l =~ /runtime error:|Sanitizer|^==\S+==(?:ERROR|WARNING)/ ? 1 : $keep && $l =~ /^\s+#\d/;
		$out .= $l if $keep;
	}
	return unless length $out;
	my $f = sprintf '%s/%s.stderr.%d.%d', $d, $SAN_TEST, $$, ++$san_saved;
	open my $fh, '>', $f or return $self->_diag("$f: $!");
	print $fh $out;
}

# restart(): start the stack again on the same data directory and port (stopping it first if
# it still runs).  Dies with the stack's stderr if it does not come up.
sub restart {
	my ($self) = @_;
	$self->stop if $self->{pid};
	my $err = $self->_start($self->{port});
	croak $err if defined $err;
	return $self;
}

# Kill whatever is left of the stack: its process group and the processes recorded in %$tree
# (pid => starttime, so a recycled pid is never hit).
sub _reap_all {
	my ($self, $tree) = @_;
	kill 'KILL', -$self->{pgid} if $self->{pgid};
	my $procs = _procs();
	for my $p (keys %{ $tree // {} }) {
		next unless $procs->{$p} && $procs->{$p}[2] eq $tree->{$p};
		kill 'KILL', $p;
	}
	if ($self->{pid}) {
		my $deadline = time + 2;
		while (time < $deadline) {
			my $w = waitpid($self->{pid}, WNOHANG);
			last if $w == $self->{pid} || $w == -1;
			sleep 0.02;
		}
	}
}

sub DESTROY {
	my ($self) = @_;
	local ($., $@, $!, $^E, $?);
	$self->stop if $self->{pid};
}

END {
	local $?;
	$_->stop for values %LIVE;
}

# Make ^C, a harness timeout or a closed stdout still run END.
for my $sig (qw(INT TERM HUP PIPE)) {
	$SIG{$sig} = sub { die "caught SIG$sig\n" } if !defined $SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
}

# ---- HTTP helpers ---------------------------------------------------------------------------

# http(): an HTTP::Tiny that opens a new connection for every request (no keep-alive, so a killed
# worker or a dropped connection never poisons the next request).
sub http {
	my ($self) = @_;
	return $self->{http} //= HTTP::Tiny->new(keep_alive => 0, timeout => 30,
		agent => 'ds-test/1', max_redirect => 0);
}

# req($method, $path, [\%headers], [$body]): HTTP::Tiny response hash (status 599 on a
# connection failure).  Header names in the response are lower case.
sub req {
	my ($self, $method, $path, $headers, $body) = @_;
	my %o = (headers => { %{ $headers // {} } });
	$o{content} = $body if defined $body;
	return $self->http->request($method, $self->url($path), \%o);
}

# read_all($path, [$offset = '-1']): catch-up read following Stream-Next-Offset until
# Stream-Up-To-Date.  Returns ($body, $next_offset, \@responses); dies on a non-200.
sub read_all {
	my ($self, $path, $offset) = @_;
	$offset //= '-1';
	my ($body, @resp) = ('');
	for (1 .. 100_000) {
		my $r = $self->req(GET => "$path?offset=$offset");
		push @resp, $r;
		croak "GET $path?offset=$offset: $r->{status} $r->{reason}: $r->{content}"
			unless $r->{status} == 200;
		$body .= $r->{content};
		my $next = $r->{headers}{'stream-next-offset'}
			// croak "GET $path?offset=$offset: no Stream-Next-Offset";
		return ($body, $next, \@resp) if $r->{headers}{'stream-up-to-date'};
		croak "GET $path?offset=$offset: Stream-Next-Offset did not advance" if $next eq $offset;
		$offset = $next;
	}
	croak "read_all $path: too many chunks";
}

# live_socket($path, $offset, $mode, [%headers]): a new TCP connection that has sent a live GET
# (long-poll or sse) of $path from $offset (Connection: close); returns the socket, unread.
sub live_socket {
	my ($self, $path, $offset, $mode, %hdr) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
		Proto => 'tcp', Timeout => 5) or croak "connect: $!";
	$sock->autoflush(1);
	my $h = join '', map { "$_: $hdr{$_}\r\n" } sort keys %hdr;
	print $sock "GET /v1/stream/$path?offset=$offset&live=$mode HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		. "${h}Connection: close\r\n\r\n";
	return $sock;
}

# raw($request_bytes, [$timeout = 10]): send bytes as they are over a new TCP connection and read
# the answer until the server closes.  Returns { status, reason, headers => {lc name => value},
# content, raw }; status 0 when there was no parsable answer.
sub raw {
	my ($self, $req, $timeout) = @_;
	$timeout //= 10;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
		Proto => 'tcp', Timeout => $timeout) or return { status => 0, reason => "connect: $!" };
	$sock->autoflush(1);
	local $SIG{PIPE} = 'IGNORE';
	my $off = 0;
	while ($off < length $req) {
		my $n = syswrite($sock, $req, 65536, $off);
		last unless $n;    # the server may answer and close before reading everything
		$off += $n;
	}
	my $sel = IO::Select->new($sock);
	my $buf = '';
	my $deadline = time + $timeout;
	while (time < $deadline && $sel->can_read($deadline - time)) {
		my $n = sysread($sock, $buf, 65536, length $buf);
		last unless $n;
	}
	close $sock;
	return parse_response($buf);
}

sub parse_response {
	my ($buf) = @_;
	my %r = (status => 0, reason => '', headers => {}, content => '', raw => $buf);
	my ($head, $body) = split /\r?\n\r?\n/, $buf, 2;
	return \%r unless defined $head && $head =~ m{^HTTP/\d\.\d (\d{3})[ ]?([^\r\n]*)};
	@r{qw(status reason)} = ($1, $2);
	for my $l (split /\r?\n/, $head) {
		next unless $l =~ /^([^:\s]+):\s*(.*?)\s*$/;
		my $k = lc $1;
		$r{headers}{$k} = exists $r{headers}{$k} ? "$r{headers}{$k}, $2" : $2;
	}
	$body //= '';
	if (($r{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
		my $out = '';
		while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
			my $n = hex $1;
			last if $n == 0;
			$out .= substr($body, 0, $n, '');
			$body =~ s/^\r\n//;
		}
		$body = $out;
	}
	$r{content} = $body;
	return \%r;
}

1;
