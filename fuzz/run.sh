#!/bin/sh
# fuzz/run.sh [SECONDS] [NAME...]: builds the libFuzzer harnesses (clang,
# ASan + UBSan) in build/fuzz and runs each for SECONDS (default 60) on its
# corpus, then prints one line per harness and, last,
#   fuzz: N passed, N failed
# A harness fails when it finds a crash, a sanitizer report, a timeout or a
# broken check; the input that did it is in build/fuzz/artifacts/NAME/ and
# the last lines of its log are shown. Run one again with
#   build/fuzz/NAME_fuzz build/fuzz/artifacts/NAME/crash-...
#
# The kept corpus, fuzz/corpus/NAME, is read, never written: new inputs go to
# build/fuzz/corpus/NAME. The inputs of findings, fuzz/regress/NAME, run
# first every time. MERGE=1 folds the new inputs back into fuzz/corpus/NAME
# after the runs, minimised (libFuzzer -merge=1) on C coverage. FUZZ_JOBS=N
# runs N harnesses at a time (default 1). MCP_FUZZ_KNOWN (fuzz/fuzz_lua.h)
# looks past findings already reported.
#
# Harnesses: toml (core/toml.c), podman (core/podman_parse.c: events lines,
# logs frames), console (core/console.c's frame parser and the console's
# Lua side), definition (TOML through definition.validate), api (requests
# through mcp.api.handle, on routes that do not reach Podman).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
NAMES=${*:-"toml podman console definition api"}
B=build/fuzz
CC=${FUZZ_CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
PKGS="luajit libuv libmicrohttpd libcurl jansson sqlite3 gnutls libedit"

command -v "$CC" >/dev/null || { echo "fuzz: $CC is not installed"; echo "fuzz: 0 passed, 1 failed"; exit 1; }

# Run from `make check`, the flags of the outer make must not reach ours.
unset MAKEFLAGS MFLAGS MAKELEVEL
# The core, instrumented for coverage and the sanitizers. The Makefile's
# own rule builds each object, so flags and warnings stay those of the tree.
objs=""
for f in core/*.c; do
    case $f in core/main.c|core/mcp_main.c|core/lmodule.c) continue ;; esac
    objs="$objs $B/core/$(basename "$f" .c).o"
done
if ! make -s B=$B CC="$CC" OPT="-O1 -g $SAN -fsanitize=fuzzer-no-link" $objs >$B.build.log 2>&1; then
    mkdir -p $B
    cat $B.build.log
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi
mkdir -p $B/artifacts $B/corpus

build() {  # name
    exe=$B/$1_fuzz
    src=fuzz/$1_fuzz.c
    [ -f "$src" ] || return 1
    # Relinked when the harness, its header or any object is newer.
    if [ -x "$exe" ] && [ -z "$(find "$src" fuzz/fuzz_lua.h $objs -newer "$exe" 2>/dev/null)" ]; then
        return 0
    fi
    # shellcheck disable=SC2046,SC2086
    $CC -g -O1 $SAN -fsanitize=fuzzer -std=c11 -D_GNU_SOURCE -Icore \
        $(pkg-config --cflags $PKGS) "$src" $objs -o "$exe" \
        $(pkg-config --libs $PKGS) -lm
}

pass=0 fail=0 total_execs=0
run_one() {  # name
    name=$1
    log=$B/$name.log
    if ! build "$name" >"$log" 2>&1; then
        echo "fuzz $name: FAILED to build"
        tail -20 "$log"
        return 1
    fi
    mkdir -p "$B/artifacts/$name" "$B/corpus/$name"
    dict=""
    [ -f "fuzz/dict/$name.dict" ] && dict="-dict=fuzz/dict/$name.dict"
    # The inputs of findings (fuzz/regress) run first, every time: a
    # finding that comes back fails at once.
    seeds=""
    [ -d "fuzz/corpus/$name" ] && seeds="fuzz/corpus/$name"
    [ -d "fuzz/regress/$name" ] && seeds="$seeds fuzz/regress/$name"
    # Leaks are checked per input by LeakSanitizer, except where LuaJIT
    # runs: its values hold tagged pointers LSan cannot follow, so every
    # live Lua object would look leaked (valgrind covers those; see
    # docs/reliability.md).
    leaks=1
    case $name in console|definition|api) leaks=0 ;; esac
    # shellcheck disable=SC2086
    ASAN_OPTIONS="detect_leaks=$leaks:abort_on_error=1:allocator_may_return_null=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$ROOT/$B/${name}_fuzz" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=3072 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$B/artifacts/$name/" \
        $dict "$B/corpus/$name" $seeds >"$log" 2>&1
    rc=$?
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -a -oE 'cov: [0-9]+' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: ok, ${execs:-?} runs in ${SECONDS_EACH}s (${cov:-cov: ?})"
        echo "${execs:-0}" >"$B/$name.execs"
        return 0
    fi
    echo "fuzz $name: FAILED (exit $rc) after ${execs:-?} runs; input in $B/artifacts/$name/"
    grep -a -E 'ERROR|SUMMARY|fuzz: |runtime error|Test unit written' "$log" | head -20
    tail -5 "$log"
    return 1
}

# Runs the harnesses, FUZZ_JOBS at a time, and counts the verdicts.
JOBS=${FUZZ_JOBS:-1}
set -- $NAMES
while [ $# -gt 0 ]; do
    batch=""
    i=0
    while [ $# -gt 0 ] && [ $i -lt "$JOBS" ]; do
        batch="$batch $1"
        shift
        i=$((i + 1))
    done
    for name in $batch; do
        ( run_one "$name" >"$B/$name.verdict" 2>&1; echo $? >"$B/$name.rc" ) &
    done
    wait
    for name in $batch; do
        cat "$B/$name.verdict"
        if [ "$(cat "$B/$name.rc")" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
    done
done

if [ -n "${MERGE:-}" ]; then
    for name in $NAMES; do
        [ -x "$B/${name}_fuzz" ] || continue
        mkdir -p "fuzz/corpus/$name"
        # On C coverage only: with the Lua line edges of the Lua-backed
        # harnesses, a minimal corpus still has thousands of inputs.
        MCP_FUZZ_NO_LUA_COV=1 "$ROOT/$B/${name}_fuzz" -merge=1 -max_len=65536 \
            "fuzz/corpus/$name" "$B/corpus/$name" >"$B/$name.merge.log" 2>&1 &&
            echo "fuzz $name: corpus merged ($(ls "fuzz/corpus/$name" | wc -l) files)"
    done
fi

echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
