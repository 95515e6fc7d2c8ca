#!/bin/sh
# tests/run.sh: runs every suite and ends with one line of its own:
#   N passed, N failed[, N skipped]
# Suites: busted specs of lua/ (pure), busted specs of the bindings (the real
# C module), C unit tests, the toml-test suite, and the integration suites
# against a real Podman. MCP_BUILD picks the build (build/san for `make check`);
# MCP_SUITES="lua bindings" runs only some.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${MCP_BUILD:-build}
export MCP_ROOT="$ROOT" MCP_BUILD="$B"
export MCP_AGENT="$ROOT/$B/mcp-agent" MCP_CLI="$ROOT/$B/mcp"
SUITES=${MCP_SUITES:-"lua bindings c toml integration rootless"}
TMP=$(mktemp -d /tmp/mcp-tests.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

if [ -n "${MCP_SANITIZE:-}" ]; then
    # busted's luajit is not instrumented: the runtime must come first, in
    # busted's process only (tests/helper.lua keeps it from its children).
    MCP_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=23"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=23"
fi

total_pass=0 total_fail=0 total_skip=0
record() {  # suite passed failed skipped
    printf '%-12s %4d passed, %d failed, %d skipped\n' "$1" "$2" "$3" "$4"
    total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3))
    total_skip=$((total_skip + $4))
}

# Runs busted on a directory in TAP form, echoing failures, and records counts.
run_busted() {  # suite dir
    out="$TMP/$1.tap"
    # Separate --lpath flags: busted re-execs itself under --lua through sh,
    # unquoted, so a ';' inside one flag would end the command.
    env ${MCP_PRELOAD:+LD_PRELOAD="$MCP_PRELOAD"} \
    busted --lua=luajit -o TAP --helper="$ROOT/tests/helper.lua" \
        --lpath="$ROOT/lua/?.lua" --lpath="$ROOT/lua/?/init.lua" \
        --lpath="$ROOT/?.lua" --cpath="$ROOT/$B/lua/?.so" "$2" >"$out" 2>&1
    rc=$?
    pass=$(grep -c '^ok ' "$out" | tr -d ' '); skip=$(grep -c '^ok .*# SKIP' "$out")
    fail=$(grep -c '^not ok ' "$out")
    pass=$((pass - skip))
    if [ "$fail" -gt 0 ] || { [ $rc -ne 0 ] && [ "$pass" -eq 0 ]; }; then
        grep -A 30 '^not ok ' "$out" | head -200
        [ "$fail" -eq 0 ] && { tail -30 "$out"; fail=1; }
    fi
    record "$1" "$pass" "$fail" "$skip"
}

# Runs a program that prints "NAME: N passed, N failed[, N skipped]" last.
run_counted() {  # suite command...
    name=$1; shift
    out="$TMP/$name.out"
    "$@" >"$out" 2>&1
    rc=$?
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
    pass=$(echo "$line" | grep -oE '[0-9]+ passed' | cut -d' ' -f1)
    fail=$(echo "$line" | grep -oE '[0-9]+ failed' | cut -d' ' -f1)
    skip=$(echo "$line" | grep -oE '[0-9]+ skipped' | cut -d' ' -f1)
    pass=${pass:-0}; fail=${fail:-0}; skip=${skip:-0}
    if [ -z "$line" ] || { [ $rc -ne 0 ] && [ "$fail" -eq 0 ]; }; then
        fail=$((fail + 1))
    fi
    [ "$fail" -gt 0 ] && tail -40 "$out"
    record "$name" "$pass" "$fail" "$skip"
}

for s in $SUITES; do
    case $s in
    lua)         [ -d tests/lua ] && run_busted lua tests/lua ;;
    bindings)    [ -d tests/bindings ] && run_busted bindings tests/bindings ;;
    c)           for t in "$B"/tests/test_*; do
                     [ -x "$t" ] && run_counted "$(basename "$t")" "$t"
                 done
                 for t in tests/c/*.sh; do
                     [ -f "$t" ] && run_counted "$(basename "$t" .sh)" sh "$t"
                 done ;;
    toml)        [ -f tests/toml/run-toml-test.sh ] &&
                     run_counted toml-test sh tests/toml/run-toml-test.sh ;;
    integration) [ -d tests/integration ] && run_busted integration tests/integration ;;
    rootless)    [ -d tests/rootless ] && run_busted rootless tests/rootless ;;
    esac
done

echo "$total_pass passed, $total_fail failed$( [ $total_skip -gt 0 ] && echo ", $total_skip skipped")"
[ "$total_fail" -eq 0 ]
