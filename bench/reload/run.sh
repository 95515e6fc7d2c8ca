#!/bin/sh
# The cost of a hot reload: the time of one reload of the shipped library,
# 50 service definitions and 10 policies (median, min, max of the agent's own
# took_ms and of the request's wall time), and the GET /v1/ps requests that
# fail while 100 reloads happen under wrk (must be 0). Writes
# bench/results/reload.json. See bench/reload/bench.lua for the method.
#
#   RELOAD_BENCH_RELOADS     reloads measured one after another (default 200)
#   RELOAD_BENCH_UNDER_LOAD  reloads under wrk (default 100)
#
# Needs `make` first, root (the test environment's Podman) and wrk. Exits 1
# when a request failed during the reloads.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
[ -x build/mcp-agent ] || { echo "run make first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing (make deps)" >&2; exit 1; }
mkdir -p bench/results
# The library the agent runs, copied: edits in the checkout while the bench
# runs would otherwise reload the agent behind its back.
lib=$(mktemp -d /tmp/reload-bench.XXXXXX)
tmp=$lib/result.json
trap 'rm -rf "$lib"' EXIT
cp -r lua policies "$lib/"
MCP_ROOT=$lib MCP_AGENT=$repo/build/mcp-agent MCP_CLI=$repo/build/mcp \
luajit -e "package.path='$repo/?.lua;$repo/lua/?.lua;$repo/lua/?/init.lua;'..package.path; package.cpath='$repo/build/lua/?.so;'..package.cpath" \
    bench/reload/bench.lua "$tmp"
python3 -m json.tool --sort-keys "$tmp" > bench/results/reload.json
cat bench/results/reload.json
