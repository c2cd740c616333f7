#!/usr/bin/env bash
# Build the local e2e control plane into a cache folder outside the repo and
# print that folder. Called by e2e/cluster.sh; safe to run by hand.
#
# One `go build` compiles the binaries of this module at once, so packages they
# share are compiled once: kube (apiserver + controller-manager + scheduler in
# one multi-call binary, one link), etcd and the LeaderWorkerSet controller.
# kwok needs newer k8s.io libraries than Kubernetes 1.34 ships, so it is built
# by `go install` from its own module at the release pinned below.
# The folder name carries every pinned version plus a hash of the inputs, so a
# version bump rebuilds and a second run returns at once.
set -euo pipefail

KWOK_VERSION=v0.8.0 # needs go >= 1.26.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/controlplane"

pin() { # the version go.mod requires for module $1
    awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$here/go.mod"
}

k8s="$(pin k8s.io/kubernetes)"
etcd="$(pin go.etcd.io/etcd/server/v3)"
lws="$(pin sigs.k8s.io/lws)"
kwok="$KWOK_VERSION"
go_version="$(go env GOVERSION)"
inputs_hash="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here"/cmd/*/*.go | sha256sum | cut -c1-10)"
key="k8s-$k8s.etcd-$etcd.lws-$lws.kwok-$kwok.$go_version.$inputs_hash"
out="$cache_root/$key"

if [[ -f "$out/.complete" ]]; then
    echo "$out"
    exit 0
fi

echo "building the control plane into $out (cold: several minutes on 2 cores)" >&2
tmp="$cache_root/.building-$key-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# kube-apiserver reports this as its version (/version, kubectl version, helm's kubeVersion).
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$k8s -X $version_pkg.gitMajor=1"
ldflags+=" -X $version_pkg.gitMinor=$(cut -d. -f2 <<<"${k8s#v}") -X $version_pkg.gitTreeState=clean"
ldflags+=" -X sigs.k8s.io/lws/pkg/version.GitVersion=$lws"

start=$SECONDS
(
    cd "$here"
    GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" \
        ./cmd/kube ./cmd/etcd sigs.k8s.io/lws/cmd
)
mv "$tmp/cmd" "$tmp/lws-controller"
echo "kube, etcd, lws-controller built in $((SECONDS - start)) s" >&2
GOBIN="$tmp" GOFLAGS= go install -trimpath -buildvcs=false -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$kwok"

# Manifests that belong to the pinned LWS release, read from its module.
lws_dir="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/lws)"
cp "$lws_dir/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml" "$tmp/lws-crd.yaml"
cp "$lws_dir/config/webhook/manifests.yaml" "$tmp/lws-webhooks.yaml"

echo "$key built in $((SECONDS - start)) s" >"$tmp/.complete"
mkdir -p "$cache_root"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out"
