#!/bin/sh
# Install every Debian package that the build, the tests, the demo and the
# benchmarks need, and only those that are missing. Safe to run again and
# again: with everything present it changes nothing, needs no root and runs
# no `apt-get update`. Used by `make deps` and by CI on a fresh machine.
set -eu

# One line per purpose, so a reader sees why each package is here.
PACKAGES="
build-essential pkg-config
libluajit-5.1-dev luajit libuv1-dev libmicrohttpd-dev
libcurl4-gnutls-dev libgnutls28-dev libjansson-dev libsqlite3-dev sqlite3 libedit-dev
lua-busted
podman runc uidmap slirp4netns fuse-overlayfs busybox-static catatonit netavark
clang libfuzzer-14-dev libclang-rt-14-dev valgrind
nginx-light wrk hyperfine tmux curl python3
systemd prometheus nix-bin
iproute2 procps psmisc
openssl
"
# openssl is listed for the TLS specs of the API, which make a throwaway CA,
# server and client certificates with openssl(1) (tests/lib/certs.lua).
# nix-bin is listed for nix-instantiate, which parses and evaluates the NixOS
# module in tests/c/nixos.sh (about 10 s to install).
# prometheus is listed for promtool (/usr/bin/promtool ships in that package
# on Debian 12); netavark makes podman's container-network-stack dependency
# deterministic instead of whatever apt picks.

# Prints the packages of "$@" that dpkg does not have installed.
not_installed() {
    # One dpkg-query for all; unknown names are absent from its output.
    # shellcheck disable=SC2016 # ${...} is dpkg-query's format, not shell
    have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
        awk '$2 == "installed" { print $1 }')
    for p in "$@"; do
        printf '%s\n' "$have" | grep -qx "$p" || printf ' %s' "$p"
    done
}

# shellcheck disable=SC2086 # word splitting of the list is intended
missing=$(not_installed $PACKAGES)

if [ -z "$missing" ]; then
    [ "${DEPS_QUIET:-}" ] || echo "deps: all $(echo "$PACKAGES" | wc -w) packages present"
    exit 0
fi

echo "deps: missing:$missing"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "deps: not root and no password-less sudo; install as root:" >&2
        echo "  apt-get install -y$missing" >&2
        exit 1
    fi
fi

log=$(mktemp /tmp/mcp-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
# Quiet on success; on failure show apt's whole output, since dpkg writes
# some of its errors to stdout.
# shellcheck disable=SC2086 # word splitting of the list is intended
if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq update &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq -y \
           -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
           install $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps: apt-get failed" >&2
    exit 1
fi

# shellcheck disable=SC2086
still=$(not_installed $missing)
if [ -n "$still" ]; then
    echo "deps: still missing after install:$still" >&2
    exit 1
fi
echo "deps: installed$missing"
