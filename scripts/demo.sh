#!/bin/sh
# scripts/demo.sh (`make demo`): the agent on this machine, for a first look.
#
# Starts the private Podman service of the test environment in
# /tmp/mcp-demo/podman (with its images localhost/mcp-test:1.0 and :2.0),
# runs the agent in the foreground with examples/agent.toml, deploys
# examples/services/hello.toml with the `mcp` CLI, and prints the URL of the
# page and commands to try. Ctrl-C stops the agent; on the way out Podman's
# service and the demo's containers go too. /tmp/mcp-demo/data stays until the
# next run, for a look at the registry (sqlite3 /tmp/mcp-demo/data/mcp.db).
#
# ROOTLESS=1 (`make demo ROOTLESS=1`) runs it as a production host does: it
# sets up the user mcp (uid 850), its subuid/subgid ranges, /run/user/850 and
# /srv (tests/env/podman-env-rootless.sh, docs/operations.md section 15),
# runs rootless Podman and the agent as mcp, and keeps the demo's files in
# /srv/mcp/demo, mcp's, with the code copied in as production installs it.
# On the way out /srv and /run/user/850 are put back as they were.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=/tmp/mcp-demo
PODMAN_DIR=$DEMO/podman
CONFIG=$DEMO/agent.toml
API=http://127.0.0.1:9444         # [api] listen of examples/agent.toml
AGENT=$ROOT/mcp-agent
CLI=$ROOT/mcp

# Who runs Podman and the agent. ROOTLESS=1 runs both as the mcp user (uid
# 850): Podman through tests/env/podman-env-rootless.sh (run as root: it
# switches to mcp itself), the agent and the CLI through AS_OWNER: setpriv
# execs them as mcp (no session, no waiting parent) with the environment the
# unit gives the agent; the rest of the environment (MCP_*) passes through.
PODMAN_ENV=$ROOT/tests/env/podman-env.sh
AS_OWNER=""
ROOTLESS=${ROOTLESS:-0}
if [ "$ROOTLESS" = 1 ]; then
    DEMO=/srv/mcp/demo
    PODMAN_DIR=$DEMO/podman
    CONFIG=$DEMO/agent.toml
    PODMAN_ENV=$ROOT/tests/env/podman-env-rootless.sh
    AS_OWNER="setpriv --reuid=850 --regid=850 --init-groups"
    AS_OWNER="$AS_OWNER env HOME=/srv/mcp XDG_RUNTIME_DIR=/run/user/850"
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run it as root (it starts the test environment's Podman; with ROOTLESS=1" \
        "it sets up the user mcp and runs Podman and the agent as mcp)" >&2
    exit 1
fi

say() { printf 'demo: %s\n' "$*" >&2; }

# Packages: scripts/deps.sh installs only what is missing, and is quick
# when nothing is.
DEPS_QUIET=1 sh "$ROOT/scripts/deps.sh"
if [ ! -x "$AGENT" ] || [ ! -x "$CLI" ]; then say "build first: make"; exit 1; fi

if curl -s -o /dev/null --max-time 2 "$API/v1/health"; then
    say "something answers on $API already (another demo?); stop it first"
    exit 1
fi

# The user mcp and what it needs, before anything goes into its home.
if [ "$ROOTLESS" = 1 ]; then "$PODMAN_ENV" setup; fi

# A fresh start: what a previous demo left goes (the env script removes only
# a directory it made).
if [ -d "$PODMAN_DIR" ]; then "$PODMAN_ENV" stop "$PODMAN_DIR" >/dev/null 2>&1 || true; fi
rm -rf "$DEMO"
mkdir -p "$DEMO/data/services"

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    trap - EXIT INT TERM
    if [ -n "${DEPLOYER:-}" ]; then kill "$DEPLOYER" 2>/dev/null || true; fi
    say "stopping Podman's service and removing the demo's containers"
    "$PODMAN_ENV" stop "$PODMAN_DIR" >/dev/null 2>&1 || true
    say "done; the registry stays in $DEMO/data"
}
trap cleanup EXIT
trap 'exit 0' INT TERM           # Ctrl-C is how the demo ends

say "starting a private Podman service in $PODMAN_DIR"
"$PODMAN_ENV" start "$PODMAN_DIR"
"$PODMAN_ENV" images "$PODMAN_DIR"

# The config is examples/agent.toml as it is: it points at $DEMO.
cp "$ROOT/examples/agent.toml" "$CONFIG"
if [ "$ROOTLESS" = 1 ]; then
    # ... moved to /srv/mcp/demo, with mcp's Podman socket.
    sed -e "s#/tmp/mcp-demo/podman/run/podman.sock#/run/user/850/podman/podman.sock#" \
        -e "s#/tmp/mcp-demo#$DEMO#g" "$ROOT/examples/agent.toml" >"$CONFIG"
    # The code as production installs it: root's, readable by mcp, whatever
    # the permissions of this checkout; the agent finds lua/ beside itself.
    mkdir -p "$DEMO/lib"
    cp "$AGENT" "$CLI" "$DEMO/lib/"
    cp -r "$ROOT/lua" "$ROOT/policies" "$DEMO/lib/"
    chmod -R a+rX "$DEMO/lib"
    AGENT=$DEMO/lib/mcp-agent
    CLI=$DEMO/lib/mcp
    chown -R mcp:mcp "$DEMO/data" "$CONFIG"
    chown mcp:mcp "$DEMO"
    chmod 0700 "$DEMO"
fi
# The agent loads the example from its services directory; `mcp deploy`
# deploys it.
cp "$ROOT/examples/services/hello.toml" "$DEMO/data/services/hello.toml"
TOKEN=$($AS_OWNER "$AGENT" token create --config "$CONFIG" --name demo 2>/dev/null)
printf '%s\n' "$TOKEN" >"$DEMO/token"
chmod 600 "$DEMO/token"
if [ "$ROOTLESS" = 1 ]; then
    say "mcp-agent doctor, as mcp:"
    $AS_OWNER "$AGENT" doctor --config "$CONFIG" >&2 || true
fi

# Once the agent answers: deploy, then say what to look at.
(
    i=0
    until curl -s -o /dev/null --max-time 1 "$API/v1/health"; do
        i=$((i + 1))
        [ $i -lt 150 ] || { say "the agent did not answer on $API"; exit 1; }
        sleep 0.2
    done
    export MCP_AGENT_URL="$API" MCP_TOKEN="$TOKEN" MCP_NODE=demo
    say "deploying examples/services/hello.toml: mcp deploy hello"
    out=$($AS_OWNER "$CLI" deploy hello 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
    printf '%s\n' "$out" >&2
    port=$(printf '%s\n' "$out" | sed -n 's/.*default=\([0-9]*\).*/\1/p' | head -n 1)
    cat >&2 <<EOF

  hello serves on  http://127.0.0.1:$port/

  Try, in another shell:
    export MCP_AGENT_URL=$API MCP_TOKEN=$TOKEN MCP_NODE=demo
    $CLI ps
    $CLI status hello
    $CLI logs hello
    $CLI events
    $AGENT console --config $CONFIG        # then: ps()  health.run("hello")  :help
  A new version, without a gap (policy rolling):
    sed -i 's/mcp-test:1.0/mcp-test:2.0/' $DEMO/data/services/hello.toml
    $CLI deploy hello

  Ctrl-C here stops the agent and the demo.

EOF
) &
DEPLOYER=$!

say "starting the agent in the foreground: $AGENT server --config $CONFIG"
set +e
$AS_OWNER "$AGENT" server --config "$CONFIG"
rc=$?
set -e
exit "$rc"
