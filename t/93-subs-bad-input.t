#!/usr/bin/perl
# Bad input to the __ds routes, against a stack run as production runs it (ds-fcgi
# --no-webhook-loopback after scripts/run's development flag):
#  - every refused webhook URL form gets 400 WEBHOOK_URL_REJECTED and stores nothing
#    (and URLs of this server come from --public-url when it is given)
#    (PROTOCOL 6.2, 12.8), and a name that resolves to loopback is refused when connecting;
#  - invalid JSON, wrong types, unknown fields, huge bodies, bad percent-encoding, missing,
#    forged or misused tokens on every route get a 4xx with an error document, and the
#    subscriptions, their acked offsets, the lease and the wake stream are unchanged after.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Stack;

my $PUB = 'https://streams.example.com/api/v1/stream';
my $s = Stack->start(workers => 2, threads => 8,
	args => [ '--', '--no-webhook-loopback', '--public-url', "$PUB/" ]);
my $J = { 'Content-Type' => 'application/json' };
my $T = JSON::PP::true;

sub doc { my $r = shift; my $d = eval { decode_json($r->{content}) }; return $d // {} }

subtest 'refused webhook URLs store nothing' => sub {
	my @urls = (
		'http://10.0.0.1/hook', 'https://10.0.0.1/hook', 'https://10.1/hook', 'https://172.16.5.4/',
		'https://192.168.1.1/', 'https://169.254.169.254/latest/meta-data/', 'https://100.64.0.1/',
		'https://0.0.0.0/', 'https://224.0.0.1/', 'https://255.255.255.255/',
		'https://127.0.0.1/hook', 'https://127.1/', 'https://0x7f000001/', 'https://2130706433/',
		'http://localhost:8080/hook', 'https://localhost/', 'https://LOCALHOST./', 'https://a.localhost/',
		'https://[::1]/', 'https://[::]/', 'https://[fd00::1]/', 'https://[fc00::5]/', 'https://[fe80::1]/',
		'https://[::ffff:10.0.0.1]/', 'https://[::ffff:127.0.0.1]/', 'https://[64:ff9b::a9fe:a9fe]/',
		'https://[ff02::1]/', 'https://metadata.google.internal/computeMetadata/v1/',
		'http://example.com/hook', 'ftp://example.com/hook', 'file:///etc/passwd', 'gopher://x/',
		'https://user:pw@example.com/', 'https://example.com@10.0.0.1/', 'example.com/hook', '',
		'https://', 'https://exa mple.com/', "https://example.com/\nX: y", 'https://example.com:0/',
		'https://example.com:99999/', 'https://[::1/', 'https://exa_mple.com/', 'javascript:alert(1)',
		'https://example.com/' . ('a' x 3000),
	);
	my $i = 0;
	for my $u (@urls) {
		my $id = 'bad-url-' . $i++;
		my $r = $s->req(PUT => "__ds/subscriptions/$id", $J,
			encode_json({ type => 'webhook', pattern => 'x/*', webhook => { url => $u } }));
		my $show = length $u > 60 ? substr($u, 0, 60) . '...' : $u;
		$show =~ s/\n/\\n/g;
		is($r->{status}, 400, "$show: 400");
		is(doc($r)->{error}{code}, 'WEBHOOK_URL_REJECTED', '  WEBHOOK_URL_REJECTED');
		is($s->req(GET => "__ds/subscriptions/$id")->{status}, 404, '  nothing stored');
	}
	my $r = $s->req(PUT => '__ds/subscriptions/good-url', $J,
		encode_json({ type => 'webhook', pattern => 'x/*', webhook => { url => 'https://example.com:8443/h?q=1' } }));
	is($r->{status}, 201, 'a public https URL is taken');
	is(eval { decode_json($r->{content})->{webhook}{signing}{jwks_url} }, "$PUB/__ds/jwks.json",
		'jwks_url is made from --public-url (its trailing slash dropped)');
	$s->must(204, DELETE => '__ds/subscriptions/good-url');
};

subtest 'a name that resolves to loopback is refused when connecting' => sub {
	my ($name) = grep { my $a = `getent hosts $_ 2>/dev/null`; $a =~ /^(127\.|::1\s)/ }
		(split(/\s+/, `hostname 2>/dev/null`), 'ip6-localhost', 'localhost.localdomain');
	plan skip_all => 'no name here resolves to loopback except "localhost"' unless $name;
	my $r = $s->req(PUT => '__ds/subscriptions/dns', $J,
		encode_json({ type => 'webhook', streams => ['dns/a'], webhook => { url => "https://$name:9/hook" } }));
	is($r->{status}, 201, "https://$name/ is a name: taken when created");
	$s->must(201, PUT => 'dns/a', $J, '{"a":1}');
	my $ok;
	for (1 .. 60) {
		$ok = doc($s->req(GET => '__ds/subscriptions/dns'))->{status} eq 'failed';
		last if $ok;
		sleep 0.05;
	}
	ok($ok, 'delivery failed');
	like($s->stderr, qr/refused to connect to a private, loopback or reserved address/,
		'because the address connected to is loopback');
	$s->must(204, DELETE => '__ds/subscriptions/dns');
};

# The state the bad requests below must leave alone.
$s->must(201, PUT => 'wake/pool', $J, '[]');
# (Linked to a stream that never gets data: no delivery attempt changes it meanwhile.)
$s->must(201, PUT => '__ds/subscriptions/hook', $J, encode_json({ type => 'webhook',
	pattern => 'none/*', streams => ['ev/x'], webhook => { url => 'https://example.com/hook' } }));
$s->must(201, PUT => '__ds/subscriptions/pull', $J, encode_json({ type => 'pull-wake',
	pattern => 'ev/*', wake_stream => 'wake/pool', lease_ttl_ms => 600000 }));
$s->must(201, PUT => 'ev/a', $J, '{"a":1}');
my $r = $s->req(POST => '__ds/subscriptions/pull/claim', $J, '{"worker":"w1"}');
is($r->{status}, 200, 'setup: pull claimed') or BAIL_OUT('no claim');
my $c = doc($r);
my $tail = $c->{streams}[0]{tail_offset};
$r = $s->req(POST => '__ds/subscriptions/pull/ack', { %$J, Authorization => "Bearer $c->{token}" },
	encode_json({ wake_id => $c->{wake_id}, generation => $c->{generation} }));
is($r->{status}, 200, 'setup: a heartbeat');
sleep 0.5;    # let the wake events land
sub snapshot {
	return join "\n", map({ $s->req(GET => "__ds/subscriptions/$_")->{content} } qw(hook pull)),
		($s->read_all('wake/pool'))[0], $s->req(GET => '__ds/jwks.json')->{content};
}
my $before = snapshot();

my $big = encode_json({ type => 'webhook', pattern => 'ev/*', webhook => { url => 'https://example.com/' },
	description => 'x' x 70000 });
my $sub = '__ds/subscriptions';
my $A = { %$J, Authorization => "Bearer $c->{token}" };
my $ackdoc = sub { encode_json({ wake_id => $c->{wake_id}, generation => $c->{generation}, @_ }) };
my $off0 = '0000000000000000_0000000000000000';
my $beyond = '0000000000000000_0000000000009999';
(my $forged = $c->{token}) =~ s/.$/$& eq 'A' ? 'B' : 'A'/e;
my @bad = (
	# [method, path, headers, body, status]
	[ PUT => "$sub/hook", $J, '{', 400 ],
	[ PUT => "$sub/hook", $J, '', 400 ],
	[ PUT => "$sub/hook", $J, '[]', 400 ],
	[ PUT => "$sub/hook", $J, '"webhook"', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","type":"pull-wake","pattern":"a"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":5,"pattern":"a"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"other","pattern":"a"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":5,"webhook":{"url":"https://e.com/"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","streams":"a","webhook":{"url":"https://e.com/"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","streams":[1],"webhook":{"url":"https://e.com/"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","streams":[],"webhook":{"url":"https://e.com/"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":"https://e.com/"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":5}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/","secret":"s"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"extra":1}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"lease_ttl_ms":"30000"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"lease_ttl_ms":1500.5}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"lease_ttl_ms":999}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"lease_ttl_ms":600001}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"description":5}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"webhook","pattern":"a","webhook":{"url":"https://e.com/"},"wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","pattern":"a"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","pattern":"a","wake_stream":"__ds/x"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","pattern":"a","wake_stream":"w","webhook":{"url":"https://e.com/"}}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","streams":["../x"],"wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","streams":["a//b"],"wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","streams":["a%2Fb"],"wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","streams":["a\u0000b"],"wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, '{"type":"pull-wake","pattern":"","wake_stream":"w"}', 400 ],
	[ PUT => "$sub/new1", $J, $big, 413 ],
	[ PUT => "$sub/bad%zz", $J, '{}', 400 ],
	[ PUT => "$sub/a%2Fb", $J, '{}', 400 ],
	[ PUT => "$sub/" . ('i' x 129), $J, '{}', 400 ],
	[ PUT => "$sub/hook", $J, encode_json({ type => 'webhook', pattern => 'ev/*',
		webhook => { url => 'https://example.com/other' } }), 409 ],
	[ PATCH => "$sub/hook", $J, '{}', 405 ],
	[ GET => "$sub/nosuch", {}, undef, 404 ],
	[ DELETE => "$sub/nosuch", {}, undef, 404 ],
	[ GET => '__ds', {}, undef, 404 ],
	[ GET => '__ds/other', {}, undef, 404 ],
	[ GET => "$sub/", {}, undef, 404 ],
	[ GET => "$sub/hook/other", {}, undef, 404 ],
	[ POST => '__ds/jwks.json', $J, '{}', 405 ],
	[ POST => "$sub/hook/streams", $J, '{', 400 ],
	[ POST => "$sub/hook/streams", $J, '{"streams":[]}', 400 ],
	[ POST => "$sub/hook/streams", $J, '{"streams":"ev/y"}', 400 ],
	[ POST => "$sub/hook/streams", $J, '{"streams":["ev/y"],"x":1}', 400 ],
	[ POST => "$sub/hook/streams", $J, '{"streams":["/ev"]}', 400 ],
	[ POST => "$sub/nosuch/streams", $J, '{"streams":["ev/y"]}', 404 ],
	[ GET => "$sub/hook/streams", {}, undef, 405 ],
	[ DELETE => "$sub/hook/streams/ev%zzx", {}, undef, 400 ],
	[ DELETE => "$sub/hook/streams/%2E%2E", {}, undef, 400 ],
	[ DELETE => "$sub/hook/streams/a%00b", {}, undef, 400 ],
	[ DELETE => "$sub/nosuch/streams/ev%2Fx", {}, undef, 404 ],
	[ POST => "$sub/pull/claim", $J, '{', 400 ],
	[ POST => "$sub/pull/claim", $J, '{}', 400 ],
	[ POST => "$sub/pull/claim", $J, '{"worker":5}', 400 ],
	[ POST => "$sub/pull/claim", $J, '{"worker":""}', 400 ],
	[ POST => "$sub/pull/claim", $J, '{"worker":"w2","x":1}', 400 ],
	[ POST => "$sub/pull/claim", $J, '{"worker":"w2"}', 409 ],
	[ POST => "$sub/hook/claim", $J, '{"worker":"w2"}', 400 ],
	[ POST => "$sub/nosuch/claim", $J, '{"worker":"w2"}', 404 ],
	[ GET => "$sub/pull/claim", {}, undef, 405 ],
	[ POST => "$sub/pull/ack", $J, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/ack", { %$J, Authorization => "Bearer $forged" }, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/ack", { %$J, Authorization => "Basic $c->{token}" }, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/ack", { %$J, Authorization => "Bearer " }, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/ack", { %$J, Authorization => "Bearer " . 'A' x 5000 }, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/callback", $A, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/hook/ack", $A, $ackdoc->(done => $T), 401 ],
	[ POST => "$sub/pull/ack", $A, '{', 400 ],
	[ POST => "$sub/pull/ack", $A, '[]', 400 ],
	[ POST => "$sub/pull/ack", $A, encode_json({ wake_id => $c->{wake_id}, generation => "$c->{generation}" }), 400 ],
	[ POST => "$sub/pull/ack", $A, encode_json({ wake_id => 5, generation => $c->{generation} }), 400 ],
	[ POST => "$sub/pull/ack", $A, encode_json({ generation => $c->{generation} }), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(done => 'yes'), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => 'x'), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a' } ]), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => 'abc' } ]), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => '-1' } ]), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => $tail, x => 1 } ]), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => $tail },
		{ stream => 'ev/nolink', offset => $off0 } ], done => $T), 400 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => $beyond } ], done => $T), 409 ],
	[ POST => "$sub/pull/ack", $A, $ackdoc->(extra => 1, done => $T), 400 ],
	[ POST => "$sub/pull/ack", $A, encode_json({ wake_id => $c->{wake_id}, generation => $c->{generation} + 1,
		done => $T }), 409 ],
	[ POST => "$sub/pull/ack", $A, encode_json({ wake_id => 'w_other', generation => $c->{generation},
		done => $T }), 409 ],
	[ POST => "$sub/pull/release", $A, $ackdoc->(acks => [ { stream => 'ev/a', offset => $tail } ]), 400 ],
	[ POST => "$sub/pull/release", $A, encode_json({ wake_id => 'w_other', generation => $c->{generation} }), 409 ],
	[ POST => "$sub/pull/ack", { %$A, 'Content-Length' => 70000 }, 'x' x 70000, 413 ],
);
for my $b (@bad) {
	my ($m, $p, $h, $body, $want) = @$b;
	my $r = $s->req($m, $p, $h, $body);
	my $what = "$m $p" . (defined $body ? ' ' . (length $body > 50 ? substr($body, 0, 50) . '...' : $body) : '');
	is($r->{status}, $want, "$what: $want");
	my $d = eval { decode_json($r->{content}) };
	# nginx itself refuses a malformed percent-encoding (400, its own HTML page).
	my $front = ($r->{headers}{'content-type'} // '') =~ m{^text/html};
	ok($front || ($d && ref $d->{error} eq 'HASH' && $d->{error}{code}),
		'  with an error document' . ($front ? ' (the front server\'s)' : ''))
		or diag($r->{content});
}
my $after = snapshot();
is($after, $before, 'subscriptions, acked offsets, wake stream and keys unchanged')
	or diag("before:\n$before\nafter:\n$after");
$r = $s->req(POST => '__ds/subscriptions/pull/claim', $J, '{"worker":"w3"}');
is(doc($r)->{error}{current_holder}, 'w1', 'the lease is still w1\'s');
$r = $s->req(POST => '__ds/subscriptions/pull/ack', $A,
	$ackdoc->(acks => [ { stream => 'ev/a', offset => $tail } ], done => $T));
is($r->{status}, 200, 'and its token still acks');

subtest 'a subscription links at most 10000 streams by name' => sub {
	$s->must(201, PUT => '__ds/subscriptions/cap', $J,
		encode_json({ type => 'pull-wake', streams => ['cap/00000'], wake_stream => 'cap-wake' }));
	my ($at, $ok) = (1, 1);
	while ($at < 10000) {
		my @b = map { sprintf 'cap/%05d', $_ } $at .. ($at + 255 < 10000 ? $at + 255 : 9999);
		my $r = $s->req(POST => '__ds/subscriptions/cap/streams', $J, encode_json({ streams => \@b }));
		$ok &&= $r->{status} == 204;
		$at += @b;
	}
	ok($ok, '10000 streams linked, 256 a request');
	my $r = $s->req(POST => '__ds/subscriptions/cap/streams', $J,
		encode_json({ streams => [ 'cap/00001', 'cap/10000' ] }));
	is($r->{status}, 400, 'one more: 400');
	is(doc($r)->{error}{code}, 'INVALID_REQUEST', '  INVALID_REQUEST');
	$r = $s->req(GET => '__ds/subscriptions/cap');
	my @l = @{ doc($r)->{streams} // [] };
	is(scalar(@l), 10000, '  nothing of that request linked');
	ok(!grep({ $_->{path} eq 'cap/10000' } @l) && (grep { $_->{path} eq 'cap/09999' } @l), '  cap/10000 is not there, cap/09999 is');
	is($s->req(POST => '__ds/subscriptions/cap/streams', $J,
		encode_json({ streams => [ 'cap/00001', 'cap/09999' ] }))->{status}, 204,
		'streams already linked can be named again');
	$s->must(204, DELETE => '__ds/subscriptions/cap');
};

my $out = `${\ Stack::admin_bin()} --data ${\ $s->data_dir} verify 2>&1`;
is($? >> 8, 0, 'ds-admin verify is clean') or diag($out);
$s->stop;
done_testing;
