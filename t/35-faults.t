#!/usr/bin/perl
# Faults an attack found, each checked over HTTP against the real stack:
#  - an append (or a fork) framed for one stream must never land in another stream created at the
#    same path while the request was in flight, in either direction (JSON body into a text stream,
#    text body into a JSON stream); ds-fcgi --test-hooks holds a request between its check of the
#    stream and the store call for as long as its X-DS-Test-Pause header says, so the DELETE and
#    PUT land in that window every time;
#  - fork chains: as deep as the documented limit is created and read whole, one more is refused
#    with a 4xx, and ds-admin verify stays clean;
#  - ambiguous requests: a single-valued header sent twice with different values gets 400 and
#    changes nothing; a Host unfit to echo in Location gets 400 before anything is created; the
#    largest answer a PUT can produce still reaches the client; __ds is reserved in any case
#    (its subscription routes are tested in t/90-subs-*.t).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(:sys_wait_h);
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Stack;

local $SIG{ALRM} = sub { die "35-faults: timed out after 120 s\n" };
alarm 120;

my $s = Stack->start(workers => 2, threads => 8, args => [ '--', '--test-hooks' ]);
my $T = { 'Content-Type' => 'text/plain' };
my $J = { 'Content-Type' => 'application/json' };
my $PAUSE_MS = 1500;

sub show { my ($r) = @_; return "$r->{status} " . ($r->{content} // '') }

# race($path, \%req_headers, $method, $body, $between): sends the request with a pause in a child,
# runs $between (the DELETE and PUT) while it waits, and returns the request's response.
sub race {
	my ($path, $hdr, $method, $body, $between) = @_;
	pipe(my $rd, my $wr) or die "pipe: $!";
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		close $rd;
		my $r = $s->req($method => $path, { %$hdr, 'X-DS-Test-Pause' => $PAUSE_MS }, $body);
		print $wr "$r->{status}\n", $r->{content} // '';
		close $wr;
		POSIX::_exit(0);
	}
	close $wr;
	my $t0 = time;
	sleep 0.4;    # the child's request is inside its pause now
	$between->();
	my $elapsed = time - $t0;
	local $/;
	my $out = <$rd>;
	waitpid($pid, 0);
	ok($elapsed < $PAUSE_MS / 1000, sprintf('  DELETE and PUT ran inside the pause (%.2f s)', $elapsed));
	my ($status, $content) = split /\n/, $out // "0\n", 2;
	return { status => $status, content => $content // '' };
}

# ---- 1. appends pinned to the stream they were framed for -----------------------------------
subtest 'a JSON append to a stream made again as text during the append answers 409' => sub {
	my $p = 'race/json-to-text';
	$s->must(201, PUT => $p, $J, undef, 'JSON stream created');
	my $r = race($p, $J, POST => '[1,1,1,1,1,1,1,1]', sub {
		is($s->req(DELETE => $p)->{status}, 204, '  deleted during the append');
		is($s->req(PUT => $p, $T)->{status}, 201, '  created again as text/plain');
	});
	is($r->{status}, 409, 'the JSON append is checked again and refused by the text stream')
		or diag(show($r));
	my ($body) = $s->read_all($p);
	is($body, '', 'the text stream holds no byte of it');
};
subtest 'a text append to a stream made again as JSON answers 409; the JSON stays valid' => sub {
	my $p = 'race/text-to-json';
	$s->must(201, PUT => $p, $T, undef, 'text stream created');
	my $r = race($p, $T, POST => 'plain words', sub {
		is($s->req(DELETE => $p)->{status}, 204, '  deleted during the append');
		is($s->req(PUT => $p, $J)->{status}, 201, '  created again as JSON');
	});
	is($r->{status}, 409, 'the text append is refused by the JSON stream') or diag(show($r));
	my ($body) = $s->read_all($p);
	is($body, '[]', 'the JSON stream still reads as valid, empty JSON');
	is($s->req(POST => $p, $J, '{"after":1}')->{status}, 204, 'a later JSON append works');
	is(($s->read_all($p))[0], '[{"after":1}]', 'and reads back alone');
};
subtest 'an append to a stream made again with the same type lands in the new stream, once' => sub {
	my $p = 'race/same-type';
	$s->must(201, PUT => $p, $T, 'old', 'text stream created');
	my $r = race($p, $T, POST => '+new', sub {
		is($s->req(DELETE => $p)->{status}, 204, '  deleted during the append');
		is($s->req(PUT => $p, $T)->{status}, 201, '  created again, same type');
	});
	is($r->{status}, 204, 'an append that fits the new stream is checked again and lands there')
		or diag(show($r));
	is(($s->read_all($p))[0], '+new', 'in the new stream only, once');
};
subtest 'an append to a stream deleted during the append answers 404 and creates nothing' => sub {
	my $p = 'race/gone';
	$s->must(201, PUT => $p, $T, undef, 'text stream created');
	my $r = race($p, $T, POST => 'late', sub {
		is($s->req(DELETE => $p)->{status}, 204, '  deleted during the append');
	});
	is($r->{status}, 404, 'an append whose stream was deleted meanwhile answers 404') or diag(show($r));
	is($s->req(HEAD => $p)->{status}, 404, 'and creates nothing');
};
subtest 'a text fork whose source is made again as JSON during the fork answers 409' => sub {
	# A fork's body is framed by its source's type: the source replaced in between.
	my $src = 'race/src';
	$s->must(201, PUT => $src, $T, 'abc', 'text source created');
	my $r = race('race/fork', { %$T, 'Stream-Forked-From' => "/v1/stream/$src" }, PUT => 'raw', sub {
		is($s->req(DELETE => $src)->{status}, 204, '  source deleted during the fork');
		is($s->req(PUT => $src, $J, '[1]')->{status}, 201, '  source created again as JSON');
	});
	is($r->{status}, 409, 'the text fork is checked again and refused by the JSON source') or diag(show($r));
	my $h = $s->req(HEAD => 'race/fork');
	if ($h->{status} == 404) {
		pass('the fork was not created');
	} else {
		my ($body) = eval { $s->read_all('race/fork') };
		like($body // '', qr/^\[.*\]$/s, 'the fork reads as JSON');
	}
};

subtest 'a long-poll whose stream is made again shorter than its offset answers 404, not 400' => sub {
	# A long-poll whose stream is deleted and made again, shorter than its offset: 404, not 400.
	my $p = 'race/lp';
	$s->must(201, PUT => $p, $T, 'abcdef', 'stream for a waiting long-poll');
	pipe(my $rd, my $wr) or die "pipe: $!";
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		close $rd;
		my $h = HTTP::Tiny->new(timeout => 15);
		my $r = $h->get($s->url("$p?offset=0000000000000000_0000000000000006&live=long-poll"));
		print $wr $r->{status};
		close $wr;
		POSIX::_exit(0);
	}
	close $wr;
	sleep 0.4;
	is($s->req(DELETE => $p)->{status}, 204, '  deleted while the long-poll waits');
	is($s->req(PUT => $p, $T, 'ab')->{status}, 201, '  created again, shorter than its offset');
	my $st = do { local $/; <$rd> };
	waitpid($pid, 0);
	is($st, 404, 'the long-poll answers 404 (its stream is gone), not 400');
};

# ---- 3. fork depth ----------------------------------------------------------------------------
subtest 'forks nest as deep as the documented limit, one more answers 400' => sub {
	my $max = 31;    # DS_CHAIN_MAX - 1 forks below a plain stream
	$s->must(201, PUT => 'deep/0', $T, 'r', 'root of a fork chain');
	my $bad = 0;
	for my $i (1 .. $max) {
		my $r = $s->req(PUT => "deep/$i", { %$T, 'Stream-Forked-From' => '/v1/stream/deep/' . ($i - 1) }, 'x');
		$bad++ unless $r->{status} == 201;
	}
	is($bad, 0, "forks nest $max deep");
	my ($body) = eval { $s->read_all("deep/$max") };
	is($body, 'r' . ('x' x $max), "the fork $max deep reads every level");
	is($s->req(POST => "deep/$max", $T, 'y')->{status}, 204, 'and takes appends');
	my $r = $s->req(PUT => 'deep/too', { %$T, 'Stream-Forked-From' => "/v1/stream/deep/$max" });
	is($r->{status}, 400, 'one level deeper is refused with 400') or diag(show($r));
	like($r->{content}, qr/deep/, '  saying why');
	is($s->req(HEAD => 'deep/too')->{status}, 404, '  and not created');
};

# ---- 4. ambiguous requests --------------------------------------------------------------------
subtest 'a single-valued header sent twice with different values answers 400 and changes nothing' => sub {
	my $p = 'amb/s';
	$s->must(201, PUT => $p, $T, 'a', 'stream for header cases');
	my @cases = (
		[ 'two Producer-Seq', { %$T, 'Producer-Id' => 'p', 'Producer-Epoch' => 0, 'Producer-Seq' => [ 0, 5 ] } ],
		[ 'two Producer-Id', { %$T, 'Producer-Id' => [ 'p', 'q' ], 'Producer-Epoch' => 0, 'Producer-Seq' => 0 } ],
		[ 'two Producer-Epoch', { %$T, 'Producer-Id' => 'p', 'Producer-Epoch' => [ 0, 1 ], 'Producer-Seq' => 0 } ],
		[ 'two Content-Type', { 'Content-Type' => [ 'text/plain', 'application/json' ] } ],
		[ 'two Stream-Closed', { %$T, 'Stream-Closed' => [ 'false', 'true' ] } ],
		[ 'two Stream-Seq', { %$T, 'Stream-Seq' => [ 'b', 'a' ] } ],
	);
	for my $c (@cases) {
		my $r = $s->req(POST => $p, $c->[1], 'zz');
		is($r->{status}, 400, "POST with $c->[0] (different values): 400") or diag(show($r));
	}
	my $h = $s->req(HEAD => $p);
	is($h->{headers}{'stream-next-offset'}, '0000000000000000_0000000000000001', 'nothing was appended');
	ok(!$h->{headers}{'stream-closed'}, 'and the stream is not closed');
	my $r = $s->req(POST => $p, { %$T, 'Stream-Closed' => 'true, false' }, 'zz');
	is($r->{status}, 400, 'Stream-Closed "true, false" (joined by a front server): 400');
	$r = $s->req(POST => $p, { 'Content-Type' => [ 'text/plain', 'text/plain' ] }, 'b');
	is($r->{status}, 204, 'the same Content-Type twice is not ambiguous');
	$r = $s->req(PUT => 'amb/ttl', { %$T, 'Stream-TTL' => [ 60, 3600 ] });
	is($r->{status}, 400, 'PUT with two different Stream-TTL: 400');
	is($s->req(HEAD => 'amb/ttl')->{status}, 404, '  and nothing created');
	$r = $s->req(PUT => 'amb/fork', { %$T, 'Stream-Forked-From' => [ "/v1/stream/$p", '/v1/stream/deep/0' ] });
	is($r->{status}, 400, 'PUT with two different Stream-Forked-From: 400');
	is($s->req(HEAD => 'amb/fork')->{status}, 404, '  and nothing created');
};
subtest 'a Host unfit to echo in Location answers 4xx before anything is created' => sub {
	# Location echoes Host: a Host unfit to echo is refused before anything is created.
	for my $len (300, 3700, 7000) {
		my $host = 'h' x $len;
		my $r = $s->raw("PUT /v1/stream/amb/host$len HTTP/1.1\r\nHost: $host\r\nContent-Type: text/plain\r\n"
			. "Content-Length: 0\r\nConnection: close\r\n\r\n");
		ok($r->{status} >= 400 && $r->{status} < 500, "PUT with a $len-byte Host: 4xx ($r->{status})");
		is($s->req(HEAD => "amb/host$len")->{status}, 404, '  and nothing created');
	}
	my $r = $s->raw("PUT /v1/stream/amb/hostbad HTTP/1.1\r\nHost: a\"b<c\r\nContent-Length: 0\r\n"
		. "Connection: close\r\n\r\n");
	ok($r->{status} >= 400 && $r->{status} < 500, "PUT with a Host holding quotes and '<': 4xx ($r->{status})");
	is($s->req(HEAD => 'amb/hostbad')->{status}, 404, '  and nothing created');
};
subtest 'the largest PUT answer reaches the client whole; Location is for a 201 only' => sub {
	# The largest answer a PUT can give: longest path, all percent-encoded, a 255-byte Host
	# with a port, the longest Content-Type, and TTL.
	my $name = 'amb/' . ('%C3%A9' x 238);    # 4 + 476 = 480 bytes decoded
	my $host = ('a' x 249) . ':4437';
	my $ctype = 'text/' . ('x' x 250);
	my $r = $s->raw("PUT /v1/stream/$name HTTP/1.1\r\nHost: $host\r\nContent-Type: $ctype\r\n"
		. "Stream-TTL: 3600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
	is($r->{status}, 201, 'the largest PUT answer reaches the client whole') or diag(substr($r->{raw}, 0, 300));
	is($r->{headers}{location}, "http://$host/v1/stream/$name", '  with its Location');
	$r = $s->req(PUT => 'amb/orphan', { %$T, 'Stream-Forked-From' => '/v1/stream/amb/none' });
	is($r->{status}, 404, 'a fork of a missing source: 404');
	ok(!exists $r->{headers}{location}, '  and no Location (it is for a 201 only)');
};
subtest 'HTTP/1.0 PUT without Host gets a relative Location; Stream-Closed true and TRUE agree' => sub {
	my $r = $s->raw("PUT /v1/stream/amb/nohost HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
	is($r->{status}, 201, 'HTTP/1.0 PUT without Host: 201');
	is($r->{headers}{location}, '/v1/stream/amb/nohost', '  with a relative Location');
	$r = $s->req(POST => 'amb/nohost', { %$T, 'Stream-Closed' => [ 'true', 'TRUE' ] }, 'x');
	is($r->{status}, 204, 'Stream-Closed true and TRUE agree: not ambiguous');
	is($s->req(HEAD => 'amb/nohost')->{headers}{'stream-closed'}, 'true', '  and the stream is closed');
};
subtest 'control bytes are refused, never stored or echoed' => sub {
	# Values stored or echoed in answers must not carry control bytes (found by fuzz_request).
	my $r = $s->raw("PUT /v1/stream/amb/ctl HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; a=\x01b\r\n"
		. "Content-Length: 0\r\nConnection: close\r\n\r\n");
	ok($r->{status} >= 400 && $r->{status} < 500, "a Content-Type with a control byte: 4xx ($r->{status})");
	is($s->req(HEAD => 'amb/ctl')->{status}, 404, '  and nothing created');
	$r = $s->raw("OPTIONS /v1/stream/amb/ctl HTTP/1.1\r\nHost: x\r\n"
		. "Access-Control-Request-Headers: a\x01b\r\nConnection: close\r\n\r\n");
	unlike($r->{raw}, qr/\x01/, 'OPTIONS does not echo a control byte');
};
subtest 'Location echoes host:port' => sub {
	my $r = $s->raw("PUT /v1/stream/amb/withport HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 0\r\n"
		. "Connection: close\r\n\r\n");
	is($r->{headers}{location}, 'http://example.test:8080/v1/stream/amb/withport', 'Location echoes host:port');
};
subtest '__ds is reserved in any case' => sub {
	my $r = $s->req(PUT => '__ds/subscriptions/x', $T);
	is($r->{status}, 400, '__ds routes are the control API: a PUT that is no subscription gets 400');
	like($r->{content}, qr/"code":"INVALID_REQUEST"/, '  with an INVALID_REQUEST error document');
	for my $p ('__DS/x', '__Ds', '__dS/subscriptions/y') {
		$r = $s->req(PUT => $p, $T);
		is($r->{status}, 400, "PUT $p: reserved in any case, 400");
		is($s->req(HEAD => $p)->{status}, 400, "  HEAD $p: 400 too");
	}
	is($s->req(PUT => '__DSx', $T)->{status}, 201, '__DSx is an ordinary stream name');
	is($s->req(PUT => 'a/__DS', $T)->{status}, 201, '__DS below the first segment is ordinary');
};

subtest 'ds-admin verify finds the store clean after all of it' => sub {
	my $out = `${\ Stack::admin_bin()} --data ${\ $s->data_dir} verify 2>&1`;
	is($? >> 8, 0, 'ds-admin verify is clean') or diag($out);
};
$s->stop;
done_testing;
