#!/usr/bin/env bash
# Runs the toml-test suite (TOML 1.0.0) through `$MCP_AGENT toml-decode`.
#
#   MCP_AGENT      the binary to test (default ./mcp-agent)
#   TOML_TEST_DIR  the suite (default: shared/toml-test beside the checkout)
#
# valid/**/X.toml must decode to JSON equal to X.json, compared as the
# suite's own runner does (floats as numbers, nan sign ignored, date-times
# after normalising); invalid/**/X.toml must be rejected with exit code 1.
# Prints one line per failure and ends with "toml-test: N passed, N failed".
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export MCP_AGENT="${MCP_AGENT:-./mcp-agent}"
export TOML_TEST_DIR="${TOML_TEST_DIR:-$repo/../shared/toml-test}"
if [ ! -d "$TOML_TEST_DIR/valid" ]; then
    echo "toml-test: suite not found in $TOML_TEST_DIR (set TOML_TEST_DIR)" >&2
    exit 2
fi
exec python3 "$here/toml_test_compare.py"
