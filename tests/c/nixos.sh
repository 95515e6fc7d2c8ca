#!/bin/sh
# tests/c/nixos.sh: the NixOS module, as far as it can be checked without
# NixOS: Nix parses it (`nix-instantiate --parse`, which also rejects any
# undefined name, as the module uses no `with`), and evaluates it against a
# stub of nixpkgs' lib (tests/c/nixos/eval.nix) to see the user and the unit
# it defines for several settings. Whether NixOS has every option it sets is
# not checked here. Prints `nixos: N passed, N failed[, N skipped]`.
set -u
cd "$(dirname "$0")/../.."
MODULE=contrib/nixos/mcp-agent.nix
EVAL=tests/c/nixos/eval.nix
T=$(mktemp -d /tmp/mcp-nixos-test.XXXXXX)
trap 'rm -rf "$T"' EXIT INT TERM
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
not_ok() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2"; }

if ! command -v nix-instantiate >/dev/null 2>&1; then
    echo "skip nix-instantiate is not installed (Debian package nix-bin; make deps)"
    echo "nixos: 0 passed, 0 failed, 1 skipped"
    exit 0
fi
echo "# $(nix-instantiate --version)"

if nix-instantiate --parse "$MODULE" >/dev/null 2>"$T/parse"; then
    ok "nix-instantiate --parse $MODULE"
else
    not_ok "nix-instantiate --parse $MODULE:" "$T/parse"
fi

# check NAME OVERRIDES ASSERTIONS: evaluates the module with the option
# values OVERRIDES (a Nix attrset), then runs ASSERTIONS, Python statements
# over `c` (the config it defines, as JSON) and `svc` (its mcp-agent unit).
check() {
    if ! nix-instantiate --eval --strict --json "$EVAL" --arg overrides "$2" \
            >"$T/out.json" 2>"$T/err"; then
        not_ok "$1: evaluation failed:" "$T/err"
        return
    fi
    if python3 - "$T/out.json" >"$T/err" 2>&1 <<EOF
import json, sys
c = json.load(open(sys.argv[1]))
svc = c.get("systemd", {}).get("services", {}).get("mcp-agent", {})
def rendered():
    # The stub's generate puts the TOML's content after a "|" in the path.
    return json.loads(svc["serviceConfig"]["ExecStart"].split("|", 1)[1])
$3
EOF
    then ok "$1"; else not_ok "$1:" "$T/err"; fi
}

check "disabled, it defines nothing" '{ }' 'assert c == {}, c'

check "user mcp: uid 850, group mcp 850, home /srv/mcp, nologin, ranges, journal, linger" \
    '{ enable = true; }' '
u = c["users"]["users"]["mcp"]
assert u["uid"] == 850 and u["group"] == "mcp" and u["isSystemUser"], u
assert c["users"]["groups"]["mcp"]["gid"] == 850
assert u["home"] == "/srv/mcp" and u["shell"].endswith("/bin/nologin"), u
assert u["subUidRanges"] == [{"startUid": 100000, "count": 65536}], u
assert u["subGidRanges"] == [{"startGid": 100000, "count": 65536}], u
assert u["extraGroups"] == ["systemd-journal"] and u["linger"] is True, u'

check "the unit: notify, watchdog, mcp, restart, environment, ordering" \
    '{ enable = true; }' '
s = svc["serviceConfig"]
want = {"Type": "notify", "WatchdogSec": "30s", "User": "mcp", "Group": "mcp",
        "Restart": "on-failure", "RestartSec": 5}
assert all(s[k] == v for k, v in want.items()), s
assert s["ExecStart"].startswith("/srv/mcp/mcp-agent server --config /nix/store/"), s
assert svc["environment"] == {"HOME": "/srv/mcp", "XDG_RUNTIME_DIR": "/run/user/850",
    "PATH": "/run/current-system/sw/bin:/usr/local/bin"}, svc["environment"]
assert "network-online.target" in svc["after"] and "network-online.target" in svc["wants"]
assert svc["wantedBy"] == ["multi-user.target"]'

check "the unit: the hardening of the systemd unit" '{ enable = true; }' '
s = svc["serviceConfig"]
want = {"NoNewPrivileges": True, "ProtectSystem": "full", "ProtectHome": False,
        "PrivateTmp": True, "PrivateDevices": True, "ProtectKernelTunables": True,
        "ProtectKernelModules": True, "RestrictSUIDSGID": True, "LockPersonality": True,
        "RestrictRealtime": True, "ReadWritePaths": ["/srv"]}
bad = {k: s.get(k) for k, v in want.items() if s.get(k) != v}
assert not bad, bad'

check "by default the config is rendered: data_dir /srv/mcp, the API on 127.0.0.1:9444" \
    '{ enable = true; }' '
assert rendered() == {"agent": {"data_dir": "/srv/mcp"},
                      "api": {"listen": ["127.0.0.1:9444"]}}, rendered()'

check "listen and settings go into the rendered config" \
    '{ enable = true; listen = [ "0.0.0.0:9444" ];
       settings = { agent.node = "rift"; log.level = "debug"; }; }' '
assert rendered() == {"agent": {"data_dir": "/srv/mcp", "node": "rift"},
                      "api": {"listen": ["0.0.0.0:9444"]}, "log": {"level": "debug"}}, rendered()'

check "configFile is used as it is" \
    '{ enable = true; configFile = "/srv/mcp/mcp-agent.toml"; }' '
assert svc["serviceConfig"]["ExecStart"] == \
    "/srv/mcp/mcp-agent server --config /srv/mcp/mcp-agent.toml", svc'

check "package runs the packaged binary" \
    '{ enable = true; package = "/nix/store/x-mcp-agent"; configFile = "/etc/mcp.toml"; }' '
assert svc["serviceConfig"]["ExecStart"] == \
    "/nix/store/x-mcp-agent/bin/mcp-agent server --config /etc/mcp.toml", svc'

check "podman.socket is wanted in mcp's session only, and can be left alone" \
    '{ enable = true; }' '
p = c["systemd"]["user"]["sockets"]["podman"]
assert p == {"wantedBy": ["sockets.target"], "unitConfig": {"ConditionUser": "mcp"}}, p
assert c["virtualisation"]["podman"]["enable"] is True'
check "podmanSocket = false leaves Podman to the host" \
    '{ enable = true; podmanSocket = false; }' '
assert c["systemd"]["user"]["sockets"]["podman"] == {}
assert c["virtualisation"]["podman"]["enable"] == {}'

echo "nixos: $pass passed, $fail failed$( [ $skip -gt 0 ] && echo ", $skip skipped")"
[ $fail -eq 0 ]
