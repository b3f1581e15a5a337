package Receiver;

# Receiver: a webhook receiver (t/lib/webhook-receiver.mjs, Node) for the subscription tests.
#
#   my $rcv = Receiver->start($stack);       # skip_all without node
#   $rcv->url                                # http://127.0.0.1:PORT/hook
#   $rcv->answer(500, {}) ; $rcv->answer(200, { done => JSON::PP::true });  # queued answers
#   my $req = $rcv->next(5);                 # the next request, or undef after 5 s:
#                                            # { at_ms, signature, sig_ok, sig_why, raw, body, answered }
#   $rcv->stop;
#
# Each request's Webhook-Signature is checked by the receiver against the JWK Set the stack
# publishes at the moment the request arrives (sig_ok).

use strict;
use warnings;
use IPC::Open2 qw(open2);
use IO::Select;
use JSON::PP;
use Time::HiRes qw(time);
use FindBin;
use Test::More;

sub start {
	my ($class, $stack, %opt) = @_;
	my $node = `sh -c 'command -v node'`;
	chomp $node;
	plan skip_all => 'node is not installed' unless $node;
	my $jwks = $stack->base . '/v1/stream/__ds/jwks.json';
	my $default = $opt{default} // '200 {}';
	my ($out, $in);
	my $pid = open2($out, $in, $node, "$FindBin::Bin/lib/webhook-receiver.mjs",
		$opt{port} // 0, $jwks, $default);
	my $self = bless { pid => $pid, out => $out, in => $in, buf => '' }, $class;
	my $l = $self->_line(10) // die "webhook receiver did not start";
	$l =~ /^listening (\d+)/ or die "webhook receiver: $l";
	$self->{port} = $1;
	return $self;
}

sub url  { "http://127.0.0.1:$_[0]{port}/hook" }
sub port { $_[0]{port} }

sub answer {
	my ($self, $status, $body) = @_;
	my $fh = $self->{in};
	print $fh "$status " . encode_json($body // {}) . "\n";
	$fh->flush;
}

sub _line {
	my ($self, $timeout) = @_;
	my $deadline = time + $timeout;
	my $sel = IO::Select->new($self->{out});
	while ($self->{buf} !~ /\n/) {
		my $left = $deadline - time;
		return undef if $left <= 0;
		next unless $sel->can_read($left);
		my $n = sysread($self->{out}, my $chunk, 65536);
		return undef unless $n;
		$self->{buf} .= $chunk;
	}
	$self->{buf} =~ s/^([^\n]*)\n// or return undef;
	return $1;
}

sub next {
	my ($self, $timeout) = @_;
	my $l = $self->_line($timeout // 5) // return undef;
	return decode_json($l);
}

sub stop {
	my ($self) = @_;
	return unless $self->{pid};
	close $self->{in};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;
