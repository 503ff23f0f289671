#!/usr/bin/env bash
# What exec probes cost (bench/probes.py): 100 containers probed every second by default, against a
# real Docker engine and Consul agent brought up as tests/run.sh does. Arguments go to bench/probes.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python -m bench.probes "$@"
