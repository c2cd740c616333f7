#!/usr/bin/env bash
# `make kind`: the shipping tier on a kind cluster, for hosts with Docker (and a registry to
# pull kind's node image from). Creates the cluster (once), then runs e2e/shipping against it;
# its fixtures build the images, `kind load` them, label the node, give it GPUs and install
# the chart: the same steps (e2e/shipping/ship.py) as the local real-node tier, so the two
# cannot drift. `bash e2e/shipping/kind.sh down` deletes the cluster.
#   KIND_CLUSTER (llmfleet)  the cluster's name
#   kind itself: from PATH, else built from its Go module (cached) at KIND_VERSION.
set -euo pipefail

KIND_VERSION=v0.33.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="${KIND_CLUSTER:-llmfleet}"
state="${LLMFLEET_STATE_DIR:-$repo/.llmfleet}"
kubeconfig="$state/kind-$cluster.kubeconfig"

kind_binary() {
    if command -v kind >/dev/null 2>&1; then
        command -v kind
        return
    fi
    local bin="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/tools/kind-$KIND_VERSION"
    if [[ ! -x "$bin/kind" ]]; then
        GOBIN="$bin" GOFLAGS="" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
    fi
    echo "$bin/kind"
}

kind="$(kind_binary)"
if [[ "${1:-}" == "--binary" ]]; then
    echo "$kind"
    exit 0
fi
if [[ "${1:-}" == "down" ]]; then
    exec "$kind" delete cluster --name "$cluster"
fi
mkdir -p "$state"
if ! "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    "$kind" create cluster --name "$cluster" --config "$here/kind.yaml" --kubeconfig "$kubeconfig" --wait 120s
fi
"$kind" get kubeconfig --name "$cluster" >"$kubeconfig"
cd "$repo"
PATH="$(dirname "$kind"):$PATH" # the tests' `kind load` uses the same kind
export PATH
LLMFLEET_TARGET=kind KIND_CLUSTER="$cluster" KUBECONFIG="$kubeconfig" \
    .venv/bin/pytest e2e/shipping "$@"
