#!/bin/sh
# Makes the slim virtualenv of an llmfleet image; run in the build stage of
# images/{operator,gateway,engine-sim}.Dockerfile.
#   sh install-venv.sh VENV EXTRAS SRC PACKAGE...
# SRC is the build context. When it holds wheels/*.whl (the context images/build.sh makes on a
# machine whose containers cannot reach PyPI), llmfleet[EXTRAS] is installed from them alone
# (--no-index); otherwise SRC is the repository and pip builds it, fetching the dependencies.
# The result has no pip or setuptools, no tests folders, and byte-code for exactly the modules
# that importing every module of each PACKAGE loads (a build-time check too: a module that
# cannot import in this image fails the build). The .pyc are unchecked-hash: a read-only root
# filesystem cannot cache byte-code and compiling at each start costs seconds, while compiling
# everything would add tens of MB for generated Kubernetes models no process loads.
set -eu
venv="$1"
extras="$2"
src="$3"
shift 3
python3 -m venv "$venv"
pip="$venv/bin/python -m pip --no-cache-dir --disable-pip-version-check -q"
if ls "$src"/wheels/*.whl >/dev/null 2>&1; then
    $pip install --no-index --find-links "$src/wheels" "llmfleet[$extras]"
else
    $pip install "${src}[$extras]"
fi
$pip uninstall -y pip setuptools
site="$(echo "$venv"/lib/python3*/site-packages)"
find "$venv" -depth -name __pycache__ -type d -exec rm -rf {} +
find "$site" -depth -type d \( -name tests -o -name test \) -path "$site/*/*" -exec rm -rf {} +
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
# The sync Kubernetes client's asyncio twin (~70 MB) that nothing here imports: the operator
# uses the sync client, the gateway kubernetes_asyncio.
rm -rf "$site/kubernetes/aio"
"$venv/bin/python" -c '
import importlib, pkgutil, py_compile, sys

site, packages = sys.argv[1], sys.argv[2:]
for name in packages:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        if not info.name.endswith(".__main__"):  # importing one runs it
            importlib.import_module(info.name)
files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
for path in sorted(f for f in files if f and f.startswith(site) and f.endswith(".py")):
    py_compile.compile(
        path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
' "$site" "$@"
