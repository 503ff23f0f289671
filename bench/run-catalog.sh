#!/usr/bin/env bash
# The catalog-mode benchmark (bench/catalog.py): fleets of three Consul servers on 127.0.1.1-3 and Docker
# engines of their own (the test image imported into each from the busybox binary), hosts without a Consul agent
# running `registrar run --catalog`, and one host with a client agent for agent mode. Neither the shared engine
# nor the shared Consul agent is used: nothing of tests/run.sh's must run meanwhile (the fleets take the same
# addresses, bridges and names as tests/integration/test_fleet.py and test_catalog_sessions.py).
# Arguments go to bench/catalog.py (--ttls, --repeats, --per-host, --services, --idle, --windows, --skip, --root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/bootstrap.sh
# registrar's modules compiled, as deploy/up.sh does: each registrar started would compile them again otherwise.
.venv/bin/python -m compileall -q registrar >/dev/null
.venv/bin/python bench/catalog.py "$@"
