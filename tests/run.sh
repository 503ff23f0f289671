#!/usr/bin/env bash
# The test command: on a fresh Debian machine (as root) installs what is missing, starts dockerd
# and a Consul dev agent on loopback if none is running, runs ruff, mypy, the unit tests, the token
# test and one sync (both HTTP transports) on the lowest dependency versions allowed
# (constraints/lowest.txt, in .venv-lowest), then the whole pytest suite (unit and integration),
# and stops what it started. Extra arguments go to the whole-suite pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source deploy/up.sh

export PATH="$PWD/.venv/bin:$PATH"
export REGISTRAR_CONSUL REGISTRAR_STATE REGISTRAR_TEST_IMAGE

echo "== ruff" >&2
ruff check registrar tests bench
ruff format --check registrar tests bench
echo "== mypy" >&2
mypy
echo "== pytest on the lowest dependency versions (constraints/lowest.txt)" >&2
if [ ! -x .venv-lowest/bin/pytest ] || [ constraints/lowest.txt -nt .venv-lowest/.installed ] \
    || [ setup.cfg -nt .venv-lowest/.installed ] || [ tests/run.sh -nt .venv-lowest/.installed ]; then
    python3 -m venv .venv-lowest
    .venv-lowest/bin/pip install -q --upgrade pip >&2
    .venv-lowest/bin/pip install -q -c constraints/lowest.txt -e . pytest hypothesis dnspython >&2
    touch .venv-lowest/.installed
fi
.venv-lowest/bin/pip list --format=freeze 2>/dev/null | grep -iE '^(docker|py-consul|requests|urllib3|click|structlog|prometheus.client|psutil|httptools)==' >&2 || true
.venv-lowest/bin/python -m pytest -q tests/unit tests/integration/test_security.py::test_token_in_header_not_url \
    tests/integration/test_commands.py::test_sync_registers_and_exits_zero

echo "== pytest" >&2
pytest "$@"
