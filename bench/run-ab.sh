#!/usr/bin/env bash
# A/B of CPU per container start (bench/ab.py): variants of registrar (directories holding a copy of
# the registrar package, with @NAME=VALUE environment settings) and of the floor (floor:N) watch the
# same bursts, against the engine and agent that tests/run.sh brings up. Arguments go to bench/ab.py.
# Example: cp -r registrar /tmp/a/ && (edit /tmp/a/registrar) && bench/run-ab.sh floor:0 "$PWD" /tmp/a
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python -m bench.ab "$@"
