#!/usr/bin/env bash
# Build the kstatus command (main.go beside this file, sigs.k8s.io/cli-utils at the
# version go.mod pins) into a cache folder outside the repo and print the binary's path.
# Called by tests/gitops; safe to run by hand: `"$(bash gitops/kstatus/build.sh)" FILE`.
# The folder name carries the cli-utils and Go versions plus a hash of the inputs, so a
# bump rebuilds and a second run returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/kstatus"

cli_utils="$(awk '$1 == "sigs.k8s.io/cli-utils" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
go_version="$(go env GOVERSION)"
inputs_hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh" | sha256sum | cut -c1-10)"
key="cli-utils-$cli_utils.$go_version.$inputs_hash"
out="$cache_root/$key"

if [[ -x "$out/kstatus" ]]; then
    echo "$out/kstatus"
    exit 0
fi

echo "building kstatus into $out" >&2
start=$SECONDS
tmp="$cache_root/.building-$key-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
(
    cd "$here"
    GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/kstatus" .
)
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out/kstatus"
