#!/usr/bin/env bash
# Where registrar's CPU goes (bench/cpu_profile.py): registrar under yappi's CPU clock during a burst,
# beside a plain registrar whose CPU per start is read from /proc, against the engine and agent that
# tests/run.sh brings up. Installs yappi into .venv when it is missing. Arguments go to
# bench/cpu_profile.py (--count, --parallel, --top).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
.venv/bin/python -c 'import yappi' 2>/dev/null || .venv/bin/python -m pip install --quiet yappi
.venv/bin/python -m bench.cpu_profile "$@"
