# Durable Streams over FastCGI.
#
#   make            build everything (warnings are errors)
#   make run        install what is missing, build, run the stack on 127.0.0.1:4437
#   make test       install what is missing, build, run every test with prove
#   make sanitize   every test under ASan+UBSan: the C unit tests, then the
#                   integration tests against ASan+UBSan ds-fcgi and ds-notify
#                   (scripts/sanitize); fails on any sanitizer report from any
#                   process of the stack, even one that a test survived
#   make valgrind   install valgrind if missing, then the C unit tests under it
#   make fuzz       build the fuzzers (clang/libFuzzer) and run each briefly
#   make bench      run the benchmarks (prints numbers; not a test)
#   make soak       20 minutes of mixed load, watching memory and descriptors
#                   (scripts/soak; prints a table and a verdict; not a test)
#   make install    PREFIX=/usr/local DESTDIR=

SHELL   := /bin/bash
CC      ?= cc
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
B       ?= build

WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wwrite-strings -Wpointer-arith -Wformat=2 -Werror
CFLAGS  ?= -O2 -g
DSFLAGS = -std=c11 -D_GNU_SOURCE -fvisibility=hidden -pthread -I. $(WARN) $(CFLAGS)
# Each program links only what it uses. ds-fcgi: libfcgi, liblmdb (the
# store), libsodium (SSE base64, cursor jitter, webhook signatures and
# tokens), jansson (subscription documents) and libcurl (webhooks); the
# unit tests link ds-fcgi's archives and so its libraries; ds-notify needs
# none. jansson is also the fuzzers' reference parser (scripts/fuzz).
FCGI_LIBS = -lfcgi -llmdb -lsodium -ljansson -lcurl -pthread

STORE_SRC = $(wildcard store/*.c)
APP_SRC   = $(filter-out fcgi-app/main.c fcgi-app/ds-notify.c,$(wildcard fcgi-app/*.c))
ADMIN_SRC = $(wildcard admin/*.c)
UNIT_SRC  = $(wildcard t/unit/*_test.c)
FUZZ_SRC  = $(wildcard t/fuzz/fuzz_*.c)

STORE_OBJ = $(STORE_SRC:%.c=$(B)/%.o)
APP_OBJ   = $(APP_SRC:%.c=$(B)/%.o)
UNIT_BIN  = $(UNIT_SRC:t/unit/%.c=$(B)/t/%)

PROGS = $(B)/ds-fcgi $(B)/ds-notify $(B)/ds-admin

.PHONY: all setup setup-fronts setup-valgrind run test unit sanitize valgrind fuzz bench soak install clean

all: $(PROGS) $(UNIT_BIN)

$(B)/%.o: %.c $(wildcard store/*.h fcgi-app/*.h t/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(DSFLAGS) -c -o $@ $<

$(B)/libdsstore.a: $(STORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libdsapp.a: $(APP_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/ds-fcgi: $(B)/fcgi-app/main.o $(B)/libdsapp.a $(B)/libdsstore.a
	$(CC) $(DSFLAGS) -o $@ $^ $(FCGI_LIBS)

$(B)/ds-notify: $(B)/fcgi-app/ds-notify.o $(B)/fcgi-app/log.o \
	    $(B)/fcgi-app/privdrop.o
	$(CC) $(DSFLAGS) -o $@ $^

# ds-admin: the store's admin tool; the JSON validator and offsets are
# ds-fcgi's (libdsapp), so it links what ds-fcgi links.
$(B)/ds-admin: $(ADMIN_SRC:%.c=$(B)/%.o) $(B)/libdsapp.a $(B)/libdsstore.a
	$(CC) $(DSFLAGS) -o $@ $^ $(FCGI_LIBS)

$(B)/t/%: t/unit/%.c $(B)/libdsapp.a $(B)/libdsstore.a t/tap.h $(wildcard t/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(DSFLAGS) -o $@ $< $(B)/libdsapp.a $(B)/libdsstore.a $(FCGI_LIBS)

setup:
	@scripts/setup

run: setup all
	scripts/run --port 4437 --data ./var

# Every test, C unit tests and integration tests alike, is a t/*.t file.
# make test runs the conformance suite behind every front server: install them.
setup-fronts:
	@scripts/setup --front lighttpd --front caddy

test: setup-fronts all
	prove t/

unit: all
	prove t/0*-unit-*.t

# Unit tests report to stderr and fail by exit status. The integration tests'
# servers outlive their crashes (multiwatch respawns workers), so
# scripts/sanitize collects their reports in files and fails on any.
SANFLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=all

sanitize: setup
	$(MAKE) B=build-asan CFLAGS="$(SANFLAGS)" \
	  build-asan/ds-fcgi build-asan/ds-notify build-asan/ds-admin \
	  $(UNIT_SRC:t/unit/%.c=build-asan/t/%)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  DS_UNIT_DIR=build-asan/t prove t/0*-unit-*.t
	SAN_BUILD=build-asan scripts/sanitize

# make valgrind installs valgrind (and whatever else the build needs) first.
setup-valgrind:
	@scripts/setup --valgrind

valgrind: setup-valgrind all
	DS_UNIT_WRAP="valgrind -q --error-exitcode=99 --leak-check=full" prove t/0*-unit-*.t

fuzz:
	@scripts/fuzz

bench: setup all
	scripts/bench

soak: setup all
	scripts/soak

install: all
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(PROGS) $(DESTDIR)$(BINDIR)

clean:
	rm -rf build build-asan build-fuzz
