#!/usr/bin/env bash
# registrar, the floor (bench/floor.py) and a Go daemon of registrator's design (bench/standin), side
# by side on the engine and agent that tests/run.sh brings up (bench/side_by_side.py). Installs
# Debian's golang-go when no `go` is on PATH and builds the stand-in into build/ (standard library
# only: nothing is fetched). Arguments go to bench/side_by_side.py (--samples, --bursts, --sizes,
# --rounds, --floor-workers, --idle).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/up.sh
command -v go >/dev/null 2>&1 || apt_install golang-go
(cd bench/standin && go build -o ../../build/standin .)
.venv/bin/python -m bench.side_by_side "$@"
