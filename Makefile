# mcp-agent: `make` builds mcp-agent and mcp; `make test` runs every suite;
# `make check` runs them again under AddressSanitizer and UBSan.
CC       ?= cc
PKGS     := luajit libuv libmicrohttpd libcurl jansson sqlite3 gnutls libedit
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(PKG_CFLAGS) \
            -DMCP_LIB_DIR='"$(CURDIR)"'
LDLIBS   += $(PKG_LIBS) -lm
B        ?= build

MAINS    := core/main.c core/mcp_main.c core/lmodule.c
CORE_SRC := $(filter-out $(MAINS),$(wildcard core/*.c))
CORE_OBJ := $(CORE_SRC:core/%.c=$(B)/core/%.o)

all: mcp-agent mcp $(B)/lua/mcp/core.so $(B)/tests/test_toml

$(B)/core/%.o: core/%.c $(wildcard core/*.h) | $(B)/core
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/core $(B)/lua/mcp $(B)/tests:
	mkdir -p $@

# C unit tests: one program per file in tests/c/ or tests/toml/test_*.c,
# linked with the core; each prints "NAME: N passed, N failed" last.
$(B)/tests/test_toml: tests/toml/test_toml.c $(CORE_OBJ) | $(B)/tests
	$(CC) $(CFLAGS) -Icore $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/mcp-agent: $(B)/core/main.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/mcp: $(B)/core/mcp_main.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/lua/mcp/core.so: $(B)/core/lmodule.o $(CORE_OBJ) | $(B)/lua/mcp
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $^ $(filter-out -lluajit-5.1,$(LDLIBS))

# Replaced by rename, so that a running copy never makes the build fail.
mcp-agent mcp: %: $(B)/%
	cp $< $@.tmp && mv -f $@.tmp $@

deps:
	sh scripts/deps.sh

test: all
	sh tests/run.sh

# The same suites against binaries built with ASan and UBSan.
check:
	$(MAKE) B=build/san OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer" \
	    LDFLAGS="-fsanitize=address,undefined" build/san/mcp-agent build/san/mcp \
	    build/san/lua/mcp/core.so build/san/tests/test_toml
	rm -rf build/san/reports
	MCP_BUILD=build/san MCP_SANITIZE=1 MCP_SAN_REPORTS=$(CURDIR)/build/san/reports \
	    sh tests/run.sh; rc=$$?; \
	if [ -d build/san/reports ]; then \
	    echo "sanitizer reports in the logs of agents the specs started:"; \
	    grep -h -A30 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" build/san/reports/*; \
	    rc=1; \
	fi; exit $$rc

demo: all
	sh scripts/demo.sh

bench: all
	sh bench/run.sh

# Every libFuzzer harness (clang, ASan + UBSan) for FUZZ_SECONDS each;
# `make check` runs a short pass of them (tests/c/fuzz_short.sh).
FUZZ_SECONDS ?= 60
fuzz:
	sh fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf build mcp-agent mcp

.PHONY: all deps test check demo bench fuzz clean
