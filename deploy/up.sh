# Source this: install what is missing, start dockerd and a Consul dev agent if none is running,
# and stop what was started when the sourcing shell exits. Used by tests/run.sh and bench/run.sh.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
trap services_stop EXIT
services_start
