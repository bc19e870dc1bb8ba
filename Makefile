# peerlisten developer Makefile.  `make` builds peerlisten/core.so in-tree,
# `make test` installs missing Debian packages, builds and runs the suite.
SHELL := /bin/bash

LUA ?= lua5.4
CC ?= gcc
PKG_CONFIG ?= pkg-config
BUSTED ?= busted
LUACHECK ?= luacheck
CPPCHECK ?= cppcheck
VALGRIND ?= valgrind
LDOC ?= ldoc

PKGS := lua5.4 libuv openssl
# Everything the suite and .ci/run use on a fresh Debian 12: build (gcc,
# libc6-dev, binutils for `nm -D`), specs (lua-socket, lua-filesystem; openssl,
# curl, go, etcd as real peers; util-linux for setsid/setpriv/taskset), the
# bench smoke spec (nginx-light, lua-http with lua-luaossl, lua-sec), the
# rockspec spec (luarocks), make lint (cppcheck), make memcheck (valgrind),
# make doc (lua-ldoc), make fuzz (clang with libFuzzer's runtime), the cluster
# specs and guide (etcd-client for etcdctl, iproute2 for network namespaces,
# bsdutils for `script`, the pty of the log-format spec).
DEB_PACKAGES := lua5.4 liblua5.4-dev libssl-dev libuv1-dev lua-busted lua-check \
  lua-yaml lua-cjson lua-socket lua-filesystem pkg-config gcc libc6-dev binutils make \
  openssl curl golang-go etcd-server nginx-light util-linux coreutils \
  lua-sec lua-http lua-luaossl luarocks valgrind cppcheck clang libclang-rt-14-dev lua-ldoc \
  etcd-client iproute2 bsdutils

CWARNS := -Wall -Wextra -pedantic -Wcast-align -Wdisabled-optimization \
  -Wpointer-arith -Wshadow -Wsign-compare -Wundef -Wwrite-strings \
  -Wbad-function-cast -Wdeclaration-after-statement -Wmissing-prototypes \
  -Wnested-externs -Wstrict-prototypes
OPTFLAGS ?= -O2
CFLAGS ?= $(OPTFLAGS)
PL_CFLAGS = -std=c99 -DPL_TEST_HOOKS -D_XOPEN_SOURCE=700 -D_DEFAULT_SOURCE $(CWARNS) -Werror -fPIC -fvisibility=hidden \
  $(shell $(PKG_CONFIG) --cflags $(PKGS))
# The Lua interpreter provides the Lua API: do not link liblua into the module.
PL_LIBS = $(shell $(PKG_CONFIG) --libs libuv openssl)
LDFLAGS ?=

SRCS := $(sort $(wildcard csrc/*.c))
HDRS := $(wildcard csrc/*.h)
MODULE := peerlisten/core.so

ASAN_DIR := build/asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_LUA := $(ASAN_DIR)/lua

SPECS ?= spec
BUSTED_ARGS ?=

.PHONY: all deps test check lint sanitize memcheck fuzz bench doc clean

all: $(MODULE)

$(MODULE): $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(PL_CFLAGS) $(CFLAGS) -shared -o $@ $(SRCS) $(PL_LIBS) $(LDFLAGS)

$(ASAN_DIR)/$(MODULE): $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(PL_CFLAGS) -O1 -g $(ASAN_FLAGS) -shared -o $@ $(SRCS) $(PL_LIBS) $(LDFLAGS)

# An interpreter linked with the sanitizers: their runtime comes first without
# LD_PRELOAD, which the suite's child processes (openssl, curl, go) would inherit.
$(ASAN_LUA): .ci/asan_lua.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(ASAN_FLAGS) $(shell $(PKG_CONFIG) --cflags lua5.4) -o $@ $< \
	  $(shell $(PKG_CONFIG) --libs lua5.4) -rdynamic

# Install what is missing (root: apt-get; otherwise print the command).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
	  echo "missing Debian packages; run:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	fi

# Runs busted with TAP output and ends with one "N passed, N failed" line.
# RUNNER prefixes the interpreter (valgrind); CPATH_DIR picks the build.
CPATH_DIR ?= .
RUNNER ?=
define run_suite
	@set -o pipefail; out=$$(mktemp); \
	$(RUNNER) $(LUA) $$(command -v $(BUSTED)) --ignore-lua --cpath="$(CPATH_DIR)/?.so" \
	  -o TAP $(BUSTED_ARGS) $(SPECS) 2>&1 | tee "$$out"; rc=$${PIPESTATUS[0]}; \
	pass=$$(grep -c '^ok ' "$$out"); fail=$$(grep -c '^not ok ' "$$out"); \
	if ! grep -q '^1\.\.[0-9]' "$$out"; then fail=$$((fail + 1)); fi; \
	rm -f "$$out"; \
	echo "$$pass passed, $$fail failed"; \
	[ "$$rc" = 0 ] && [ "$$fail" = 0 ]
endef

test: deps all
	$(run_suite)

# The fast subset for the edit-test loop: no real peers (#interop), no
# benchmark, install or real-clock waits (#slow). `make test` runs them all.
check: BUSTED_ARGS = --exclude-tags=slow,interop
check: deps all
	$(run_suite)

lint:
	$(LUACHECK) -q $(wildcard lua spec bin examples)
	$(CPPCHECK) --quiet --error-exitcode=1 --enable=warning,portability \
	  --inline-suppr --std=c99 -Icsrc --suppress=missingIncludeSystem csrc

# (the in-tree build too: child processes of the suite load ./peerlisten/core.so)
sanitize: deps all $(ASAN_DIR)/$(MODULE) $(ASAN_LUA)
	@ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=23" \
	  LSAN_OPTIONS="suppressions=$(CURDIR)/.ci/lsan.supp:print_suppressions=0" \
	  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
	  $(MAKE) --no-print-directory _suite CPATH_DIR=$(ASAN_DIR) LUA=$(CURDIR)/$(ASAN_LUA)

memcheck: RUNNER = $(VALGRIND) --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite --trace-children=no --quiet
memcheck: deps all
	$(run_suite)

_suite:
	$(run_suite)

# libFuzzer targets (fuzz/*.c): each links the whole module (with the test
# hooks) and a Lua interpreter, and drives it through its Lua API.  Each runs
# FUZZ_SECONDS on its committed seeds (fuzz/corpus/<target>); entries it finds
# go to build/fuzz/new/<target>, crashes to build/fuzz/crash-*.  Per-input
# leak checks are off (Lua frees in its GC, so every input looks leaky);
# LeakSanitizer still checks at exit.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 15
FUZZ_DIR := build/fuzz
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/*.c)))
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
  -fno-sanitize-recover=undefined -DPL_TEST_HOOKS -DPL_ROOT='"$(CURDIR)"'

$(FUZZ_DIR)/%: fuzz/%.c fuzz/fuzz.h $(SRCS) $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -std=c99 -D_XOPEN_SOURCE=700 -D_DEFAULT_SOURCE -Icsrc \
	  $(shell $(PKG_CONFIG) --cflags $(PKGS)) -o $@ $< $(SRCS) \
	  $(shell $(PKG_CONFIG) --libs lua5.4 libuv openssl) -lm

fuzz: deps $(FUZZ_BINS)
	@set -e; summary=""; for t in $(FUZZ_TARGETS); do \
	  new=$(FUZZ_DIR)/new/$$t; rm -rf "$$new"; mkdir -p "$$new"; log=$(FUZZ_DIR)/$$t.log; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  if ! ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
	    $(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=3072 -detect_leaks=0 -print_final_stats=1 \
	      -artifact_prefix=$(FUZZ_DIR)/crash-$$t- "$$new" fuzz/corpus/$$t > "$$log" 2>&1; then \
	    tail -60 "$$log"; echo "fuzz: $$t FAILED (log $$log, input $(FUZZ_DIR)/crash-$$t-*)"; exit 1; \
	  fi; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' "$$log"); \
	  summary="$$summary$$t: $$runs executions, seeds $$(ls fuzz/corpus/$$t | wc -l), new $$(ls "$$new" | wc -l)\n"; \
	done; printf "$$summary"

bench: all
	bench/run

# The API reference (LDoc, config.ld) in build/doc/; any LDoc warning about
# the sources fails the target, so the reference cannot rot quietly.
doc: docs/benchmarks.md
	@command -v $(LDOC) >/dev/null || { echo "make doc: $(LDOC) not found (Debian package lua-ldoc)"; exit 1; }
	@out=$$($(LDOC) . 2>&1); rc=$$?; echo "$$out"; \
	if [ "$$rc" != 0 ]; then echo "make doc: ldoc failed (exit $$rc)"; exit 1; fi; \
	if echo "$$out" | grep -E '^[^ ]+:[0-9]+: '; then echo "make doc: ldoc warnings (above)"; exit 1; fi

# The benchmark page is generated from the last bench run, never copied.
docs/benchmarks.md: bench/results/latest.md bench/mkdoc.lua
	$(LUA) bench/mkdoc.lua bench/results/latest.md > $@.tmp && mv $@.tmp $@
	$(LUA) bench/mkdoc.lua --readme README.md bench/results/latest.md > README.md.tmp && mv README.md.tmp README.md

clean:
	rm -rf peerlisten/core.so build csrc/*.o
