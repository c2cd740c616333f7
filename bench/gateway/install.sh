#!/usr/bin/env bash
# Install what bench/gateway/run.py compares and drives, each cached by version:
#   vllm-router (PyPI)      -> ~/.cache/llmfleet/bench-venv
#   litellm[proxy] (PyPI)   -> ~/.cache/llmfleet/litellm-venv
#   vegeta (Go module)      -> ~/.cache/llmfleet/tools/vegeta-$VEGETA_VERSION/vegeta
# The engine stand-in and the stream generator (Go, beside this script) are built by run.py.
#
#   bash bench/gateway/install.sh
set -euo pipefail

VLLM_ROUTER_VERSION="0.1.17"
LITELLM_VERSION="1.108.7"
VEGETA_VERSION="12.13.0"
CACHE_DIR="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}"
PYTHON="${PYTHON:-python3.11}"

# A venv at $1 holding $2==$3 (with the pip spec $4): created or upgraded when the version differs.
venv_with() {
    local venv="$1" name="$2" version="$3" spec="$4"
    if [[ -x "$venv/bin/python" ]] &&
        [[ "$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" == "$version" ]]; then
        return
    fi
    echo "installing $spec into $venv" >&2
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q -U pip
    "$venv/bin/pip" install -q "$spec"
}

venv_with "$CACHE_DIR/bench-venv" vllm-router "$VLLM_ROUTER_VERSION" "vllm-router==$VLLM_ROUTER_VERSION"
venv_with "$CACHE_DIR/litellm-venv" litellm "$LITELLM_VERSION" "litellm[proxy]==$LITELLM_VERSION"

VEGETA_DIR="$CACHE_DIR/tools/vegeta-$VEGETA_VERSION"
if [[ ! -x "$VEGETA_DIR/vegeta" ]]; then
    echo "building vegeta $VEGETA_VERSION into $VEGETA_DIR" >&2
    GOBIN="$VEGETA_DIR" go install "github.com/tsenart/vegeta/v12@v$VEGETA_VERSION"
fi
echo "gateway bench tools ready in $CACHE_DIR" >&2
