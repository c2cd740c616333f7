#!/usr/bin/env bash
# Build Toxiproxy's server into the llmfleet cache (once per version) and print its path.
#   bash tests/tools/install-toxiproxy.sh --check   # the path if built, else exit 1: never builds
# tests/regions.py injects WAN latency and faults between network namespaces with it: this
# kernel has no netem qdisc. Built from the Go module proxy (`go install`, under a minute
# cold); the module's main package is named `server`, installed here as `toxiproxy-server`.
set -euo pipefail
VERSION=v2.12.0   # go directive 1.23.0
dest="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/tools/toxiproxy-$VERSION"
if [ ! -x "$dest/toxiproxy-server" ] && [ "${1:-}" = "--check" ]; then
  echo "toxiproxy is not built in $dest: run 'make tools'" >&2
  exit 1
fi
if [ ! -x "$dest/toxiproxy-server" ]; then
  mkdir -p "$dest"
  tmp="$(mktemp -d "$dest/.building-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" GOFLAGS= go install -trimpath -buildvcs=false \
    -ldflags="-s -w -X github.com/Shopify/toxiproxy/v2.Version=$VERSION" \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" >&2
  mv "$tmp/server" "$dest/toxiproxy-server"
fi
echo "$dest/toxiproxy-server"
