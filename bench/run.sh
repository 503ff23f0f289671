#!/usr/bin/env bash
# Run the benchmark against a real Docker engine and Consul agent, brought up as tests/run.sh does.
# Arguments go to bench/bench.py (--samples, --idle, --sizes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python bench/bench.py "$@"
