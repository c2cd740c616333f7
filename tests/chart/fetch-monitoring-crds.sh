#!/usr/bin/env bash
# Fetch the prometheus-operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule) the chart's
# monitoring objects are validated against, and print the folder that holds them.
#   bash tests/chart/fetch-monitoring-crds.sh
# They come from the Go module proxy: the prometheus-operator module zip carries
# example/prometheus-operator-crd/*.yaml. Cached by version in ~/.cache/llmfleet; nothing is
# committed. Needs `go` (the control plane's build needs it too).
set -euo pipefail
VERSION=v0.85.0
MODULE=github.com/prometheus-operator/prometheus-operator
KINDS="servicemonitors podmonitors prometheusrules"
dest="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/prometheus-operator-crds-$VERSION"
if [ ! -f "$dest/.complete" ]; then
  tmp=$(mktemp -d)
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
  # A throwaway module cache: only the three files are kept.
  dir=$(cd "$tmp" && GOMODCACHE="$tmp/mod" GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$dest"
  for kind in $KINDS; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$dest/"
  done
  chmod -R u+w "$dest"
  touch "$dest/.complete"
fi
echo "$dest"
