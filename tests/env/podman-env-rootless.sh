#!/bin/bash
# The test environment of podman-env.sh, run the way production runs Podman:
# rootless, as the system user mcp (uid/gid 850, home /srv/mcp), with the API
# socket at /run/user/850/podman/podman.sock where the agent looks for it.
# Run it as root; everything Podman does runs as mcp.
#
#   podman-env-rootless.sh setup                 user, subuid/subgid, /run/user/850, /dev/net/tun
#   podman-env-rootless.sh start DIR             setup, then the API service as mcp
#   podman-env-rootless.sh images DIR            localhost/mcp-test:{1.0,2.0} in mcp's storage
#   podman-env-rootless.sh podman DIR ARGS...    the podman CLI as mcp, against DIR
#   podman-env-rootless.sh stop DIR              containers, service, pause process, DIR
#   podman-env-rootless.sh stop-service|start-service|status DIR
#
# start also lets mcp write /srv, where the agent makes /srv/<service>, the
# way docs/operations.md tells operators of a shared /srv (group mcp, g+rwx),
# when mcp cannot already; stop puts /srv back as it was, and removes
# /run/user/850 when setup made it (and nothing else is in it).
#
# Storage, runtime state (XDG_RUNTIME_DIR=DIR/run: runroot, pause process,
# runc and netns state) and config live in DIR, owned by mcp; only the socket
# is in /run/user/850, so one rootless environment runs at a time. It never
# signals or removes anything of a uid other than 850 and mcp's subordinate
# uids (its containers' users). See docs/testing.md for what was needed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=podman-env-rootless
# shellcheck source=tests/env/podman-env.sh
. "$HERE/podman-env.sh"

MCP_USER=mcp
MCP_ID=850
MCP_HOME=/srv/mcp
RUN_USER=/run/user/$MCP_ID
RUN_USER_MARK=.made-by-podman-env
SOCK_PATH=$RUN_USER/podman/podman.sock
SUBIDS=100000:65536

OWNER=(setpriv --reuid="$MCP_ID" --regid="$MCP_ID" --init-groups --reset-env)
OWNER_UID=$MCP_ID
ROOTFUL=0

# Rootless containers/image keeps a cache (short-name aliases) in
# $XDG_CACHE_HOME, else ~/.cache: in DIR too, so that mcp's home stays as it was.
eval "root_$(declare -f env_exports)"
env_exports() {
    root_env_exports
    echo "export XDG_CACHE_HOME='$DIR/cache'"
}

# mcp's own uid, or one of its subordinate uids (a container user).
owner_uid_ok() {
    local uid=$1 start count
    [ "$uid" = "$MCP_ID" ] && return 0
    IFS=: read -r _ start count < <(grep "^$MCP_USER:" /etc/subuid | head -n 1) || return 1
    [ -n "$start" ] && [ "$uid" -ge "$start" ] && [ "$uid" -lt $((start + count)) ]
}

# Everything rootless Podman needs from the host, created only when absent.
cmd_setup() {
    local changed=""
    if ! getent group "$MCP_USER" >/dev/null; then
        groupadd --system --gid "$MCP_ID" "$MCP_USER"
        changed+=" group"
    fi
    if ! getent passwd "$MCP_USER" >/dev/null; then
        useradd --system --uid "$MCP_ID" --gid "$MCP_ID" --home-dir "$MCP_HOME" --create-home \
            --shell /usr/sbin/nologin --comment "MCP node agent" "$MCP_USER"
        changed+=" user"
    fi
    [ "$(id -u "$MCP_USER")" = "$MCP_ID" ] ||
        die "user $MCP_USER exists with uid $(id -u "$MCP_USER"), not $MCP_ID"
    [ -d "$MCP_HOME" ] || { install -d -m 0755 -o "$MCP_ID" -g "$MCP_ID" "$MCP_HOME"; changed+=" home"; }
    local f
    for f in /etc/subuid /etc/subgid; do
        if ! grep -q "^$MCP_USER:" "$f" 2>/dev/null; then
            if grep -q ":${SUBIDS%%:*}:" "$f" 2>/dev/null; then
                say "warning: another user already has the range starting at ${SUBIDS%%:*} in $f"
            fi
            echo "$MCP_USER:$SUBIDS" >>"$f"
            changed+=" $f"
        fi
    done
    if [ ! -d "$RUN_USER" ]; then
        install -d -m 0700 -o "$MCP_ID" -g "$MCP_ID" "$RUN_USER"
        changed+=" $RUN_USER"
        # So that stop knows it may remove it again.
        touch "$RUN_USER/$RUN_USER_MARK"
    fi
    if [ ! -d "$RUN_USER/podman" ]; then
        install -d -m 0700 -o "$MCP_ID" -g "$MCP_ID" "$RUN_USER/podman"
    fi
    # slirp4netns opens /dev/net/tun inside mcp's user namespace, as mcp.
    if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        chmod 666 /dev/net/tun
        changed+=" /dev/net/tun"
    fi
    [ -z "$changed" ] || say "setup changed:$changed"
}

# Native overlay inside mcp's user namespace (kernel >= 5.13), else
# fuse-overlayfs, else vfs.
probe_overlay() { return 1; }   # podman-env.sh's root probe does not apply
rootless_driver() {
    local d=$DIR/tmp/overlay-probe
    [ -n "${PODMAN_ENV_DRIVER:-}" ] && { echo "$PODMAN_ENV_DRIVER"; return; }
    # shellcheck disable=SC2016 # expanded by the inner sh
    if "${OWNER[@]}" unshare -r -m sh -c 'mkdir -p "$1/l" "$1/u" "$1/w" "$1/m" &&
            mount -t overlay overlay -o "lowerdir=$1/l,upperdir=$1/u,workdir=$1/w" "$1/m"' \
            sh "$d" >/dev/null 2>&1; then
        echo overlay
    elif [ -x /usr/bin/fuse-overlayfs ] && [ -r /dev/fuse ] && [ -w /dev/fuse ]; then
        echo fuse-overlayfs
    else
        echo vfs
    fi
    rm -rf "$d"
}

# The agent makes /srv/<service> for each service's volume, so mcp must be
# able to write /srv (docs/operations.md, section 1). A test host's /srv is
# shared with root's tests, so this does what that page says for a shared
# /srv: group mcp, group-writable. DIR/srv.orig records what /srv was.
srv_grant() {
    [ -f "$DIR/srv.orig" ] && return 0
    if [ -d /srv ] && "${OWNER[@]}" sh -c 'test -w /srv && test -x /srv'; then
        return 0
    fi
    if [ -d /srv ]; then
        stat -c '%u:%g:%a' /srv >"$DIR/srv.orig"
    else
        echo absent >"$DIR/srv.orig"
        install -d -m 0755 /srv
    fi
    chgrp "$MCP_ID" /srv
    chmod g+rwx /srv
    say "/srv: group $MCP_USER, g+rwx, until stop (was $(cat "$DIR/srv.orig"))"
}

# Puts /srv back as srv_grant found it: owner, group and mode, or no /srv
# (when it is empty again).
srv_restore() {
    local orig
    orig=$(cat "$DIR/srv.orig" 2>/dev/null) || return 0
    if [ "$orig" = absent ]; then
        rmdir /srv 2>/dev/null || { chgrp 0 /srv; chmod 0755 /srv; }
    else
        chown "${orig%:*}" /srv && chmod "${orig##*:}" /srv
    fi
    rm -f "$DIR/srv.orig"
}

# Starts and stops of rootless environments, one at a time: two starts at
# once would both find nobody answering on the socket and both claim it.
# Held until this script exits.
take_lock() {
    exec 9>/run/podman-env-rootless.lock
    flock -w 300 9 || die "waited 300 s for /run/podman-env-rootless.lock: another start or stop"
}

cmd_start() {
    local t0 driver other
    t0=$(date +%s%N)
    cmd_setup
    if [ -e "$DIR" ] && [ ! -f "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists, is not empty and is not a podman-env directory"
    fi
    other=$(cat "$RUN_USER/podman/podman-env.dir" 2>/dev/null || true)
    if [ -n "$other" ] && [ "$other" != "$DIR" ] && ping_ok; then
        die "another rootless environment ($other) serves $SOCK: stop it first"
    fi
    mkdir -p "$DIR"
    if [ ! -f "$DIR/containers.conf" ]; then
        mkdir -p "$DIR/tmp"
        chown "$MCP_ID:$MCP_ID" "$DIR" "$DIR/tmp"
        driver=$(rootless_driver)
        PODMAN_ENV_DRIVER=$driver write_config
        if [ "$driver" = fuse-overlayfs ]; then
            sed -i 's/^driver = "fuse-overlayfs"/driver = "overlay"/' "$DIR/storage.conf"
            printf 'mount_program = "/usr/bin/fuse-overlayfs"\n' >>"$DIR/storage.conf"
        fi
        chown -R "$MCP_ID:$MCP_ID" "$DIR"
        chmod 0700 "$DIR"
    fi
    srv_grant
    echo "$DIR" >"$RUN_USER/podman/podman-env.dir"
    chown "$MCP_ID:$MCP_ID" "$RUN_USER/podman/podman-env.dir"
    # In a subshell without fd 9: the service and the shell that waits for it
    # must not hold the lock (a redirection `9>&-` would leave bash's saved
    # copy of it in that shell).
    ( exec 9>&-; start_service ) || exit 1
    if fit_ulimits_to "$(cat "$DIR/podman.pid")"; then
        stop_service
        ( exec 9>&-; start_service ) || exit 1
    fi
    say "rootless environment ready in $(ms_since "$t0") ms (as $MCP_USER, $SOCK)"
}

# /run/user/850 goes when setup made it and it holds nothing else (another
# environment's socket, a console socket): then it is as before setup.
run_user_remove() {
    [ -f "$RUN_USER/$RUN_USER_MARK" ] || return 0
    rm -f "$RUN_USER/$RUN_USER_MARK"
    rmdir "$RUN_USER/podman" 2>/dev/null || true
    rmdir "$RUN_USER" 2>/dev/null || touch "$RUN_USER/$RUN_USER_MARK"
}

cmd_stop_rootless() {
    [ -e "$DIR" ] || { say "$DIR: nothing to stop"; return 0; }
    [ -f "$DIR/$MARKER" ] && srv_restore
    cmd_stop
    if [ "$(cat "$RUN_USER/podman/podman-env.dir" 2>/dev/null)" = "$DIR" ]; then
        rm -f "$RUN_USER/podman/podman-env.dir" "$SOCK"
    fi
    run_user_remove
}

rootless_main() {
    local cmd=${1:-}
    [ $# -ge 1 ] && shift
    if [ "$cmd" = setup ]; then cmd_setup; return; fi
    [ "$(id -u)" = 0 ] || die "run as root: it creates the user and runs Podman as $MCP_USER"
    resolve_dir "${1:-}"
    [ $# -ge 1 ] && shift
    # rootless runc keeps its state in $XDG_RUNTIME_DIR/runc
    RUNC_ROOT=$DIR/run/runc
    case $cmd in
        start) take_lock; cmd_start ;;
        images) cmd_images ;;
        podman) pod "$@" ;;
        stop) take_lock; cmd_stop_rootless ;;
        stop-service|pause)
            [ -f "$DIR/$MARKER" ] || die "$DIR is not a podman-env directory"
            stop_service
            say "service stopped; containers keep running" ;;
        start-service|resume) start_service ;;
        status) cmd_status ;;
        *) die "unknown command '$cmd': setup|start|images|podman|stop|stop-service|start-service|status DIR" ;;
    esac
}

rootless_main "$@"
