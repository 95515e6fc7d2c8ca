#!/bin/bash
# Smoke test of the real-Podman test environment itself (tests/env/podman-env.sh):
# what every integration test relies on, checked against the real Podman of
# this machine. Two environments run side by side; one loses its service to
# kill -9 before it is stopped. Prints `podman-env: N passed, N failed`.
#
#   tests/env/selftest.sh              the root environment (what tests use)
#   tests/env/selftest.sh --rootless   podman-env-rootless.sh instead: creates
#                                      user mcp (uid 850) if absent
set -uo pipefail
unset LD_PRELOAD    # curl hangs with ASan preloaded (make check exports it)

HERE=$(cd "$(dirname "$0")" && pwd)
ENV_SH=$HERE/podman-env.sh
RL_SH=$HERE/podman-env-rootless.sh
MODE=root
[ "${1:-}" = --rootless ] && MODE=rootless
A=$(mktemp -d /tmp/mcp-test-XXXXXX)
B=$(mktemp -d /tmp/mcp-test-XXXXXX)
WORK=$(mktemp -d /tmp/mcp-selftest-XXXXXX)
SRV=""
pass=0 fail=0

cleanup() {
    if [ "$MODE" = rootless ]; then
        "$RL_SH" stop "$A" >/dev/null 2>&1
        rmdir "$B" 2>/dev/null
        [ -n "$SRV" ] && rm -rf "$SRV"
    else
        "$ENV_SH" stop "$A" >/dev/null 2>&1
        "$ENV_SH" stop "$B" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok   - $*"; }
not_ok() { fail=$((fail + 1)); echo "FAIL - $*"; }
# check NAME COMMAND...: one test, passing when COMMAND succeeds
check() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then ok "$name"; else
        not_ok "$name"
        sed 's/^/       /' "$WORK/out" | tail -n 15
    fi
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# A free TCP port on 127.0.0.1, picked at random so that parallel runs of
# this test rarely want the same one.
free_port() {
    local p
    for _ in $(seq 50); do
        p=$(shuf -i 20000-29999 -n 1)
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    echo 29999
}

# Polls COMMAND for up to $1 seconds.
eventually() {
    local t=$1
    shift
    local deadline=$(( $(date +%s%N) + t * 1000000000 ))
    until "$@"; do
        [ "$(date +%s%N)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# Runs podman against environment $1.
# shellcheck disable=SC1091
pa() { ( . "$A/env.sh" && podman "$@" ); }
# shellcheck disable=SC1091
pb() { ( . "$B/env.sh" && podman "$@" ); }

http_is() { [ "$(curl -s --max-time 2 "$1")" = "$2" ]; }

# Processes and mounts that still belong to environment $1: Podman's
# helpers by DIR in their command line or environment, and mounts under DIR.
# (grep's own command line holds DIR too: only pids alive after it count.)
leftovers() {
    local d=$1 f p
    { grep -lzF "$d/" /proc/[0-9]*/cmdline 2>/dev/null
      grep -lzxF "PODMAN_ENV_DIR=$d" /proc/[0-9]*/environ 2>/dev/null; } |
    while read -r f; do
        p=${f#/proc/}; p=${p%%/*}
        case $p in "$$"|"$BASHPID") continue ;; esac
        case $(readlink "/proc/$p/exe" 2>/dev/null) in
            */podman|*/conmon|*/slirp4netns|*/runc|*/catatonit)
                echo "process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-120)" ;;
        esac
    done
    awk -v d="$d/" 'index($5, d) == 1 { print "mount " $5 }' /proc/self/mountinfo
}
no_leftovers() {
    local l
    l=$(leftovers "$1")
    [ -z "$l" ] || { echo "$l"; return 1; }
}

# The rootless variant, as production runs Podman: user mcp, socket in
# /run/user/850, slirp4netns, a bind mount of /srv/<service>.
rootless_selftest() {
    local sock=/run/user/850/podman/podman.sock pid port port2 spec ms t0
    as_mcp() { setpriv --reuid=850 --regid=850 --init-groups --reset-env "$@"; }
    pr() { "$RL_SH" podman "$A" "$@"; }
    echo "# podman-env rootless selftest: DIR=$A"
    t0=$(date +%s%N)
    check "rootless start" "$RL_SH" start "$A"
    echo "#   rootless start took $(ms_since "$t0") ms"
    check "setup again changes nothing" test -z "$("$RL_SH" setup 2>&1)"
    check "user mcp is uid 850, gid 850, home /srv/mcp, no login shell" \
        test "$(getent passwd mcp | cut -d: -f3,4,6,7)" = "850:850:/srv/mcp:/usr/sbin/nologin"
    check "mcp has subordinate uids and gids" \
        bash -c "grep -qx 'mcp:100000:65536' /etc/subuid && grep -qx 'mcp:100000:65536' /etc/subgid"
    check "/run/user/850 is mcp's, mode 700" test "$(stat -c '%u %a' /run/user/850)" = "850 700"
    check "/dev/net/tun is usable by mcp" test "$(stat -c %a /dev/net/tun)" = 666
    pid=$(cat "$A/podman.pid")
    check "the service runs as uid 850" test "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" = 850
    check "mcp reaches the API on $sock" \
        test "$(as_mcp curl -s --unix-socket "$sock" http://d/v4.0.0/libpod/_ping)" = OK
    check "podman info says rootless" test "$(pr info --format '{{.Host.Security.Rootless}}')" = true
    t0=$(date +%s%N)
    check "rootless images" "$RL_SH" images "$A"
    echo "#   rootless images took $(ms_since "$t0") ms"

    SRV=$(mktemp -d /srv/mcptest-XXXXXX)
    chown 850:850 "$SRV"
    echo from-host >"$SRV/in.txt"
    port=$(free_port)
    check "rootless run: -p 127.0.0.1:$port:8080 (slirp4netns), -v $SRV, --init" \
        pr run -d --name web --init -p "127.0.0.1:$port:8080" -v "$SRV:$SRV" localhost/mcp-test:1.0
    check "HTTP to the published port answers" eventually 10 http_is "http://127.0.0.1:$port/" "hello from mcp-test 1.0"
    check "the container reads /srv/<service>" test "$(pr exec web cat "$SRV/in.txt")" = from-host
    check "what the container's root writes is mcp's on the host" \
        bash -c "'$RL_SH' podman '$A' exec web sh -c 'echo x >$SRV/out.txt' && test \"\$(stat -c %u '$SRV/out.txt')\" = 850"
    check "podman logs" bash -c "'$RL_SH' podman '$A' logs web 2>&1 | grep -q 'listening on 8080'"
    curl -sN --max-time 15 --unix-socket "$sock" 'http://d/v4.0.0/libpod/events?stream=true' \
        >"$WORK/events" 2>/dev/null &
    local evpid=$!
    sleep 0.3
    check "podman kill" pr kill web
    check "the event stream reports died with 137" \
        eventually 10 grep -q '"Action":"died".*"containerExitCode":"137"' "$WORK/events"
    kill "$evpid" 2>/dev/null; wait "$evpid" 2>/dev/null

    port2=$(free_port)
    spec="{\"name\": \"api-web\", \"image\": \"localhost/mcp-test:2.0\", \"init\": true,
      \"env\": {\"PORT\": \"9090\"},
      \"portmappings\": [{\"host_ip\": \"127.0.0.1\", \"host_port\": $port2, \"container_port\": 9090}],
      \"mounts\": [{\"destination\": \"$SRV\", \"type\": \"bind\", \"source\": \"$SRV\"}]}"
    check "API create as mcp answers 201" \
        test "$(as_mcp curl -s -o /dev/null -w '%{http_code}' --unix-socket "$sock" \
            -H 'Content-Type: application/json' -d "$spec" http://d/v4.0.0/libpod/containers/create)" = 201
    check "API start answers 204" \
        test "$(as_mcp curl -s -o /dev/null -w '%{http_code}' -X POST --unix-socket "$sock" \
            http://d/v4.0.0/libpod/containers/api-web/start)" = 204
    check "\$PORT reaches the image's command" eventually 10 http_is "http://127.0.0.1:$port2/" "hello from mcp-test 2.0"
    check "stop-service" "$RL_SH" stop-service "$A"
    check "the container serves without the service" http_is "http://127.0.0.1:$port2/" "hello from mcp-test 2.0"
    check "start-service" "$RL_SH" start-service "$A"
    t0=$(date +%s%N)
    pr stop -t 10 api-web >/dev/null 2>&1
    ms=$(ms_since "$t0")
    check "stop of an --init container takes under 3 s ($ms ms)" test "$ms" -lt 3000
    check "a second rootless environment is refused while one runs" \
        bash -c "! '$RL_SH' start '$B' 2>/dev/null"

    pr run -d --name other-user --user 1000:1000 --init localhost/mcp-test:1.0 sleep 600 >/dev/null 2>&1
    kill -9 "$(cat "$A/podman.pid")" $(pgrep -u 850 -x podman) 2>/dev/null
    t0=$(date +%s%N)
    check "rootless stop after kill -9 of the service" "$RL_SH" stop "$A"
    echo "#   rootless stop took $(ms_since "$t0") ms"
    check "its directory is gone" test ! -e "$A"
    check "no process of mcp or its containers is left" \
        test -z "$(ps -eo uid=,pid=,stat=,args= | awk '$3 !~ /Z/ && ($1 == 850 || ($1 >= 100000 && $1 < 165536))')"
    check "the socket is gone" test ! -e "$sock"
    check "its port is closed" bash -c "! curl -s --max-time 2 http://127.0.0.1:$port2/"
    check "/srv/<service> survived" grep -qx from-host "$SRV/in.txt"
}

if [ "$MODE" = rootless ]; then
    rootless_selftest
    echo "podman-env: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
fi

echo "# podman-env selftest: A=$A B=$B"

# --- start, images -----------------------------------------------------------
t0=$(date +%s%N)
check "start A" "$ENV_SH" start "$A"
echo "#   start A took $(ms_since "$t0") ms"
t0=$(date +%s%N)
check "images A" "$ENV_SH" images "$A"
echo "#   images A took $(ms_since "$t0") ms"
t0=$(date +%s%N)
check "images A again is a no-op" "$ENV_SH" images "$A"
echo "#   images A again took $(ms_since "$t0") ms"
check "_ping answers OK" test "$(curl -s --unix-socket "$A/run/podman.sock" http://d/v4.0.0/libpod/_ping)" = OK
check "the socket is also at \$XDG_RUNTIME_DIR/podman/podman.sock" \
    test "$(curl -s --unix-socket "$A/run/podman/podman.sock" http://d/_ping)" = OK
check "both test images carry their version label" test \
    "$(pa image inspect --format '{{index .Labels "version"}}' localhost/mcp-test:1.0 localhost/mcp-test:2.0 | paste -sd,)" = "1.0,2.0"
check "images run as the service sees them" \
    grep -q '"localhost/mcp-test:2.0"' <(curl -s --unix-socket "$A/run/podman.sock" http://d/v4.0.0/libpod/images/json)
t0=$(date +%s%N)
check "a short name that is not local fails at once" bash -c "! ( . '$A/env.sh'; timeout 10 podman create no-such-image:1 )"
echo "#   failed short-name create took $(ms_since "$t0") ms"

# --- a service with a published port, a bind mount and an init --------------
PA=$(free_port)
mkdir -p "$WORK/srv-web"
echo from-host >"$WORK/srv-web/in.txt"
t0=$(date +%s%N)
check "run: -p 127.0.0.1:$PA:8080, -v bind, --init" \
    pa run -d --name web --init -p "127.0.0.1:$PA:8080" -v "$WORK/srv-web:/srv/web" localhost/mcp-test:1.0
echo "#   podman run -d took $(ms_since "$t0") ms"
t0=$(date +%s%N)
check "HTTP to the published port answers" eventually 10 http_is "http://127.0.0.1:$PA/" "hello from mcp-test 1.0"
echo "#   first HTTP answer after $(ms_since "$t0") ms"
check "the container reads the bind mount" test "$(pa exec web cat /srv/web/in.txt)" = from-host
check "the host sees what the container writes" \
    bash -c "( . '$A/env.sh'; podman exec web sh -c 'echo from-ctr >/srv/web/out.txt' ) && grep -qx from-ctr '$WORK/srv-web/out.txt'"
check "--init runs catatonit as PID 1" \
    bash -c "( . '$A/env.sh'; podman exec web cat /proc/1/cmdline ) | tr '\\0' ' ' | grep -q '^/run/podman-init -- '"
check "ulimits are within this machine's hard limits" \
    test "$(pa exec web sh -c 'ulimit -n')" -le "$(ulimit -Hn)"
check "podman logs shows the container's output (k8s-file)" \
    bash -c "( . '$A/env.sh'; podman logs web 2>&1 ) | grep -q 'mcp-test 1.0 listening on 8080'"
check "the API streams the container's logs" \
    bash -c "curl -s --max-time 3 --unix-socket '$A/run/podman.sock' 'http://d/v4.0.0/libpod/containers/web/logs?stdout=true&stderr=true' | grep -aq 'listening on 8080'"

# --- events: a kill is seen on the API's event stream ------------------------
curl -sN --max-time 15 --unix-socket "$A/run/podman.sock" \
    'http://d/v4.0.0/libpod/events?stream=true&filters=%7B%22type%22%3A%5B%22container%22%5D%7D' \
    >"$WORK/events" 2>/dev/null &
EVPID=$!
sleep 0.3
check "podman kill" pa kill web
check "the event stream reports died with exit code 137" \
    eventually 10 grep -q '"Action":"died".*"containerExitCode":"137"' "$WORK/events"
kill "$EVPID" 2>/dev/null; wait "$EVPID" 2>/dev/null
check "podman events (file backend) has the died event" \
    bash -c "( . '$A/env.sh'; podman events --stream=false --since 1m --filter event=died --format '{{.Name}}' ) | grep -qx web"

# --- the REST API the agent uses: SpecGenerator create with $PORT ------------
PA2=$(free_port)
spec=$(cat <<EOF
{"name": "api-web", "image": "localhost/mcp-test:2.0", "init": true,
 "env": {"PORT": "9090"},
 "portmappings": [{"host_ip": "127.0.0.1", "host_port": $PA2, "container_port": 9090, "protocol": "tcp"}],
 "mounts": [{"destination": "/srv/web", "type": "bind", "source": "$WORK/srv-web", "options": ["rbind"]}],
 "labels": {"mcp.managed": "true"}}
EOF
)
check "API create (SpecGenerator) answers 201" \
    test "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$A/run/podman.sock" \
        -H 'Content-Type: application/json' -d "$spec" http://d/v4.0.0/libpod/containers/create)" = 201
check "API start answers 204" \
    test "$(curl -s -o /dev/null -w '%{http_code}' -X POST --unix-socket "$A/run/podman.sock" \
        http://d/v4.0.0/libpod/containers/api-web/start)" = 204
check "\$PORT reaches the image's default command" \
    eventually 10 http_is "http://127.0.0.1:$PA2/" "hello from mcp-test 2.0"
t0=$(date +%s%N)
pa stop -t 10 api-web >/dev/null 2>&1
ms=$(ms_since "$t0")
check "stop of an --init container takes under 3 s ($ms ms)" test "$ms" -lt 3000

# --- Podman goes away and comes back ----------------------------------------
check "run a container to outlive the service" \
    pa run -d --name survivor --init -p "127.0.0.1:$PA:8080" localhost/mcp-test:1.0
eventually 10 http_is "http://127.0.0.1:$PA/" "hello from mcp-test 1.0"
t0=$(date +%s%N)
check "stop-service" "$ENV_SH" stop-service "$A"
echo "#   stop-service took $(ms_since "$t0") ms"
check "without the service the socket does not answer" \
    bash -c "! curl -s --max-time 2 --unix-socket '$A/run/podman.sock' http://d/_ping"
check "without the service the container still serves" http_is "http://127.0.0.1:$PA/" "hello from mcp-test 1.0"
check "without the service the CLI still sees it" test "$(pa ps --format '{{.Names}}' --filter name=survivor)" = survivor
t0=$(date +%s%N)
check "start-service" "$ENV_SH" start-service "$A"
echo "#   start-service took $(ms_since "$t0") ms"
check "the service lists the container again" \
    grep -q '"survivor"' <(curl -s --unix-socket "$A/run/podman.sock" 'http://d/v4.0.0/libpod/containers/json')

# --- a second environment in parallel ----------------------------------------
t0=$(date +%s%N)
"$ENV_SH" start "$B" >"$WORK/startB" 2>&1 &
SB=$!
pa run -d --name busy-a --network none localhost/mcp-test:1.0 sleep 600 >/dev/null 2>&1
check "start B while A works" wait "$SB"
echo "#   start B took $(ms_since "$t0") ms"
check "images B" "$ENV_SH" images "$B"
PB=$(free_port)
check "B runs a container named like one in A" \
    pb run -d --name survivor --init -p "127.0.0.1:$PB:8080" localhost/mcp-test:2.0
check "B's container serves" eventually 10 http_is "http://127.0.0.1:$PB/" "hello from mcp-test 2.0"
check "A's container still serves" http_is "http://127.0.0.1:$PA/" "hello from mcp-test 1.0"
check "A does not see B's containers" \
    test "$(pa ps -a --format '{{.Image}}' --filter name=survivor)" = localhost/mcp-test:1.0
check "B does not see A's containers" test -z "$(pb ps -a -q --filter name=busy-a)"

# --- kill -9 of B's service, then stop ----------------------------------------
kill -9 "$(cat "$B/podman.pid")"
check "after kill -9 of its service, B's container still serves" \
    http_is "http://127.0.0.1:$PB/" "hello from mcp-test 2.0"
t0=$(date +%s%N)
check "stop B after kill -9 of its service" "$ENV_SH" stop "$B"
echo "#   stop B took $(ms_since "$t0") ms"
check "B's directory is gone" test ! -e "$B"
check "B left no process or mount" no_leftovers "$B"
check "B's port is closed" bash -c "! curl -s --max-time 2 http://127.0.0.1:$PB/"
check "stop B again is a no-op" "$ENV_SH" stop "$B"
check "A's container still serves after B is gone" http_is "http://127.0.0.1:$PA/" "hello from mcp-test 1.0"

# --- stop A -----------------------------------------------------------------
ids=$(pa ps -aq --no-trunc | paste -sd'|')
t0=$(date +%s%N)
check "stop A" "$ENV_SH" stop "$A"
echo "#   stop A took $(ms_since "$t0") ms"
check "A's directory is gone" test ! -e "$A"
check "A left no process or mount" no_leftovers "$A"
check "A left no runc state or cgroup" \
    bash -c "! ls /run/runc /sys/fs/cgroup/*/libpod_parent 2>/dev/null | grep -qE '${ids:-none}'"
check "A's port is closed" bash -c "! curl -s --max-time 2 http://127.0.0.1:$PA/"
check "the bind-mounted host directory survived" grep -qx from-host "$WORK/srv-web/in.txt"

echo "podman-env: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
