#!/usr/bin/env perl
# No two files of fcgi-app/ call each other in a loop: calls run one way,
# handlers.c -> live.c -> lot.c -> answer.c -> http.c (see fcgi-app/live.h).
# Reads the symbols each object defines and uses (nm), makes a graph of
# files, and fails naming the loop if there is one. Needs `make` first.
use strict;
use warnings;
use Test::More;

# The objects of today's sources only: a build directory may hold stale ones.
my $dir = ($ENV{DS_BUILD} // 'build') . '/fcgi-app';
my @objs = map { s{^fcgi-app/(.*)\.c$}{$dir/$1.o}r } sort glob('fcgi-app/*.c');
plan skip_all => "no objects in $dir (run make)" unless grep { -f } @objs;
my $nm = `sh -c 'command -v nm'`;
plan skip_all => 'nm not found' unless $nm;

my (%def, %use);
for my $o (@objs) {
	ok(-f $o, "$o is built") or next;
	(my $f = $o) =~ s{.*/}{};
	$f =~ s/\.o$/.c/;
	open(my $fh, '-|', 'nm', '-P', $o) or die "nm $o: $!";
	while (<$fh>) {
		my ($sym, $type) = split;
		next unless defined $type;
		if ($type eq 'U') {
			push @{ $use{$f} }, $sym;
		} elsif ($type =~ /^[TDBR]$/) {
			$def{$sym} = $f;
		}
	}
	close($fh) or die "nm $o failed";
}

my %edge;
for my $f (keys %use) {
	for my $s (@{ $use{$f} }) {
		my $g = $def{$s};
		$edge{$f}{$g}{$s} = 1 if defined $g && $g ne $f;
	}
}
for my $f (sort keys %edge) {
	note("$f -> ", join(', ', sort keys %{ $edge{$f} }));
}

# Depth-first search; a grey node met again closes a loop.
my (%colour, @stack, @loops);
sub visit {
	my ($f) = @_;
	$colour{$f} = 'grey';
	push @stack, $f;
	for my $g (sort keys %{ $edge{$f} // {} }) {
		if (($colour{$g} // '') eq 'grey') {
			my @loop = (@stack[(grep { $stack[$_] eq $g } 0 .. $#stack)[0] .. $#stack], $g);
			my @why;
			for my $i (0 .. $#loop - 1) {
				my ($a, $b) = @loop[$i, $i + 1];
				push @why, "$a calls $b (" . join(', ', sort keys %{ $edge{$a}{$b} }) . ')';
			}
			push @loops, join('; ', @why);
		} elsif (!$colour{$g}) {
			visit($g);
		}
	}
	pop @stack;
	$colour{$f} = 'black';
}
visit($_) for grep { !$colour{$_} } sort keys %edge;

ok(!@loops, 'no two files of fcgi-app/ call each other in a loop')
	or diag(join("\n", map { "loop: $_" } @loops));

# The live path's order, as live.h states it: no call goes back up.
my @order = qw(handlers.c live.c lot.c answer.c http.c);
for my $i (0 .. $#order) {
	for my $j ($i + 1 .. $#order) {
		my ($lo, $hi) = @order[$j, $i];
		ok(!$edge{$lo}{$hi}, "$lo does not call $hi")
			or diag("$lo calls $hi: " . join(', ', sort keys %{ $edge{$lo}{$hi} }));
	}
}
done_testing();
