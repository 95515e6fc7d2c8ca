#!/bin/sh
# tests/c/systemd.sh: the shipped systemd unit and sysusers.d file, checked
# by systemd's own tools, offline: nothing is installed on this host and no
# running systemd is needed (these machines run none).
#
# `systemd-analyze verify` insists that ExecStart's program exists, and the
# unit names /srv/mcp/mcp-agent: the test verifies a copy of the unit whose
# ExecStart alone is rewritten (sed) to the built binary ($MCP_AGENT), and
# checks that nothing else differs. verify does not look User= up, so the
# mcp user need not exist. Prints `systemd: N passed, N failed[, N skipped]`.
set -u
cd "$(dirname "$0")/../.."
UNIT=contrib/systemd/mcp-agent.service
SYSUSERS=$PWD/contrib/systemd/sysusers.d/mcp.conf
AGENT=${MCP_AGENT:-$PWD/build/mcp-agent}
T=$(mktemp -d /tmp/mcp-systemd-test.XXXXXX)
trap 'rm -rf "$T"' EXIT INT TERM
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
not_ok() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2"; }
skipped() { skip=$((skip + 1)); echo "skip $1"; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    skipped "systemd-analyze is not installed (Debian package systemd; make deps)"
    echo "systemd: $pass passed, $fail failed, $skip skipped"
    exit 0
fi
echo "# $(systemd-analyze --version | head -1)"

[ -x "$AGENT" ] || AGENT=/bin/true   # the unit, not the binary, is under test
mkdir -p "$T/unit"
sed "s|^ExecStart=/srv/mcp/mcp-agent |ExecStart=$AGENT |" "$UNIT" >"$T/unit/mcp-agent.service"

# 1. Only ExecStart differs between the shipped unit and the verified copy.
diff "$UNIT" "$T/unit/mcp-agent.service" | grep '^[<>]' >"$T/diff"
if [ "$(wc -l <"$T/diff")" -eq 2 ] && [ "$(grep -c '^[<>] ExecStart=' "$T/diff")" -eq 2 ]; then
    ok "the verified copy differs from $UNIT in ExecStart only"
else
    not_ok "the verified copy differs from $UNIT in more than ExecStart" "$T/diff"
fi

# 2. verify: exit 0 and not one line of complaint (it warns but exits 0 on
#    a misspelt value, so silence is the test).
(cd "$T/unit" && systemd-analyze verify ./mcp-agent.service) >"$T/verify" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ ! -s "$T/verify" ]; then
    ok "systemd-analyze verify passes on the unit, silently"
else
    not_ok "systemd-analyze verify (exit $rc):" "$T/verify"
fi

# 3. The check can fail: a misspelt Type= is reported.
sed 's/^Type=notify$/Type=notifyy/' "$T/unit/mcp-agent.service" >"$T/bad.service"
mkdir -p "$T/bad" && mv "$T/bad.service" "$T/bad/mcp-agent.service"
(cd "$T/bad" && systemd-analyze verify ./mcp-agent.service) >"$T/verify-bad" 2>&1
if grep -q "Failed to parse service type" "$T/verify-bad"; then
    ok "systemd-analyze verify reports a misspelt Type= (the check above can fail)"
else
    not_ok "systemd-analyze verify said nothing of Type=notifyy:" "$T/verify-bad"
fi

# 4. The settings existing hosts run with (issue 9), each present as written.
for line in \
    "Type=notify" "WatchdogSec=30s" "User=mcp" "Group=mcp" \
    "ExecStart=/srv/mcp/mcp-agent server --config /srv/mcp/mcp-agent.toml" \
    "Restart=on-failure" "RestartSec=5" \
    "Environment=HOME=/srv/mcp" "Environment=XDG_RUNTIME_DIR=/run/user/850" \
    "After=network-online.target" "Wants=network-online.target" \
    "WantedBy=multi-user.target" \
    "NoNewPrivileges=true" "ProtectSystem=full" "ProtectHome=false" "PrivateTmp=true" \
    "PrivateDevices=true" "ProtectKernelTunables=true" "ProtectKernelModules=true" \
    "RestrictSUIDSGID=true" "LockPersonality=true" "RestrictRealtime=true" \
    "ReadWritePaths=/srv"; do
    if grep -qxF "$line" "$UNIT"; then ok "$line"; else not_ok "$UNIT lacks the line $line"; fi
done

# 5. systemd's own reading of the hardening: each setting is in force.
if (cd "$T/unit" && systemd-analyze security --offline=true ./mcp-agent.service) \
        >"$T/security" 2>&1; then
    missing=""
    for s in NoNewPrivileges PrivateTmp PrivateDevices ProtectKernelTunables \
             ProtectKernelModules RestrictSUIDSGID LockPersonality RestrictRealtime; do
        grep -q "✓ $s=" "$T/security" || missing="$missing $s"
    done
    if [ -z "$missing" ]; then
        ok "systemd-analyze security: the hardening settings are in force (exposure $(
            sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]* [A-Z]*\).*/\1/p' \
                "$T/security"))"
    else
        not_ok "systemd-analyze security does not see:$missing" "$T/security"
    fi
else
    skipped "systemd-analyze security --offline is not available here"
fi

# 6. sysusers.d makes mcp with uid and gid 850, home /srv/mcp, no login
#    shell, in systemd-journal: applied to an empty root, not to this host.
if command -v systemd-sysusers >/dev/null 2>&1; then
    mkdir -p "$T/root/etc"
    if systemd-sysusers --root="$T/root" "$SYSUSERS" >"$T/sysusers" 2>&1 &&
       grep -qx "mcp:x:850:850:MCP agent:/srv/mcp:/usr/sbin/nologin" "$T/root/etc/passwd" &&
       grep -qx "mcp:x:850:" "$T/root/etc/group" &&
       grep -q "^systemd-journal:x:[0-9]*:mcp$" "$T/root/etc/group"; then
        ok "systemd-sysusers makes mcp 850:850, home /srv/mcp, nologin, in systemd-journal"
    else
        cat "$T/root/etc/passwd" "$T/root/etc/group" >>"$T/sysusers" 2>/dev/null
        not_ok "systemd-sysusers with $SYSUSERS:" "$T/sysusers"
    fi
else
    skipped "systemd-sysusers is not installed"
fi

echo "systemd: $pass passed, $fail failed$( [ $skip -gt 0 ] && echo ", $skip skipped")"
[ $fail -eq 0 ]
