# Source this: install what is missing, start dockerd and a Consul dev agent if none is running,
# and stop what was started when the sourcing shell exits. Used by tests/run.sh and bench/run.sh.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
trap services_stop EXIT
services_start
# registrar's own modules compiled, as installing its wheel does: this checkout is installed editable,
# and with PYTHONDONTWRITEBYTECODE set (as on this project's machines) Python would compile them again
# at every start of registrar, 0.1 s of its cold start.
"$REPO/.venv/bin/python" -m compileall -q "$REPO/registrar" >/dev/null
