#!/usr/bin/env bash
# The test command: on a fresh Debian machine (as root) installs what is missing, starts dockerd
# and a Consul dev agent on loopback if none is running, runs ruff, mypy and the whole pytest
# suite (unit and integration), and stops what it started. Extra arguments go to pytest.
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
echo "== pytest" >&2
pytest -p no:cacheprovider "$@"
