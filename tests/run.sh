#!/usr/bin/env bash
# The test command: on a fresh Debian machine (as root) installs what is missing, starts dockerd
# (and Docker 26) and a Consul dev agent on loopback if none is running, runs ruff, mypy and the docs
# build, then the unit tests, the token test and one sync on the lowest dependency versions allowed
# (constraints/lowest.txt, in .venv-lowest), then the whole pytest suite (unit and integration), then
# the Docker-facing integration tests again on Debian trixie's Docker 26 (DOCKER26_TESTS), and stops
# what it started. Extra arguments go to the whole-suite pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export REGISTRAR_WITH_DOCKER26=1  # deploy/services.sh starts Docker 26 too
source deploy/up.sh

export PATH="$PWD/.venv/bin:$PATH"
export REGISTRAR_CONSUL REGISTRAR_STATE REGISTRAR_TEST_IMAGE

# The integration tests that exercise the engine (registration from events and listings, removal,
# an engine restart, health, exec probes and other checks, draining behind HAProxy, networks, the
# label rules, the one-shot commands), run once more with DOCKER_HOST on Docker 26 (~3 min). The
# fixtures and registrar both follow DOCKER_HOST; the engine-restart test restarts Docker 26 by its
# own pid file (tests/integration/harness.py, Docker26Engine).
DOCKER26_TESTS=(
    tests/integration/test_daemon.py tests/integration/test_commands.py
    tests/integration/test_faults.py::test_docker_engine_restart tests/integration/test_health.py
    tests/integration/test_exec_checks.py tests/integration/test_checks.py tests/integration/test_balancer.py
    tests/integration/test_networks.py tests/integration/test_rules.py tests/integration/test_addresses.py
    tests/integration/test_selection.py
    tests/integration/test_edges.py::test_the_subscription_hears_what_happened_just_before_it
)

echo "== ruff" >&2
ruff check registrar tests bench
ruff format --check registrar tests bench
echo "== mypy" >&2
mypy
echo "== mkdocs build --strict (docs/; not -q, which lets --strict pass on warnings)" >&2
docs_site=$(mktemp -d); mkdocs build --strict -d "$docs_site"; rm -rf "$docs_site"
echo "== pytest on the lowest dependency versions (constraints/lowest.txt)" >&2
if [ ! -x .venv-lowest/bin/pytest ] || [ constraints/lowest.txt -nt .venv-lowest/.installed ] \
    || [ setup.cfg -nt .venv-lowest/.installed ] || [ tests/run.sh -nt .venv-lowest/.installed ]; then
    python3 -m venv .venv-lowest
    .venv-lowest/bin/pip install -q --upgrade pip >&2
    .venv-lowest/bin/pip install -q -c constraints/lowest.txt -e ".[grpc]" pytest hypothesis dnspython >&2
    touch .venv-lowest/.installed
fi
.venv-lowest/bin/pip list --format=freeze 2>/dev/null | grep -iE '^(docker|py-consul|requests|urllib3|click|structlog|prometheus.client|psutil|grpcio|grpcio.health.checking|protobuf)==' >&2 || true
.venv-lowest/bin/python -m pytest -q tests/unit tests/integration/test_security.py::test_token_in_header_not_url \
    tests/integration/test_commands.py::test_sync_registers_and_exits_zero

echo "== pytest" >&2
status=0
pytest "$@" || status=$?

echo "== pytest on Docker 26 ($(docker -H "unix://$REGISTRAR_DOCKER26_SOCKET" version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))" >&2
DOCKER_HOST="unix://$REGISTRAR_DOCKER26_SOCKET" pytest -q "${DOCKER26_TESTS[@]}" || status=$?
exit $status
