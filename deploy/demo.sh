#!/usr/bin/env bash
# The main job, on a fresh Debian machine (as root): bring up Docker and a Consul dev agent on
# loopback if they are missing, start registrar against that Consul, start a sample container with
# SERVICE_* labels, and print the service as Consul shows it. Ctrl-C (or DEMO_HOLD=0) ends it and
# removes what the demo started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source deploy/bootstrap.sh
source deploy/services.sh
services_start

log="$REGISTRAR_STATE/demo-registrar.log"
cleanup() {
    docker rm -f registrar-demo-web >/dev/null 2>&1 || true
    # Let registrar see the container go, so the demo leaves nothing registered.
    for _ in $(seq 1 50); do
        curl -fsS http://127.0.0.1:8500/v1/agent/services 2>/dev/null | grep -q registrar-demo-web || break
        sleep 0.1
    done
    [ -n "${registrar_pid:-}" ] && kill "$registrar_pid" 2>/dev/null && wait "$registrar_pid" 2>/dev/null
    services_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # Ctrl-C ends the wait below and goes through cleanup (a bare SIGINT would skip it)

echo "== starting registrar (log: $log)"
# In a session of its own, as the services are: Ctrl-C reaches this script, and the cleanup still has registrar.
setsid .venv/bin/registrar run --log-format console --resync 30 consul://127.0.0.1:8500 >"$log" 2>&1 &
registrar_pid=$!

echo "== starting a sample container: docker run -p 127.0.0.1::80 -l SERVICE_NAME=demo-web ..."
docker rm -f registrar-demo-web >/dev/null 2>&1 || true
docker run -d --name registrar-demo-web -p 127.0.0.1::80 \
    -l SERVICE_NAME=demo-web -l SERVICE_TAGS=demo,http -l SERVICE_CHECK_HTTP=/ -l SERVICE_CHECK_INTERVAL=2s \
    -l SERVICE_VERSION=1.0 "$REGISTRAR_TEST_IMAGE" >/dev/null

echo "== waiting for Consul to show it passing"
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:8500/v1/health/service/demo-web?passing" | grep -q registrar-demo-web; then
        break
    fi
    sleep 0.2
done
echo "== the service as Consul shows it (GET /v1/health/service/demo-web):"
curl -fsS "http://127.0.0.1:8500/v1/health/service/demo-web" | python3 deploy/show_service.py
port="$(docker port registrar-demo-web 80/tcp | head -n1 | cut -d: -f2)"
echo "== curl http://127.0.0.1:$port/ -> $(curl -fsS "http://127.0.0.1:$port/")"
echo "== registrar log:"
sed 's/^/  /' "$log"
if [ "${DEMO_HOLD:-1}" = "1" ] && [ -t 0 ]; then
    echo "== running; try 'docker stop registrar-demo-web' in another shell. Ctrl-C to stop and clean up."
    wait "$registrar_pid"
fi
