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
# as the service; see docs/testing.md. podman-env-rootless.sh sources this
# file and runs the same steps as user mcp.
#
# Knobs (environment): PODMAN_ENV_NETNS (default network mode of containers:
# "slirp4netns", as rootless Podman uses, or "bridge"), PODMAN_ENV_DRIVER
# (force "overlay" or "vfs"), PODMAN_ENV_LOG_LEVEL (service log level, info),
# PODMAN_ENV_TIMEOUT (seconds to wait for the API, 30).
set -euo pipefail
# The environment is infrastructure, not code under test: `make check`
# exports LD_PRELOAD=libasan.so for busted, and curl with ASan preloaded
# hangs here (measured), as Podman's helpers might.
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

PROG=${PROG:-podman-env}
MARKER=.podman-env           # a DIR without it is not ours: never removed
IMAGE=localhost/mcp-test
IMAGE_VERSIONS="1.0 2.0"
PATH_FOR_PODMAN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Who runs Podman, and where its per-user state lives. The rootless variant
# overrides these after sourcing this file.
OWNER=()                     # command prefix that runs a command as the owner
OWNER_UID=0
RUNC_ROOT=/run/runc          # runc's state dir for this owner
ROOTFUL=1
SOCK_PATH=""                 # the API socket; DIR/run/podman.sock when empty

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# The hard limits of this process bound what a container may ask for: the
# sandbox lacks CAP_SYS_RESOURCE, and Podman's root defaults are above them.
# Podman 4.3.1 also lowers its own RLIMIT_NPROC to 32768 as it starts (seen
# with strace), and runc inherits that through conmon: cap nproc there too.
# cmd_start checks the service's real limits and lowers these if needed.
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
# service (pid $1). Returns 1 when nothing had to change.
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
    sed -i "s/^default_ulimits = .*/default_ulimits = [$(ulimits_toml "$n" "$u")]/" \
        "$DIR/containers.conf"
    say "lowered default_ulimits to the service's hard limits (nofile $n, nproc $u)"
}

# Debian's catatonit package puts it where Podman looks by default.
find_init() {
    local p
    for p in /usr/libexec/podman/catatonit /usr/bin/catatonit; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    echo /usr/libexec/podman/catatonit   # Podman's default; --init then fails
}

# Native overlay needs a kernel that mounts it on this filesystem: try it
# where the storage will live rather than guess. The rootless variant
# replaces this with a try inside a user namespace.
probe_overlay() {
    local d=$DIR/tmp/overlay-probe ok=1
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
    case $DIR in *"'"*|*" "*) die "DIR must not contain quotes or spaces: $DIR" ;; esac
    SOCK=${SOCK_PATH:-$DIR/run/podman.sock}
}

# The variables that make `podman` (service and CLI alike) use DIR only.
# XDG_RUNTIME_DIR inside DIR: Podman's per-user runtime state (and, for root,
# an agent's default socket path $XDG_RUNTIME_DIR/podman/podman.sock).
env_exports() {
    cat <<EOF
export PODMAN_ENV_DIR='$DIR'
export PODMAN_ENV_SOCKET='$SOCK'
export PODMAN_ENV_URL='unix://$SOCK'
export CONTAINERS_CONF='$DIR/containers.conf'
export CONTAINERS_STORAGE_CONF='$DIR/storage.conf'
export CONTAINERS_REGISTRIES_CONF='$DIR/registries.conf'
export XDG_RUNTIME_DIR='$DIR/run'
export XDG_CONFIG_HOME='$DIR/config'
export XDG_DATA_HOME='$DIR/data'
export TMPDIR='$DIR/tmp'
EOF
}

load_env() {
    [ -f "$DIR/env.sh" ] || die "$DIR is not a podman-env directory (no env.sh); run start first"
    # shellcheck disable=SC1091
    . "$DIR/env.sh"
}

# Runs a command as the environment's owner with env.sh applied; within
# $TIMEOUT seconds when that is set.
as_owner() {
    local t=()
    [ -z "${TIMEOUT:-}" ] || t=(timeout "$TIMEOUT")
    # shellcheck disable=SC2016 # expanded by the inner bash
    "${t[@]}" "${OWNER[@]}" env PATH="$PATH_FOR_PODMAN" bash -c '. "$1" && shift && exec "$@"' \
        podman-env "$DIR/env.sh" "$@"
}
pod() { as_owner podman "$@"; }

write_config() {
    local driver netns
    mkdir -p "$DIR"/{root,runroot,run/podman,tmp,networks,config,data}
    touch "$DIR/$MARKER"
    chmod 0700 "$DIR/run"

    driver=${PODMAN_ENV_DRIVER:-}
    if [ -z "$driver" ]; then
        if probe_overlay; then driver=overlay; else driver=vfs; fi
    fi
    netns=${PODMAN_ENV_NETNS:-slirp4netns}

    cat >"$DIR/storage.conf" <<EOF
# written by podman-env.sh: storage private to this environment
[storage]
driver = "$driver"
graphroot = "$DIR/root"
runroot = "$DIR/runroot"
# rootless Podman ignores graphroot (and runroot: it takes
# \$XDG_RUNTIME_DIR/containers, which env.sh puts in DIR too)
rootless_storage_path = "$DIR/root"
EOF
    if [ "$driver" = overlay ]; then
        printf '\n[storage.options.overlay]\nmountopt = "nodev"\n' >>"$DIR/storage.conf"
    fi

    cat >"$DIR/containers.conf" <<EOF
# written by podman-env.sh: CONTAINERS_CONF replaces every other
# containers.conf, so this file is all Podman reads.
[containers]
# within the hard limits of the service (no CAP_SYS_RESOURCE here)
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
    # An agent with XDG_RUNTIME_DIR=DIR/run finds the socket where production
    # has it: \$XDG_RUNTIME_DIR/podman/podman.sock.
    [ "$SOCK" != "$DIR/run/podman.sock" ] || ln -sfn ../podman.sock "$DIR/run/podman/podman.sock"
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
    [ -f "$DIR/env.sh" ] || die "$DIR is not a podman-env directory (no env.sh); run start first"
    if pid=$(service_pid); then
        ping_ok && { say "service already running (pid $pid)"; return 0; }
        die "service pid $pid runs but does not answer on $SOCK"
    fi
    rm -f "$SOCK" "$DIR/podman.pid"    # a stale socket from a killed service
    t0=$(date +%s%N)
    echo "=== $(date -Is) podman system service" >>"$log"
    # The shell writes its own pid, then becomes Podman: the pid file holds
    # the service itself, whoever it runs as. Not in a new session: a test
    # runner's Ctrl-C or process-group kill ends the service too; containers
    # survive that (conmon is detached) and `stop` removes them.
    # shellcheck disable=SC2016 # expanded by the inner bash
    as_owner bash -c 'echo $$ >"$1" && exec podman --log-level="$2" system service --time=0 "unix://$3"' \
        podman-env "$DIR/podman.pid" "${PODMAN_ENV_LOG_LEVEL:-info}" "$SOCK" \
        </dev/null >>"$log" 2>&1 &
    pid=$!     # the service, or a shell that waits for it: alive as long as it is

    deadline=$(( $(date +%s) + ${PODMAN_ENV_TIMEOUT:-30} ))
    until ping_ok; do
        if ! alive "$pid"; then
            say "podman system service exited; the end of its log $log:"
            tail -n 40 "$log" >&2
            exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "no answer on $SOCK after ${PODMAN_ENV_TIMEOUT:-30}s; the end of its log $log:"
            tail -n 40 "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    say "service up in $(ms_since "$t0") ms (pid $(cat "$DIR/podman.pid"), $SOCK)"
}

# Stop the API service: SIGTERM and up to 5 s for its graceful shutdown
# (about 70 ms here), or SIGKILL at once with "kill" (for `stop`, which
# throws everything away anyway).
stop_service() {
    local how=${1:-term} pid p left
    [ -f "$DIR/podman.pid" ] || return 0
    if pid=$(service_pid); then
        # Rootless Podman re-executes itself inside its user namespace: that
        # child is the real service, and the parent does not pass it signals.
        pid="$pid $(pgrep -P "$pid" -x podman | tr '\n' ' ' || true)"
        if [ "$how" = term ]; then
            # shellcheck disable=SC2086
            kill -TERM $pid 2>/dev/null || true
            for _ in $(seq 100); do
                left=""
                for p in $pid; do alive "$p" && left+=" $p"; done
                [ -n "$left" ] || break
                sleep 0.05
            done
        fi
        # shellcheck disable=SC2086
        kill -KILL $pid 2>/dev/null || true
        for _ in $(seq 40); do
            left=""
            for p in $pid; do alive "$p" && left+=" $p"; done
            [ -n "$left" ] || break
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
    say "environment ready in $(ms_since "$t0") ms: . $DIR/env.sh"
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
        if pod image exists "$IMAGE:$v"; then
            continue
        fi
        build=$(mktemp -d "$DIR/tmp/image-$v.XXXXXX")
        chmod 0755 "$build"          # the owner (maybe not root) reads the tar
        build_rootfs "$build/rootfs" "$v"
        tar --numeric-owner --owner=0 --group=0 -C "$build/rootfs" -cf "$build/rootfs.tar" .
        chmod 0644 "$build/rootfs.tar"
        pod import -q \
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
    say "images ready in $(ms_since "$t0") ms"
}

# Is pid $1 run by our owner? Root's environments may kill any process they
# found; a rootless one only its own uid (and its containers' subordinate
# uids, see podman-env-rootless.sh).
owned() {
    local uid
    [ "$OWNER_UID" = 0 ] && return 0
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
    owner_uid_ok "$uid"
}
owner_uid_ok() { [ "$1" = "$OWNER_UID" ]; }

# Pids of processes that belong to this environment and outlived their
# parent: Podman's helpers (conmon, slirp4netns, rootlessport, the rootless
# pause process, ...), found by DIR in their command line or in the
# environment they inherited from the service; and our containers'
# processes, found by their cgroup (named after the container id) or by the
# pid file runc wrote. Never this script or its callers (a test runner that
# sourced env.sh carries PODMAN_ENV_DIR too, but is no Podman helper).
leftover_pids() {
    local ids=$1 p exe keep f why
    keep=" $$ "
    p=$$
    while [ "$p" -gt 1 ]; do
        p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        [ -n "$p" ] || break
        keep+="$p "
    done
    {
        # one grep over all of /proc instead of a few forks per process
        [ -n "$ids" ] && grep -lE "$ids" /proc/[0-9]*/cgroup 2>/dev/null | sed 's/$/ ctr/'
        for f in "$DIR"/runroot/*-containers/*/userdata/pidfile \
                 "$DIR"/run/containers/*-containers/*/userdata/pidfile; do
            [ -f "$f" ] && echo "/proc/$(cat "$f" 2>/dev/null) ctr"
        done
        grep -lzF "$DIR/" /proc/[0-9]*/cmdline 2>/dev/null
        grep -lzxF "PODMAN_ENV_DIR=$DIR" /proc/[0-9]*/environ 2>/dev/null
    } | while read -r f why; do
        p=${f#/proc/}
        p=${p%%/*}
        if ! [[ $p =~ ^[0-9]+$ ]] || [ ! -d "/proc/$p" ]; then continue; fi
        case $keep in *" $p "*) continue ;; esac
        owned "$p" || continue
        if [ "${why:-}" != ctr ]; then
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
    local ids="" pids m netns_paths=""
    if [ ! -e "$DIR" ]; then
        say "$DIR: nothing to stop"
        return 0
    fi
    [ -f "$DIR/$MARKER" ] || die "$DIR is not a podman-env directory (no $MARKER): not touching it"
    # Best effort from here on: one failing step must not leave the rest undone.
    set +e +o pipefail

    stop_service kill

    if [ -f "$DIR/env.sh" ]; then
        ids=$(TIMEOUT=30 pod ps -aq --no-trunc 2>/dev/null | paste -sd'|')
        if [ "$ROOTFUL" = 1 ] && [ -n "$ids" ]; then
            # shellcheck disable=SC2046 # one word per container id
            netns_paths=$(TIMEOUT=30 pod inspect --format '{{.NetworkSettings.SandboxKey}}' \
                $(echo "$ids" | tr '|' ' ') 2>/dev/null)
        fi
        TIMEOUT=60 pod pod rm -af -t 0 >/dev/null 2>&1
        TIMEOUT=120 pod rm -af -t 0 >/dev/null 2>&1 ||
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
        kill -KILL $pids 2>/dev/null
        sleep 0.2
    done

    # runc's state of our containers, left when conmon was killed before the
    # container ended.
    for m in ${ids//|/ }; do
        [ -d "$RUNC_ROOT/$m" ] &&
            { "${OWNER[@]}" runc --root "$RUNC_ROOT" delete --force "$m" >/dev/null 2>&1 ||
              rm -rf "${RUNC_ROOT:?}/$m"; }
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
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done
    done
    # Empty cgroups of our containers (cgroupfs leaves them after a crash).
    if [ -n "$ids" ]; then
        find /sys/fs/cgroup -depth -type d 2>/dev/null | grep -E "$ids" |
            xargs -r rmdir 2>/dev/null
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
    [ -f "$DIR/env.sh" ] || { echo "no environment in $DIR"; return 1; }
    if pid=$(service_pid) && ping_ok; then
        echo "service: running (pid $pid) on $SOCK"
    else
        echo "service: not running"
    fi
    pod ps -a --format '{{.Names}} {{.Status}} {{.Ports}}'
}

main() {
    local cmd=${1:-}
    [ $# -ge 1 ] && shift
    resolve_dir "${1:-}"
    case $cmd in start|stop|images|start-service|resume)
        [ "$(id -u)" = 0 ] || die "run as root (the rootless variant is podman-env-rootless.sh)" ;;
    esac
    case $cmd in
        start) cmd_start ;;
        images) cmd_images ;;
        stop) cmd_stop ;;
        stop-service|pause)
            [ -f "$DIR/$MARKER" ] || die "$DIR is not a podman-env directory"
            stop_service
            say "service stopped; containers keep running" ;;
        start-service|resume) start_service ;;
        status) cmd_status ;;
        *) die "unknown command '$cmd': start|images|stop|stop-service|start-service|status DIR" ;;
    esac
}

# Sourced by podman-env-rootless.sh for its functions; run otherwise.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
