#!/usr/bin/env bash
# Make a small Debian bookworm base image with Python 3, without any image registry: debootstrap
# from Debian's archive (the mirror this machine's apt already uses), imported into Docker.
#   deploy/make-base.sh [IMAGE]      (default registrar-base:bookworm; skipped when it exists)
set -euo pipefail
image="${1:-registrar-base:bookworm}"
docker image inspect "$image" >/dev/null 2>&1 && exit 0
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }

# The mirror: the first URIs of this machine's Debian sources (never written into a file).
mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
[ -n "$mirror" ] || mirror="$(awk '/^deb / { print $2; exit }' /etc/apt/sources.list)"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "make-base: debootstrap bookworm (minbase + python3) into $root" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim what a runtime image does not need.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "make-base: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1/1e6 }'))" >&2
