#!/usr/bin/env bash
# The many-hosts benchmark (bench/fleet.py): brings up the default engine (for the image) as
# tests/run.sh does, then fleets of Docker engines, Consul client agents, registrars and three Consul
# servers on loopback. Arguments go to bench/fleet.py (--per-host, --parallel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python bench/fleet.py "$@"
