#!/usr/bin/env bash
# Time each hop of a container start inside registrar (bench/profile.py), against a real Docker
# engine and Consul agent brought up as tests/run.sh does. Arguments go to bench/profile.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python bench/profile.py "$@"
