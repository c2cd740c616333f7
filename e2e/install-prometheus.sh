#!/usr/bin/env bash
# Build Prometheus with Kubernetes service discovery into the llmfleet cache (once per
# version) and print its path. Debian's prometheus 2.42 package is built without
# kubernetes_sd_configs ("field kubernetes_sd_configs not found"), and the engines are
# discovered through the API server, so it is built from its Go module, with only the
# Kubernetes discovery compiled in (other plugins pull modules the proxy does not serve).
#   bash e2e/install-prometheus.sh --check   # the path if built, else exit 1: never builds
set -euo pipefail
VERSION=v0.316.0   # Prometheus 3.x; its Go module is tagged v0.<minor>.<patch>
dest="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/prometheus/$VERSION-kubernetes-sd"
if [ ! -x "$dest/prometheus" ] && [ "${1:-}" = "--check" ]; then
  echo "prometheus is not built in $dest: run 'make e2e-tools'" >&2
  exit 1
fi
if [ ! -x "$dest/prometheus" ]; then
  mkdir -p "$dest"
  GOBIN="$dest" GOFLAGS=-mod=mod go install -trimpath -ldflags="-s -w" \
    -tags=remove_all_sd,enable_kubernetes_sd \
    "github.com/prometheus/prometheus/cmd/prometheus@$VERSION" >&2
fi
echo "$dest/prometheus"
