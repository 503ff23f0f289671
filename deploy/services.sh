#!/usr/bin/env bash
# Start the Docker engine and a Consul dev agent on loopback if they are not running already,
# and build the FROM-scratch busybox image the demo and tests use. With Podman installed, also
# serve its Docker-compatible API on a socket of its own (REGISTRAR_PODMAN_SOCKET) and load the
# image into it. With REGISTRAR_WITH_DOCKER26=1 (tests/run.sh sets it; the benchmarks and the demo
# do not), also start Docker 26 as deploy/bootstrap.sh unpacked it (REGISTRAR_DOCKER26) on a socket
# (REGISTRAR_DOCKER26_SOCKET), data, bridge and containerd of its own, and load the image into it.
# Meant to be sourced after deploy/bootstrap.sh; `services_stop` stops only what `services_start`
# started.
#
# REGISTRAR_STATE (default /tmp/registrar-services) keeps the pid and log files.

REGISTRAR_STATE="${REGISTRAR_STATE:-/tmp/registrar-services}"
REGISTRAR_TEST_IMAGE="${REGISTRAR_TEST_IMAGE:-registrar-test/busybox:2}"
REGISTRAR_PODMAN_SOCKET="${REGISTRAR_PODMAN_SOCKET:-$REGISTRAR_STATE/podman.sock}"
REGISTRAR_DOCKER26_SOCKET="${REGISTRAR_DOCKER26_SOCKET:-$REGISTRAR_STATE/docker26.sock}"
export REGISTRAR_STATE REGISTRAR_TEST_IMAGE REGISTRAR_PODMAN_SOCKET REGISTRAR_DOCKER26_SOCKET
mkdir -p "$REGISTRAR_STATE"
_started=()

_wait_for() {  # _wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "services: $what did not come up; see $REGISTRAR_STATE" >&2
            return 1
        fi
        sleep 0.2
    done
}

services_start() {
    if ! docker info >/dev/null 2>&1; then
        echo "services: starting dockerd (log: $REGISTRAR_STATE/dockerd.log)" >&2
        # Long-lived services start in / : a checkout they were started from may be deleted while they
        # run (Podman's conmon then fails every start with "Failed to get working directory"). And in a
        # session of their own (setsid): a terminal's Ctrl-C reaches the script, whose cleanup needs them.
        (cd / && exec setsid dockerd --ip 127.0.0.1) >"$REGISTRAR_STATE/dockerd.log" 2>&1 &
        echo $! >"$REGISTRAR_STATE/dockerd.pid"
        _started+=(dockerd)
        _wait_for 60 dockerd docker info || return 1
    fi
    if ! curl -fsS http://127.0.0.1:8500/v1/status/leader 2>/dev/null | grep -q ':'; then
        echo "services: starting a consul dev agent (log: $REGISTRAR_STATE/consul.log)" >&2
        (cd / && exec setsid "$REGISTRAR_CONSUL" agent -dev -client 127.0.0.1 -bind 127.0.0.1 \
            -hcl 'enable_script_checks = true') >"$REGISTRAR_STATE/consul.log" 2>&1 &
        echo $! >"$REGISTRAR_STATE/consul.pid"
        _started+=(consul)
        _wait_for 60 consul sh -c 'curl -fsS http://127.0.0.1:8500/v1/status/leader | grep -q :' || return 1
    fi
    build_test_image
    start_podman
    start_docker26
}

# Docker 26 beside the engine above, as tests/fleet.py runs its hosts' engines: its own data and exec
# roots (so its own containerd, which it starts), its own bridge and subnet, no iptables rules (the
# first engine owns those; docker-proxy publishes the ports), ports published on 127.0.0.1 like the
# first engine's (tests expect a port published without an address there). PATH: trixie's
# containerd, shims and docker-proxy first, then bookworm's runc. tests/integration/harness.py's
# Docker26Engine restarts it with the same command: keep the two in step.
DOCKER26_BRIDGE=regdocker26
DOCKER26_SUBNET=172.29.26.1/24
start_docker26() {
    [ "${REGISTRAR_WITH_DOCKER26:-}" = 1 ] || return 0
    local root="$REGISTRAR_STATE/docker26"
    if ! curl -fsS --unix-socket "$REGISTRAR_DOCKER26_SOCKET" http://docker/_ping >/dev/null 2>&1; then
        echo "services: starting Docker 26 (log: $REGISTRAR_STATE/docker26.log)" >&2
        if [ ! -e "/sys/class/net/$DOCKER26_BRIDGE" ]; then
            ip link add "$DOCKER26_BRIDGE" type bridge && ip addr add "$DOCKER26_SUBNET" dev "$DOCKER26_BRIDGE" \
                && ip link set "$DOCKER26_BRIDGE" up || return 1
        fi
        mkdir -p "$root"
        (cd / && PATH="$REGISTRAR_DOCKER26/usr/sbin:$REGISTRAR_DOCKER26/usr/bin:$PATH" exec setsid \
            "$REGISTRAR_DOCKER26/usr/sbin/dockerd" -H "unix://$REGISTRAR_DOCKER26_SOCKET" \
            --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/dockerd.pid" \
            --bridge "$DOCKER26_BRIDGE" --ip 127.0.0.1 --iptables=false \
            --userland-proxy-path "$REGISTRAR_DOCKER26/usr/sbin/docker-proxy") >"$REGISTRAR_STATE/docker26.log" 2>&1 &
        echo $! >"$REGISTRAR_STATE/docker26.pid"
        _started+=(docker26)
        _wait_for 60 "Docker 26" curl -fsS --unix-socket "$REGISTRAR_DOCKER26_SOCKET" http://docker/_ping || return 1
    fi
    docker -H "unix://$REGISTRAR_DOCKER26_SOCKET" image inspect "$REGISTRAR_TEST_IMAGE" >/dev/null 2>&1 \
        || docker save "$REGISTRAR_TEST_IMAGE" | docker -H "unix://$REGISTRAR_DOCKER26_SOCKET" load -q >/dev/null
}

# Podman as root in this kind of VM refuses its default rlimits: a containers.conf of the test
# set-up's own (not registrar's business) turns them off.
start_podman() {
    command -v podman >/dev/null 2>&1 || return 0
    export CONTAINERS_CONF="$REGISTRAR_STATE/containers.conf"
    [ -f "$CONTAINERS_CONF" ] || printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
    if ! curl -fsS --unix-socket "$REGISTRAR_PODMAN_SOCKET" http://podman/_ping >/dev/null 2>&1; then
        echo "services: starting podman system service (log: $REGISTRAR_STATE/podman.log)" >&2
        rm -f "$REGISTRAR_PODMAN_SOCKET"
        (cd / && exec setsid podman system service --time=0 "unix://$REGISTRAR_PODMAN_SOCKET") >"$REGISTRAR_STATE/podman.log" 2>&1 &
        echo $! >"$REGISTRAR_STATE/podman.pid"
        _started+=(podman)
        _wait_for 60 podman curl -fsS --unix-socket "$REGISTRAR_PODMAN_SOCKET" http://podman/_ping || return 1
    fi
    podman image exists "$REGISTRAR_TEST_IMAGE" || docker save "$REGISTRAR_TEST_IMAGE" | podman load -q >/dev/null
}

build_test_image() {
    docker image inspect "$REGISTRAR_TEST_IMAGE" >/dev/null 2>&1 && return 0
    echo "services: building $REGISTRAR_TEST_IMAGE from scratch around busybox" >&2
    local ctx
    ctx="$(mktemp -d)"
    cp /bin/busybox "$ctx/busybox"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/mkdir", "-p", "/www", "/tmp"]
EXPOSE 80
# The page answers with the container's host name, so a balancer test can tell instances apart.
CMD ["sh", "-c", "hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "$REGISTRAR_TEST_IMAGE" "$ctx" >/dev/null
    local rc=$?
    rm -rf "$ctx"
    return $rc
}

services_stop() {
    local name pid
    for name in "${_started[@]}"; do
        pid="$(cat "$REGISTRAR_STATE/$name.pid" 2>/dev/null)" || continue
        kill "$pid" 2>/dev/null && echo "services: stopped $name" >&2
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$REGISTRAR_STATE/$name.pid"
    done
    # Docker 26's bridge, once its engine is gone (its data stays in REGISTRAR_STATE, for the next start).
    if [[ " ${_started[*]} " == *" docker26 "* ]]; then
        ip link del "$DOCKER26_BRIDGE" 2>/dev/null || true
    fi
    _started=()
}
