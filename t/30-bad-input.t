#!/usr/bin/perl
# Bad input: every case gets a clear 4xx and stores nothing.  "Stores nothing" is checked twice:
# over HTTP (the stream that was aimed at is unchanged, or does not exist), and on disk (no new
# file appears anywhere in the stack's directory, data dir included, except run-time files).
#
# The stack runs with --max-body 65536.  Path cases go over a raw socket so that no client
# normalises them; nginx may answer some of them itself (400/404), which is fine: any 4xx.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Find;
use Stack;

my $MAX = 65536;
my $s = Stack->start(workers => 2, threads => 4, max_body => $MAX);
note($s->{ready_line});

my $TEXT = 'bad/text';
my $JSON = 'bad/json';
$s->must(201, PUT => $TEXT, { 'Content-Type' => 'text/plain' }, 'base-data', 'create text stream');
$s->must(201, PUT => $JSON, { 'Content-Type' => 'application/json' }, '[{"a":1},{"b":2}]',
	'create JSON stream');
my $r;
my %before = (text => snap($TEXT), json => snap($JSON));
my $files = files();

# ---- path traversal and odd paths (raw, unnormalised) ------------------------------------------
subtest 'path traversal and odd paths answer 4xx and create nothing' => sub {
	# [ request target, stream paths a careless server might have created from it ]
	my @paths = (
		[ '/v1/stream/../x',                     'x', '../x' ],
		[ '/v1/stream/a/%2e%2e/b',               'b', 'a/b', 'a' ],
		[ '/v1/stream/a/%2E%2E/b',               'b', 'a/b', 'a' ],
		[ '/v1/stream/%2e%2e',                   '..', 'stream' ],
		[ '/v1/stream/%2e%2e/x',                 'x' ],
		[ '/v1/stream/..%2fx',                   'x', '..%2fx' ],
		[ '/v1/stream/a/%2e%2e%2f%2e%2e%2fx',    'x', 'a', 'a/x' ],
		[ '/v1/stream/./x',                      'x' ],
		[ '/v1/stream/a%00b',                    'a', 'ab', 'a%00b' ],
		[ '/v1/stream/a//b',                     'a/b', 'a', 'b' ],
		[ '/v1/stream/' . ('n' x 10000),         'n' x 10000 ],
	);
	for my $p (@paths) {
		my ($target, @maybe) = @$p;
		my $label = length $target > 60 ? substr($target, 0, 40) . '...(' . length($target) . ' bytes)' : $target;
		for my $method (qw(PUT POST)) {
			my $res = $s->raw("$method $target HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
				. "Content-Length: 4\r\nConnection: close\r\n\r\nevil");
			is_4xx($res, "$method $label");
		}
		my $res = $s->raw("GET $target HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
		is_4xx($res, "GET $label");
		for my $m (@maybe) {
			# 404, or a 4xx saying that no stream can have that name
			my $h = $s->req(HEAD => $m);
			ok($h->{status} >= 400 && $h->{status} < 500,
				"  after $label: no stream '" . short($m) . "' ($h->{status})");
		}
	}
	# Reading outside the data dir must not work either.
	for my $target ('/v1/stream/../../../../../../etc/passwd', '/v1/stream/a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
		'/v1/stream/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd') {
		my $res = $s->raw("GET $target HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
		is_4xx($res, "GET $target");
		unlike($res->{content}, qr/root:/, "  no /etc/passwd in the answer");
	}
	no_new_files('path cases');
};

# ---- over-long header values ------------------------------------------------------------------
subtest 'over-long header values answer 4xx and change nothing' => sub {
	my $long = 'x' x 20000;
	$r = $s->req(PUT => 'bad/long-ctype', { 'Content-Type' => "text/$long" }, 'data');
	is_4xx($r, 'PUT with a 20 KB Content-Type');
	is($s->req(HEAD => 'bad/long-ctype')->{status}, 404, '  stream not created');
	for my $h ('Stream-Seq', 'Content-Type', 'Producer-Id') {
		my %hdr = ('Content-Type' => 'text/plain');
		%hdr = (%hdr, 'Producer-Epoch' => 0, 'Producer-Seq' => 0) if $h eq 'Producer-Id';
		$hdr{$h} = $h eq 'Content-Type' ? "text/$long" : $long;
		$r = $s->req(POST => $TEXT, \%hdr, 'more');
		is_4xx($r, "POST with a 20 KB $h");
		unchanged($TEXT, $before{text}, "  after 20 KB $h");
	}
	$r = $s->raw("POST /v1/stream/$TEXT HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
		. join('', map { "X-Filler-$_: " . ('y' x 4000) . "\r\n" } 1 .. 40)
		. "Content-Length: 4\r\nConnection: close\r\n\r\nmore");
	is_4xx($r, 'POST with 160 KB of headers');
	unchanged($TEXT, $before{text}, '  after 160 KB of headers');
	no_new_files('long headers');
};

# ---- body over the limit ----------------------------------------------------------------------
subtest 'a body over --max-body answers 413 and stores nothing' => sub {
	$r = $s->req(POST => $TEXT, { 'Content-Type' => 'text/plain' }, 'z' x ($MAX + 1));
	is($r->{status}, 413, "POST of $MAX+1 bytes: 413") or diag_resp($r);
	unchanged($TEXT, $before{text}, "  after POST of $MAX+1 bytes");
	$r = $s->raw(chunked_request(POST => "/v1/stream/$TEXT", 'z' x ($MAX + 1)));
	is($r->{status}, 413, "chunked POST of $MAX+1 bytes: 413") or diag_resp($r);
	unchanged($TEXT, $before{text}, "  after chunked POST of $MAX+1 bytes");
	$r = $s->req(PUT => 'bad/big', { 'Content-Type' => 'text/plain' }, 'z' x ($MAX + 1));
	is($r->{status}, 413, "PUT of $MAX+1 bytes: 413") or diag_resp($r);
	is($s->req(HEAD => 'bad/big')->{status}, 404, '  stream not created');
	$r = $s->req(POST => $JSON, { 'Content-Type' => 'application/json' }, '[' . join(',', ('1') x ($MAX / 2 + 1)) . ']');
	is($r->{status}, 413, "JSON POST over $MAX bytes: 413") or diag_resp($r);
	unchanged($JSON, $before{json}, "  after JSON POST over $MAX bytes");
	no_new_files('big bodies');
};
subtest 'a body of exactly --max-body is accepted' => sub {
	# The limit itself is allowed.
	$s->must(201, PUT => 'bad/limit', { 'Content-Type' => 'text/plain' });
	$r = $s->req(POST => 'bad/limit', { 'Content-Type' => 'text/plain' }, 'q' x $MAX);
	ok($r->{status} >= 200 && $r->{status} < 300, "POST of exactly $MAX bytes is accepted ($r->{status})")
		or diag_resp($r);
	$files = files();
};

# ---- invalid JSON -----------------------------------------------------------------------------
subtest 'invalid JSON answers 400 and stores nothing' => sub {
	for my $body ('{"a":', '{"a":1} x', '[1,]', '[', 'nope', "{'a':1}", '{"a":1}{"b":2}', '[]', '') {
		$r = $s->req(POST => $JSON, { 'Content-Type' => 'application/json' }, $body);
		is($r->{status}, 400, "JSON POST '$body': 400") or diag_resp($r);
		unchanged($JSON, $before{json}, "  after JSON POST '$body'");
	}
	$r = $s->req(PUT => 'bad/json-new', { 'Content-Type' => 'application/json' }, '{"a":');
	is($r->{status}, 400, 'PUT of a JSON stream with invalid JSON: 400') or diag_resp($r);
	is($s->req(HEAD => 'bad/json-new')->{status}, 404, '  stream not created');
	no_new_files('invalid JSON');
};

# ---- malformed offsets ------------------------------------------------------------------------
subtest 'malformed offsets answer 400' => sub {
	my @offsets = (
		'abc', '1,2', '', '%20', '0000000000000000_0000000000000004%20', '%200000000000000000_0000000000000004',
		'0000000000000000%200000000000000004', '0000_0004', '00000000000000000_0000000000000004',
		'0000000000000000_00000000000000004', '0000000000000000_000000000000004', '0000000000000000-0000000000000004',
		'000000000000000a_0000000000000004', '0000000000000000_0000000000000004_0000000000000000', '-2', 'now1',
		'0000000000000000_-000000000000004', '0000000000000000_000000000000000%00', '-1&offset=-1',
	);
	for my $o (@offsets) {
		$r = $s->req(GET => "$TEXT?offset=$o");
		is($r->{status}, 400, "GET offset='$o': 400") or diag_resp($r);
	}
	unchanged($TEXT, $before{text}, '  after malformed offsets');
};

# ---- malformed producer headers ---------------------------------------------------------------
subtest 'malformed producer headers answer 400 and change nothing' => sub {
	my @producer = (
		[ 'only Producer-Id',           { 'Producer-Id' => 'p' } ],
		[ 'no Producer-Seq',            { 'Producer-Id' => 'p', 'Producer-Epoch' => 0 } ],
		[ 'no Producer-Epoch',          { 'Producer-Id' => 'p', 'Producer-Seq' => 0 } ],
		[ 'no Producer-Id',             { 'Producer-Epoch' => 0, 'Producer-Seq' => 0 } ],
		[ 'only Producer-Seq',          { 'Producer-Seq' => 0 } ],
		[ 'empty Producer-Id',          { 'Producer-Id' => '', 'Producer-Epoch' => 0, 'Producer-Seq' => 0 } ],
		[ 'epoch abc',                  { 'Producer-Id' => 'p', 'Producer-Epoch' => 'abc', 'Producer-Seq' => 0 } ],
		[ 'seq abc',                    { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => 'abc' } ],
		[ 'epoch 1.5',                  { 'Producer-Id' => 'p', 'Producer-Epoch' => '1.5', 'Producer-Seq' => 0 } ],
		[ 'seq 1e3',                    { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => '1e3' } ],
		[ 'seq 0x1',                    { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => '0x1' } ],
		[ 'empty epoch',                { 'Producer-Id' => 'p', 'Producer-Epoch' => '', 'Producer-Seq' => 0 } ],
		[ 'empty seq',                  { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => '' } ],
		[ 'negative epoch',             { 'Producer-Id' => 'p', 'Producer-Epoch' => -1, 'Producer-Seq' => 0 } ],
		[ 'negative seq',               { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => -1 } ],
		[ 'epoch 2^53',                 { 'Producer-Id' => 'p', 'Producer-Epoch' => '9007199254740992', 'Producer-Seq' => 0 } ],
		[ 'seq 2^53',                   { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => '9007199254740992' } ],
		[ 'epoch 2^64',                 { 'Producer-Id' => 'p', 'Producer-Epoch' => '18446744073709551616', 'Producer-Seq' => 0 } ],
		[ 'seq 10^30',                  { 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => '1' . '0' x 30 } ],
	);
	for my $c (@producer) {
		my ($label, $h) = @$c;
		$r = $s->req(POST => $TEXT, { 'Content-Type' => 'text/plain', %$h }, 'prod');
		is($r->{status}, 400, "producer headers, $label: 400") or diag_resp($r);
		unchanged($TEXT, $before{text}, "  after producer headers, $label");
	}
};
subtest 'the largest producer epoch (2^53-1) is accepted' => sub {
	# The largest allowed value is fine (a gap for an unknown producer is not an error at epoch 2^53-1
	# with seq 0: it starts a new producer).
	$r = $s->req(POST => 'bad/limit', { 'Content-Type' => 'text/plain', 'Producer-Id' => 'max',
		'Producer-Epoch' => '9007199254740991', 'Producer-Seq' => 0 }, 'ok');
	ok($r->{status} >= 200 && $r->{status} < 300, "producer epoch 2^53-1 is accepted ($r->{status})")
		or diag_resp($r);
	$files = files();
};

# ---- unknown methods --------------------------------------------------------------------------
subtest 'unknown methods answer 405 with Allow and create nothing' => sub {
	for my $m (qw(PATCH FOO)) {
		$r = $s->req($m => $TEXT, { 'Content-Type' => 'text/plain' }, 'meth');
		is($r->{status}, 405, "$m: 405") or diag_resp($r);
		ok(defined $r->{headers}{allow} && $r->{headers}{allow} =~ /\bGET\b/ && $r->{headers}{allow} =~ /\bPOST\b/,
			"  $m: Allow header lists the methods (" . ($r->{headers}{allow} // 'none') . ")");
		unchanged($TEXT, $before{text}, "  after $m");
		$r = $s->req($m => 'bad/method-new', { 'Content-Type' => 'text/plain' }, 'meth');
		is_4xx($r, "$m on a missing stream");
		is($s->req(HEAD => 'bad/method-new')->{status}, 404, '  stream not created');
	}
	no_new_files('methods');
};

subtest 'the JSON stream is unchanged at the end' => sub {
	unchanged($JSON, $before{json}, 'JSON stream unchanged at the end');
};
done_testing;

# ---- helpers ----------------------------------------------------------------------------------

sub short { my ($x) = @_; length $x > 40 ? substr($x, 0, 20) . '...' : $x }

sub diag_resp {
	my ($res) = @_;
	my $c = $res->{content} // '';
	$c = substr($c, 0, 200) . '...' if length $c > 200;
	diag("got $res->{status} $res->{reason}: $c");
}

sub is_4xx {
	my ($res, $name) = @_;
	my $ok = ok($res->{status} >= 400 && $res->{status} < 500, "$name: 4xx ($res->{status})");
	diag_resp($res) unless $ok;
	return $ok;
}

# snap($path): what a stream looks like now (tail offset, content type, whole content).
sub snap {
	my ($path) = @_;
	my $h = $s->req(HEAD => $path);
	my ($body) = eval { $s->read_all($path) };
	return { status => $h->{status}, offset => $h->{headers}{'stream-next-offset'} // '',
		ctype => $h->{headers}{'content-type'} // '', body => $body // "(read failed: $@)" };
}

sub unchanged {
	my ($path, $was, $name) = @_;
	my $now = snap($path);
	my $ok = ok($now->{status} == $was->{status} && $now->{offset} eq $was->{offset}
		&& $now->{ctype} eq $was->{ctype} && $now->{body} eq $was->{body}, "$name: '$path' unchanged");
	diag("was: $was->{status} $was->{offset} '" . short($was->{body}) . "'; now: $now->{status} "
		. "$now->{offset} '" . short($now->{body}) . "'") unless $ok;
	%$was = %$now unless $ok;    # report each change once, not again in every later check
	return $ok;
}

# files(): every file under the stack's directory, except run-time files (pid, socket, lock and
# log files, the run/ dir, nginx temp dirs) and the stack's own stdout/stderr.
sub files {
	my %f;
	find({ no_chdir => 1, wanted => sub {
		return if length $File::Find::name <= length $s->dir;
		my $rel = substr($File::Find::name, length($s->dir) + 1);
		if (-d $_) {
			$File::Find::prune = 1 if $rel =~ m{(^|/)(run|tmp|temp|logs?|[a-z]+_temp)$};
			return;
		}
		return if $rel =~ m{^stack\.(stdout|stderr)$} || $rel =~ m{\.(pid|sock|log)$|lock};
		$f{$rel} = 1;
	} }, $s->dir);
	return \%f;
}

sub no_new_files {
	my ($name) = @_;
	my $now = files();
	my @new = sort grep { !$files->{$_} } keys %$now;
	ok(!@new, "$name: no new files in the stack's directory") or diag("new: @new[0 .. ($#new > 9 ? 9 : $#new)]");
	$files = $now;
}

sub chunked_request {
	my ($method, $target, $body) = @_;
	my $req = "$method $target HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
		. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
	for (my $i = 0; $i < length $body; $i += 8192) {
		my $c = substr($body, $i, 8192);
		$req .= sprintf("%x\r\n%s\r\n", length $c, $c);
	}
	return $req . "0\r\n\r\n";
}
