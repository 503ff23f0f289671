#!/usr/bin/env bash
# Build the registrar sidecar image from this checkout, with no network inside the build.
#   deploy/build-image.sh [TAG] [BASE]
# TAG defaults to registrar:latest. BASE defaults to python:3.11-slim-bookworm if Docker can pull
# it; with REGISTRAR_LOCAL_BASE=1, or when no registry answers, a base made by deploy/make-base.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag="${1:-registrar:latest}"
base="${2:-}"
if [ -z "$base" ]; then
    if [ "${REGISTRAR_LOCAL_BASE:-0}" != "1" ] && timeout 60 docker pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
        base="python:3.11-slim-bookworm"
    else
        base="registrar-base:bookworm"
        bash deploy/make-base.sh "$base"
    fi
fi
# Wheels of registrar and its dependencies, built here where pip reaches the package index.
rm -rf .wheels && mkdir -p .wheels
python="$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )"
"$python" -m pip wheel -q --disable-pip-version-check -w .wheels ".[grpc]" >&2
trap 'rm -rf .wheels' EXIT
DOCKER_BUILDKIT=0 docker build -q -f deploy/Dockerfile --build-arg "BASE=$base" -t "$tag" . >/dev/null
echo "$tag"
