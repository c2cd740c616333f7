#!/usr/bin/env bash
# Entry point of the local e2e control plane (`make cluster-up` / `make cluster-down`):
#   bash e2e/cluster.sh up|down|status|load-images
# LLMFLEET_REAL_NODE=1 up also runs a real kubelet node (e2e/node.py; images from
# images/build.sh, imported again by load-images after a rebuild). The work is done by e2e/cluster.py with the repo's virtualenv (it needs PyPI
# packages, e.g. PyYAML; `make setup` makes the venv). State folder:
# $LLMFLEET_STATE_DIR (default <repo>/.llmfleet); binaries are cached in
# ${LLMFLEET_CACHE_DIR:-~/.cache/llmfleet}/controlplane/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$here/../.venv/bin/python"
if [[ ! -x "$python" ]]; then
    echo "cluster.sh: $python not found; run 'make setup' first" >&2
    exit 1
fi
exec "$python" "$here/cluster.py" "$@"
