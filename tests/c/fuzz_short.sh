#!/bin/sh
# tests/c/fuzz_short.sh: a short, bounded pass of every libFuzzer harness
# (fuzz/run.sh, MCP_FUZZ_SECONDS each, 20 by default) on its kept corpus, for
# `make check`. tests/run.sh runs every tests/c/*.sh, so under `make test`
# (no MCP_SANITIZE) this only says it is skipped: `make test` stays fast.
# Prints the harnesses' lines, then `fuzz: N passed, N failed[, N skipped]`.
set -u
cd "$(dirname "$0")/../.."
NAMES="toml podman console definition api"
if [ -z "${MCP_SANITIZE:-}" ] && [ -z "${MCP_FUZZ_SHORT:-}" ]; then
    echo "skip the fuzzers run under make check (or MCP_FUZZ_SHORT=1)"
    echo "fuzz: 0 passed, 0 failed, $(echo $NAMES | wc -w) skipped"
    exit 0
fi
if ! command -v clang >/dev/null 2>&1; then
    echo "skip clang is not installed (Debian packages clang, libfuzzer-14-dev)"
    echo "fuzz: 0 passed, 0 failed, $(echo $NAMES | wc -w) skipped"
    exit 0
fi
# The sanitizers' settings of `make check` are for the agent; the harnesses
# set their own, and the ASan runtime is linked in, not preloaded.
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
exec sh fuzz/run.sh "${MCP_FUZZ_SECONDS:-20}" $NAMES
