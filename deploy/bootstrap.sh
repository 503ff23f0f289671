#!/usr/bin/env bash
# Install what registrar's demo and tests need on a fresh Debian machine, as root:
#   - a Python venv (.venv) with registrar and its development tools,
#   - the Docker engine (docker.io) and busybox-static (for FROM-scratch images),
#   - a consul binary: the one on PATH if there is one, else Debian bullseye's package,
#     fetched with a private apt configuration derived from this machine's own sources.
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

# Debian packages: the engine, a static busybox for test images, curl for the demo, HAProxy for
# the balancer tests, debootstrap for the registry-free base of the sidecar image, Podman, whose
# Docker-compatible API the Podman tests follow (catatonit: the pause binary of Podman's pods),
# and docker-compose (1.29), which the compose test runs docker-compose.yml with.
command -v dockerd >/dev/null 2>&1 || apt_install docker.io
apt_install busybox-static curl iproute2 haproxy debootstrap podman catatonit docker-compose

# consul: prefer one on PATH; otherwise bullseye's package, unpacked into the cache.
fetch_consul() {
    local dir="$CACHE/consul"
    if [ -x "$dir/usr/bin/consul" ]; then
        echo "$dir/usr/bin/consul"
        return
    fi
    local apt="$CACHE/apt-bullseye"
    rm -rf "$apt" && mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/archives/partial" "$apt/dl"
    # This machine's sources, suite replaced by bullseye, security stanza dropped.
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         /Suites:[^\n]*-security/ { next }
         { gsub(/Suites:[^\n]*/, "Suites: bullseye"); print }' \
        /etc/apt/sources.list.d/debian.sources >"$apt/sources.list.d/bullseye.sources"
    local opts=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$apt/sources.list.d"
                -o "Dir::State::lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives"
                -o "Dir::Cache::pkgcache=$apt/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt/srcpkgcache.bin"
                -o "APT::Get::List-Cleanup=0")
    say "fetching consul from Debian bullseye"
    apt-get "${opts[@]}" update -qq >&2
    (cd "$apt/dl" && apt-get "${opts[@]}" download consul >&2)
    dpkg -x "$apt"/dl/consul_*.deb "$dir"
    echo "$dir/usr/bin/consul"
}
if command -v consul >/dev/null 2>&1; then
    REGISTRAR_CONSUL="$(command -v consul)"
else
    REGISTRAR_CONSUL="$(fetch_consul)"
fi
export REGISTRAR_CONSUL

# Python: a venv with registrar installed editable, plus the development tools.
if [ ! -x "$REPO/.venv/bin/registrar" ] || [ "$REPO/setup.cfg" -nt "$REPO/.venv/.installed" ]; then
    say "creating the virtualenv"
    python3 -m venv "$REPO/.venv"
    "$REPO/.venv/bin/pip" install -q --upgrade pip >&2
    "$REPO/.venv/bin/pip" install -q -e "$REPO[dev]" >&2
    touch "$REPO/.venv/.installed"
fi
