#!/bin/sh
# tests/valgrind/run.sh [FEW MANY]: runs tests/valgrind/leaks_spec.lua with
# the agent (build/mcp-agent, or $MCP_AGENT) under valgrind memcheck, for FEW
# (10) and MANY (100) rounds, and prints valgrind's leak summary of each run
# side by side. A leak that grows with the work done shows as more bytes
# lost after MANY rounds than after FEW. Logs: build/valgrind/ROUNDS.log.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
FEW=${1:-10}
MANY=${2:-100}
OUT=build/valgrind
mkdir -p $OUT
export MCP_ROOT="$ROOT"
export MCP_AGENT="${MCP_AGENT:-$ROOT/build/mcp-agent}"
# Errors of uninitialised values are LuaJIT's (its string hashing reads
# whole words past a string's end, by design): the run is about leaks.
VG="valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible \
--errors-for-leak-kinds=definite --undef-value-errors=no --num-callers=30"

status=0
for n in $FEW $MANY; do
    rm -f $OUT/$n.*.vg
    MCP_LEAK_ROUNDS=$n MCP_AGENT_WRAPPER="$VG --log-file=$ROOT/$OUT/$n.%p.vg" \
    busted --lua=luajit --helper="$ROOT/tests/helper.lua" \
        --lpath="$ROOT/lua/?.lua" --lpath="$ROOT/lua/?/init.lua" --lpath="$ROOT/?.lua" \
        --cpath="$ROOT/build/lua/?.so" tests/valgrind/leaks_spec.lua >$OUT/$n.log 2>&1 ||
        { echo "rounds $n: the spec failed (see $OUT/$n.log)"; tail -20 $OUT/$n.log; status=1; }
    # The server's log: the one that ran the rounds (token create runs too).
    vg=$(grep -l "server --config" $OUT/$n.*.vg 2>/dev/null | head -1)
    if [ -z "$vg" ]; then
        echo "rounds $n: no valgrind log of the server"; status=1; continue
    fi
    cp "$vg" $OUT/$n.server.vg
    printf 'rounds %-4s ' "$n"
    grep -E "in use at exit:|total heap usage:|definitely lost:|indirectly lost:|possibly lost:|still reachable:|All heap blocks were freed" "$vg" |
        sed 's/^==[0-9]*== *//' | tr '\n' ';' | sed 's/;$/\n/'
    grep -E "ERROR SUMMARY" "$vg" | sed 's/^==[0-9]*== *//'
done
exit $status
