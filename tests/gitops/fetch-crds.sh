#!/usr/bin/env bash
# Fetch the CRDs the GitOps examples are validated against (Argo CD's Application, Flux's
# HelmRelease, OCIRepository and HelmRepository) from the Go module proxy into the llmfleet
# cache, once per version, and print the folder. Called by tests/gitops/test_examples.py.
#
# Argo CD and source-controller: the CRD YAML of their release module, as is.
# helm-controller: the proxy refuses its root module (403), which holds config/crd/bases, but
# serves its API module; the CRD is generated from those types by controller-gen at the
# version Flux generates with, as helm-controller's `make manifests` does. (The same
# controller-gen run on source-controller/api v1.9.6 reproduces source-controller's committed
# CRDs byte for byte.)
set -euo pipefail

ARGOCD=v3.5.8          # v3.6 needs Go >= 1.27
FLUX_SOURCE=v1.9.6     # source-controller; the same Flux release as helm-controller v1.6.5
FLUX_HELM=v1.6.5       #   (both pin github.com/fluxcd/pkg/apis/meta v1.30.2)
CONTROLLER_GEN=v0.21.0 # what source-controller v1.9.6's CRDs were generated with

key="argocd-$ARGOCD.source-$FLUX_SOURCE.helm-$FLUX_HELM.controller-gen-$CONTROLLER_GEN"
out="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/gitops-crds/$key"
if [[ -f "$out/.complete" ]]; then
    echo "$out"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
module_dir() { # the extracted folder of module@version $1
    (cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1") |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}
mkdir -p "$tmp/crds"
argocd="$(module_dir "github.com/argoproj/argo-cd/v3@$ARGOCD")"
cp "$argocd/manifests/crds/application-crd.yaml" "$tmp/crds/"
source="$(module_dir "github.com/fluxcd/source-controller@$FLUX_SOURCE")"
for kind in helmrepositories ocirepositories; do
    cp "$source/config/crd/bases/source.toolkit.fluxcd.io_$kind.yaml" "$tmp/crds/"
done
api="$(module_dir "github.com/fluxcd/helm-controller/api@$FLUX_HELM")"
GOBIN="$tmp/bin" GOFLAGS= go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN"
cp -r "$api" "$tmp/api"
chmod -R u+w "$tmp/api"
(
    cd "$tmp/api"
    GOFLAGS=-mod=readonly go mod download
    "$tmp/bin/controller-gen" crd:crdVersions=v1 paths=./... output:crd:artifacts:config="$tmp/crds"
)
touch "$tmp/crds/.complete"
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$tmp/crds" "$out"
echo "$out"
