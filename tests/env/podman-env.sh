#!/bin/bash
# The one real-Podman test environment: every integration test, `make demo`
# and the benchmarks run against it. An environment is a directory that owns
# everything Podman keeps (storage, runtime state, locks, events, network
# definitions, the API socket), so several can run side by side and `stop`
# can throw one away completely, even after a crash.
#
#   podman-env.sh start DIR           create DIR, start the API service
#   podman-env.sh images DIR          build localhost/mcp-test:{1.0,2.0}
#   podman-env.sh stop DIR            remove containers, service, mounts, DIR
#   podman-env.sh stop-service DIR    stop only the API service (alias: pause)
#   podman-env.sh start-service DIR   start it again          (alias: resume)
#   podman-env.sh status DIR          is the service up, what containers run
#
# A test then does `. DIR/env.sh` and the `podman` CLI sees the same storage
# as the service; see docs/testing.md.
#
# Knobs (environment): PODMAN_ENV_NETNS (default network mode of containers,
# "slirp4netns" as rootless Podman uses, or "bridge"), PODMAN_ENV_DRIVER
# (force "overlay" or "vfs"), PODMAN_ENV_LOG_LEVEL (service log level, info),
# PODMAN_ENV_TIMEOUT (seconds to wait for the API, 30).
set -euo pipefail

PROG=podman-env
MARKER=.podman-env           # a DIR without it is not ours: never removed
IMAGE=localhost/mcp-test
IMAGE_VERSIONS="1.0 2.0"

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }

# The hard limits of this process bound what a container may ask for: the
# sandbox lacks CAP_SYS_RESOURCE, and Podman's root defaults are above them.
# Podman 4.3.1 also lowers its own RLIMIT_NPROC to 32768 as it starts (seen
# with strace), and runc inherits that through conmon: cap nproc there too.
# start_service checks the service's real limits and rewrites them if lower.
NPROC_CAP=${PODMAN_ENV_NPROC_CAP:-32768}
ulimits_toml() {
    local n=${1:-} u=${2:-}
    [ -n "$n" ] || n=$(ulimit -Hn)
    [ -n "$u" ] || u=$(ulimit -Hu)
    [ "$n" = unlimited ] && n=1048576
    [ "$u" = unlimited ] && u=$NPROC_CAP
    [ "$u" -gt "$NPROC_CAP" ] && u=$NPROC_CAP
    printf '"nofile=%s:%s", "nproc=%s:%s"' "$n" "$n" "$u" "$u"
}

# Lower default_ulimits in containers.conf to the hard limits of the running
# service (pid $1). Prints nothing and returns 1 when nothing had to change.
fit_ulimits_to() {
    local pid=$1 n u cn cu
    n=$(awk '/^Max open files/ { print $5 }' "/proc/$pid/limits")
    u=$(awk '/^Max processes/ { print $4 }' "/proc/$pid/limits")
    cn=$(sed -n 's/^default_ulimits = \["nofile=\([0-9]*\):.*/\1/p' "$DIR/containers.conf")
    cu=$(sed -n 's/^default_ulimits = .*"nproc=\([0-9]*\):.*/\1/p' "$DIR/containers.conf")
    [ "$n" = unlimited ] && n=$cn
    [ "$u" = unlimited ] && u=$cu
    [ "$n" -lt "$cn" ] || [ "$u" -lt "$cu" ] || return 1
    [ "$n" -lt "$cn" ] || n=$cn
    [ "$u" -lt "$cu" ] || u=$cu
    sed -i "s/^default_ulimits = .*/default_ulimits = [$(ulimits_toml "$n" "$u")]/" "$DIR/containers.conf"
    say "lowered default_ulimits to the service's hard limits (nofile $n, nproc $u)"
}

find_init() {
    local p
    for p in /usr/libexec/podman/catatonit /usr/bin/catatonit; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    echo /usr/libexec/podman/catatonit   # Podman's default; --init then fails
}

# Native overlay needs a kernel that mounts it on this filesystem; try it
# where the storage will live rather than guess.
probe_overlay() {
    local d=$1/tmp/overlay-probe ok=1
    mkdir -p "$d"/{lower,upper,work,merged}
    if mount -t overlay overlay \
        -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
        umount "$d/merged" && ok=0
    fi
    rm -rf "$d"
    return $ok
}

resolve_dir() {
    [ -n "${1:-}" ] || die "usage: $0 start|images|stop|stop-service|start-service|status DIR"
    case $1 in
        /) die "refusing DIR=/" ;;
        /*) DIR=${1%/} ;;
        *) DIR=$PWD/${1%/} ;;
    esac
    SOCK=$DIR/run/podman.sock
}

# The variables that make `podman` (service and CLI alike) use DIR only.
env_exports() {
    cat <<EOF
export PODMAN_ENV_DIR='$DIR'
export PODMAN_ENV_SOCKET='$SOCK'
export PODMAN_ENV_URL='unix://$SOCK'
export CONTAINERS_CONF='$DIR/containers.conf'
export CONTAINERS_STORAGE_CONF='$DIR/storage.conf'
export CONTAINERS_REGISTRIES_CONF='$DIR/registries.conf'
export XDG_RUNTIME_DIR='$DIR/run'
export TMPDIR='$DIR/tmp'
EOF
}

load_env() {
    [ -f "$DIR/env.sh" ] || die "$DIR is not a podman-env directory (no env.sh); run start first"
    # shellcheck disable=SC1091
    . "$DIR/env.sh"
}

write_config() {
    local driver netns
    mkdir -p "$DIR"/{root,runroot,run/podman,tmp,networks}
    touch "$DIR/$MARKER"
    chmod 0700 "$DIR/run"

    driver=${PODMAN_ENV_DRIVER:-}
    if [ -z "$driver" ]; then
        if probe_overlay "$DIR"; then driver=overlay; else driver=vfs; fi
    fi
    netns=${PODMAN_ENV_NETNS:-slirp4netns}

    cat >"$DIR/storage.conf" <<EOF
# written by podman-env.sh: storage private to this environment
[storage]
driver = "$driver"
graphroot = "$DIR/root"
runroot = "$DIR/runroot"
EOF
    if [ "$driver" = overlay ]; then
        printf '\n[storage.options.overlay]\nmountopt = "nodev"\n' >>"$DIR/storage.conf"
    fi

    cat >"$DIR/containers.conf" <<EOF
# written by podman-env.sh: CONTAINERS_CONF replaces every other
# containers.conf, so this file is all Podman reads.
[containers]
# within this process's hard limits (no CAP_SYS_RESOURCE here)
default_ulimits = [$(ulimits_toml)]
# journald is not running: logs in files, for \`podman logs\`
log_driver = "k8s-file"
init_path = "$(find_init)"
# the network mode rootless Podman uses by default, and state-free for root
netns = "$netns"

[engine]
# crun refuses the hybrid cgroup v1/v2 layout of these machines
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
events_logfile_max_size = "0"
# file locks in DIR instead of the one /dev/shm/libpod_lock segment that
# every root Podman on the host shares (and frees on its first start)
lock_type = "file"
tmp_dir = "$DIR/tmp/libpod"
image_copy_tmp_dir = "$DIR/tmp"

[network]
network_backend = "netavark"
network_config_dir = "$DIR/networks"
EOF

    # No registry is reachable: short names must fail at once, not time out.
    cat >"$DIR/registries.conf" <<EOF
# written by podman-env.sh
unqualified-search-registries = []
short-name-mode = "permissive"
EOF

    env_exports >"$DIR/env.sh"
    # The agent looks for \$XDG_RUNTIME_DIR/podman/podman.sock, as in production.
    ln -sfn ../podman.sock "$DIR/run/podman/podman.sock"
}

# kill -0 succeeds on a zombie, and an orphaned service is reaped by
# whatever init the machine has, whenever it gets to it.
alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

service_pid() {
    local pid
    pid=$(cat "$DIR/podman.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && alive "$pid" || return 1
    # A recycled pid would not carry our socket on its command line.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "unix://$SOCK" || return 1
    echo "$pid"
}

ping_ok() {
    [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://d/v4.0.0/libpod/_ping 2>/dev/null)" = OK ]
}

start_service() {
    local pid t0 deadline log=$DIR/podman.log
    load_env
    if pid=$(service_pid); then
        ping_ok && { say "service already running (pid $pid)"; return 0; }
        die "service pid $pid runs but does not answer on $SOCK"
    fi
    rm -f "$SOCK"     # a stale socket from a killed service
    t0=$(date +%s%N)
    {
        echo "=== $(date -Is) podman system service (start-service)"
    } >>"$log"
    # Not in a new session: a test runner's Ctrl-C or process-group kill
    # ends the service too. Containers survive it (conmon is detached) and
    # `stop` removes them.
    podman --log-level="${PODMAN_ENV_LOG_LEVEL:-info}" system service --time=0 \
        "unix://$SOCK" </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/podman.pid"

    deadline=$(( $(date +%s) + ${PODMAN_ENV_TIMEOUT:-30} ))
    until ping_ok; do
        if ! alive "$pid"; then
            say "podman system service (pid $pid) exited; its log $log:"
            tail -n 40 "$log" >&2
            exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "no answer on $SOCK after ${PODMAN_ENV_TIMEOUT:-30}s; its log $log:"
            tail -n 40 "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    say "service up in $(( ($(date +%s%N) - t0) / 1000000 )) ms (pid $pid, $SOCK)"
}

# Stop the API service: SIGTERM and up to 5 s for its graceful shutdown
# (about 70 ms here), or SIGKILL at once with "kill" (for `stop`, which
# throws everything away anyway).
stop_service() {
    local how=${1:-term} pid
    [ -f "$DIR/podman.pid" ] || return 0
    if pid=$(service_pid); then
        if [ "$how" = term ]; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do
                alive "$pid" || break
                sleep 0.05
            done
        fi
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # reap if it was our child; otherwise wait until it is gone
        for _ in $(seq 40); do
            alive "$pid" || break
            sleep 0.05
        done
    fi
    rm -f "$DIR/podman.pid" "$SOCK"
}

cmd_start() {
    local t0
    t0=$(date +%s%N)
    if [ -e "$DIR" ] && [ ! -f "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists, is not empty and is not a podman-env directory"
    fi
    command -v podman >/dev/null || die "podman is not installed (scripts/deps.sh)"
    mkdir -p "$DIR"
    [ -f "$DIR/containers.conf" ] || write_config
    start_service
    if fit_ulimits_to "$(cat "$DIR/podman.pid")"; then
        stop_service
        start_service
    fi
    say "environment ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms: . $DIR/env.sh"
}

# The test image: busybox-static and a tiny web root. The default command
# serves /www on $PORT (8080 if unset), which is how the agent passes a route.
build_rootfs() {
    local root=$1 version=$2 bb a
    bb=$(readlink -f "$(command -v busybox)") || die "busybox not found (apt-get install busybox-static)"
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; the image needs busybox-static"
    fi
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,www,tmp,root,proc,sys,dev,run,var/tmp,srv}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    cp "$bb" "$root/bin/busybox"
    for a in $("$bb" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
    ln -sf ../../bin/busybox "$root/usr/bin/env"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n' >"$root/etc/group"
    echo "hello from mcp-test $version" >"$root/www/index.html"
    echo "$version" >"$root/www/version"
}

cmd_images() {
    local v build t0
    load_env
    t0=$(date +%s%N)
    for v in $IMAGE_VERSIONS; do
        if podman image exists "$IMAGE:$v"; then
            continue
        fi
        build=$(mktemp -d "$DIR/tmp/image-$v.XXXXXX")
        build_rootfs "$build/rootfs" "$v"
        tar --numeric-owner --owner=0 --group=0 -C "$build/rootfs" -cf "$build/rootfs.tar" .
        podman import -q \
            --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
            --change "ENV MCP_TEST_VERSION=$v" \
            --change "LABEL version=$v" \
            --change "LABEL org.opencontainers.image.version=$v" \
            --change 'WORKDIR /' \
            --change "CMD [\"/bin/sh\", \"-c\", \"echo mcp-test $v listening on \${PORT:-8080}; exec httpd -f -v -p \${PORT:-8080} -h /www\"]" \
            --message "mcp-test $v from busybox-static" \
            "$build/rootfs.tar" "$IMAGE:$v" >/dev/null
        rm -rf "$build"
        say "built $IMAGE:$v"
    done
    say "images ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# Pids of processes that belong to this environment and outlived their
# parent: Podman's helpers (conmon, slirp4netns, rootlessport, ...), found by
# DIR in their command line or in the environment the service passed them,
# and the processes of our containers, found by their cgroup, which is named
# after the container id. Never this script or its callers (a test runner
# that sourced env.sh carries PODMAN_ENV_DIR too, but is no Podman helper).
leftover_pids() {
    local ids=$1 p exe keep f
    keep=" $$ "
    p=$$
    while [ "$p" -gt 1 ]; do
        p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        [ -n "$p" ] || break
        keep+="$p "
    done
    {
        # one grep over all of /proc instead of a few forks per process
        [ -n "$ids" ] && grep -lE "$ids" /proc/[0-9]*/cgroup 2>/dev/null | sed 's/$/ cgroup/'
        grep -lzF "$DIR/" /proc/[0-9]*/cmdline 2>/dev/null
        grep -lzxF "PODMAN_ENV_DIR=$DIR" /proc/[0-9]*/environ 2>/dev/null
    } | while read -r f why; do
        p=${f#/proc/}
        p=${p%%/*}
        case $keep in *" $p "*) continue ;; esac
        if [ "${why:-}" != cgroup ]; then
            exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
            case ${exe##*/} in
                podman|conmon|slirp4netns|catatonit|runc|netavark|aardvark-dns|fuse-overlayfs) ;;
                *) continue ;;
            esac
        fi
        echo "$p"
    done | sort -un
}

cmd_stop() {
    local ids pids m netns_paths
    if [ ! -e "$DIR" ]; then
        say "$DIR: nothing to stop"
        return 0
    fi
    [ -f "$DIR/$MARKER" ] || die "$DIR is not a podman-env directory (no $MARKER): not touching it"
    # Best effort from here on: one failing step must not leave the rest undone.
    set +e +o pipefail

    stop_service kill

    ids="" netns_paths=""
    if [ -f "$DIR/env.sh" ]; then
        # shellcheck disable=SC1091
        . "$DIR/env.sh"
        ids=$(podman ps -aq --no-trunc 2>/dev/null | paste -sd'|') || ids=""
        netns_paths=$(podman ps -aq 2>/dev/null |
            xargs -r podman inspect --format '{{.NetworkSettings.SandboxKey}}' 2>/dev/null) || true
        timeout 60 podman pod rm -af -t 0 >/dev/null 2>&1 || true
        timeout 120 podman rm -af -t 0 >/dev/null 2>&1 ||
            say "podman rm -af failed; killing what is left by hand"
    fi
    # Container ids also from storage, in case the database is unreadable.
    for m in "$DIR"/root/*-containers/*; do
        m=${m##*/}
        [[ $m =~ ^[0-9a-f]{64}$ ]] || continue
        case "|$ids|" in *"|$m|"*) ;; *) ids=${ids:+$ids|}$m ;; esac
    done

    for _ in 1 2 3; do
        pids=$(leftover_pids "$ids")
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done

    # runc's state of our containers, left in /run/runc when conmon was
    # killed before the container ended.
    for m in ${ids//|/ }; do
        [ -d "/run/runc/$m" ] && { runc delete --force "$m" >/dev/null 2>&1 || rm -rf "/run/runc/${m:?}"; }
    done
    # Network namespaces of our containers that Podman could not clean.
    for m in $netns_paths; do
        case $m in
            /run/netns/*|/var/run/netns/*)
                [ -e "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; rm -f "$m"; } ;;
        esac
    done
    # Mounts under DIR, deepest first, until none is left.
    for _ in 1 2 3 4 5; do
        m=$(awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
        [ -n "$m" ] || break
        for m in $m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    # Empty cgroups of our containers (cgroupfs leaves them after a crash).
    if [ -n "$ids" ]; then
        find /sys/fs/cgroup -depth -type d 2>/dev/null | grep -E "$ids" |
            xargs -r rmdir 2>/dev/null || true
    fi

    # --one-file-system: never follow a mount we failed to remove into a
    # bind-mounted host directory.
    if ! rm -rf --one-file-system "$DIR" 2>/dev/null; then
        sleep 0.5
        rm -rf --one-file-system "$DIR" || die "could not remove $DIR (still mounted: $(
            awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | tr '\n' ' '))"
    fi
    say "stopped and removed $DIR"
}

cmd_status() {
    local pid
    load_env
    if pid=$(service_pid) && ping_ok; then
        echo "service: running (pid $pid) on $SOCK"
    else
        echo "service: not running"
    fi
    podman ps -a --format '{{.Names}} {{.Status}} {{.Ports}}'
}

main() {
    local cmd=${1:-}
    [ $# -ge 1 ] && shift
    resolve_dir "${1:-}"
    case $cmd in
        start) cmd_start ;;
        images) cmd_images ;;
        stop) cmd_stop ;;
        stop-service|pause) [ -f "$DIR/$MARKER" ] || die "$DIR is not a podman-env directory"
                            stop_service; say "service stopped; containers keep running" ;;
        start-service|resume) start_service ;;
        status) cmd_status ;;
        *) die "unknown command '$cmd': start|images|stop|stop-service|start-service|status DIR" ;;
    esac
}

main "$@"
