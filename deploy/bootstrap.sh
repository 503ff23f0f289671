#!/usr/bin/env bash
# Install what registrar's demo and tests need on a fresh Debian machine, as root:
#   - a Python venv (.venv) with registrar and its development tools,
#   - the Docker engine (docker.io) and busybox-static (for FROM-scratch images),
#   - a consul binary: the one on PATH if there is one, else Debian bullseye's package,
#     fetched with a private apt configuration derived from this machine's own sources,
#   - a second, newer Docker engine fetched the same way: Debian trixie's docker.io (26.1.5, API 1.45)
#     and containerd, unpacked into the cache (REGISTRAR_DOCKER26), which CI also runs the tests on.
# Idempotent: each step is skipped when what it makes is already there.
# Source it (it defines REGISTRAR_CONSUL) or run it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${REGISTRAR_CACHE:-${HOME:-/root}/.cache/registrar}"
mkdir -p "$CACHE"

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_updated=""
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Debian packages: the engine, a static busybox for test images, curl for the demo, openssl for the
# certificates of the TLS-engine tests, HAProxy for the balancer tests, debootstrap for the
# registry-free base of the sidecar image, Podman, whose Docker-compatible API the Podman tests
# follow (catatonit: the pause binary of Podman's pods), and docker-compose (1.29), which the
# compose test runs docker-compose.yml with.
command -v dockerd >/dev/null 2>&1 || apt_install docker.io
apt_install busybox-static curl iproute2 openssl haproxy debootstrap podman catatonit docker-compose

# Packages of another Debian suite, never installed: a private apt configuration made from this
# machine's own sources (suite replaced, security stanza dropped), `apt-get download`, `dpkg -x`.
apt_unpack() {  # apt_unpack SUITE DEST PACKAGE...
    local suite=$1 dest=$2
    shift 2
    local apt="$CACHE/apt-$suite"
    rm -rf "$apt" "$dest.partial" && mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/archives/partial" "$apt/dl"
    awk -v suite="$suite" \
        'BEGIN { RS = ""; ORS = "\n\n" }
         /Suites:[^\n]*-security/ { next }
         { gsub(/Suites:[^\n]*/, "Suites: " suite); print }' \
        /etc/apt/sources.list.d/debian.sources >"$apt/sources.list.d/$suite.sources"
    local opts=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$apt/sources.list.d"
                -o "Dir::State::lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives"
                -o "Dir::Cache::pkgcache=$apt/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt/srcpkgcache.bin"
                -o "APT::Get::List-Cleanup=0")
    say "fetching $* from Debian $suite"
    apt-get "${opts[@]}" update -qq >&2
    (cd "$apt/dl" && apt-get "${opts[@]}" download "$@" >&2)
    local deb
    for deb in "$apt"/dl/*.deb; do dpkg -x "$deb" "$dest.partial"; done
    mv "$dest.partial" "$dest"  # whole or not at all: a check for a file in it means the unpack finished
}

# consul: prefer one on PATH; otherwise bullseye's package, unpacked into the cache.
fetch_consul() {
    local dir="$CACHE/consul"
    [ -x "$dir/usr/bin/consul" ] || { rm -rf "$dir" && apt_unpack bullseye "$dir" consul; }
    echo "$dir/usr/bin/consul"
}
if command -v consul >/dev/null 2>&1; then
    REGISTRAR_CONSUL="$(command -v consul)"
else
    REGISTRAR_CONSUL="$(fetch_consul)"
fi
export REGISTRAR_CONSUL

# Docker 26: trixie's dockerd, docker-proxy (both in docker.io) and containerd with its shims, next to
# bookworm's engine. Not trixie's runc (it needs glibc 2.38): the engine finds bookworm's, installed
# with docker.io, on PATH (deploy/services.sh). Not its CLI either: any docker CLI talks to it.
REGISTRAR_DOCKER26="$CACHE/docker26"
if [ ! -x "$REGISTRAR_DOCKER26/usr/sbin/dockerd" ] || [ ! -x "$REGISTRAR_DOCKER26/usr/bin/containerd" ]; then
    rm -rf "$REGISTRAR_DOCKER26"
    apt_unpack trixie "$REGISTRAR_DOCKER26" docker.io containerd
fi
export REGISTRAR_DOCKER26

# Python: a venv with registrar installed editable, plus the development tools.
if [ ! -x "$REPO/.venv/bin/registrar" ] || [ "$REPO/setup.cfg" -nt "$REPO/.venv/.installed" ]; then
    say "creating the virtualenv"
    python3 -m venv "$REPO/.venv"
    "$REPO/.venv/bin/pip" install -q --upgrade pip >&2
    "$REPO/.venv/bin/pip" install -q -e "$REPO[dev,grpc]" >&2
    touch "$REPO/.venv/.installed"
fi
