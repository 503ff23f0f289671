#!/usr/bin/env bash
# Build local equivalents of the images docker-compose.yml names, for a machine that reaches no
# registry (the compose test, tests/integration/test_compose.py, runs the file with these):
#   registrar-test/consul    the consul binary the scripts chose, with the libraries it links
#   registrar-test/haproxy   Debian's haproxy, with the libraries it links, run as the official image runs it
#   registrar:integration-test   the sidecar, built anew from this checkout (deploy/build-image.sh, local base)
# The app's busybox image is deploy/services.sh's. Needs REGISTRAR_CONSUL (deploy/bootstrap.sh sets it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# scratch_image TAG BINARY ENTRYPOINT-JSON [CMD-JSON]: the binary and every library ldd resolves for it.
scratch_image() {
    local tag=$1 binary=$2 entrypoint=$3 cmd=${4:-}
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    local ctx
    ctx="$(mktemp -d)"
    mkdir -p "$ctx/rootfs/tmp"
    cp --parents "$binary" "$ctx/rootfs/"
    ldd "$binary" | grep -o '/[^ ]*' | sort -u | while read -r lib; do cp -L --parents "$lib" "$ctx/rootfs/"; done
    {
        echo "FROM scratch"
        echo "COPY rootfs/ /"
        echo "ENTRYPOINT $entrypoint"
        [ -z "$cmd" ] || echo "CMD $cmd"
    } >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
    local rc=$?
    rm -rf "$ctx"
    return $rc
}

consul="$(readlink -f "${REGISTRAR_CONSUL:-$(command -v consul)}")"
scratch_image registrar-test/consul "$consul" "[\"$consul\"]"
haproxy="$(readlink -f "$(command -v haproxy || echo /usr/sbin/haproxy)")"
scratch_image registrar-test/haproxy "$haproxy" "[\"$haproxy\", \"-W\", \"-db\"]" \
    '["-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
old="$(docker image inspect -f '{{.Id}}' registrar:integration-test 2>/dev/null || true)"
REGISTRAR_LOCAL_BASE=1 bash deploy/build-image.sh registrar:integration-test >/dev/null
new="$(docker image inspect -f '{{.Id}}' registrar:integration-test)"
[ -z "$old" ] || [ "$old" = "$new" ] || docker rmi -f "$old" >/dev/null 2>&1 || true  # no dangling image left
