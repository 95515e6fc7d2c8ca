#!/bin/sh
# tests/c/config_doc.sh: docs/config.md lists every config key as the
# agent's schema does (`mcp-agent config-doc`), so the docs cannot drift.
cd "$(dirname "$0")/../.."
AGENT=${MCP_AGENT:-./mcp-agent}
pass=0 fail=0
"$AGENT" config-doc | grep '^| `' > /tmp/config-doc.$$
missing=$(grep -vxFf docs/config.md /tmp/config-doc.$$)
if [ -z "$missing" ]; then pass=$((pass + 1)); else
    echo "docs/config.md lacks these rows of \`mcp-agent config-doc\`:"; echo "$missing"
    fail=$((fail + 1))
fi
if "$AGENT" config-doc | grep -q '^## \[agent\]'; then pass=$((pass + 1)); else
    echo "config-doc prints no [agent] section"; fail=$((fail + 1)); fi
rm -f /tmp/config-doc.$$
echo "config-doc: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
