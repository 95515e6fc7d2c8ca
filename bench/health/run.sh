#!/bin/sh
# The agent's CPU per 1000 http health checks, at 500 containers' worth of
# checks a second (500 targets, 1 s interval), against real Podman; writes
# bench/results/health.json. See bench/health/bench.lua for the method.
#
#   HEALTH_BENCH_TARGETS   targets checked (default 500)
#   HEALTH_BENCH_INTERVAL  their check interval (default 1s)
#   HEALTH_BENCH_SECONDS   length of each measurement (default 30)
#
# Needs `make` first and root (the test environment's Podman). Nothing here
# asserts a time: the figures are for people and for docs/monitor.md.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
[ -x build/mcp-agent ] || { echo "run make first" >&2; exit 1; }
mkdir -p bench/results
tmp=$(mktemp /tmp/health-bench.XXXXXX)
trap 'rm -f "$tmp"' EXIT
MCP_ROOT=$repo luajit -e "package.path='$repo/?.lua;$repo/lua/?.lua;$repo/lua/?/init.lua;'..package.path; package.cpath='$repo/build/lua/?.so;'..package.cpath" \
    bench/health/bench.lua "$tmp"
python3 -m json.tool "$tmp" > bench/results/health.json
cat bench/results/health.json
