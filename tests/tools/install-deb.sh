#!/bin/sh
# Installs a Debian package when its binary is not on PATH.
#   sh tests/tools/install-deb.sh BINARY [PACKAGE]   # PACKAGE defaults to BINARY
# Run by `make tools` (a step of `make test-fast`) for the real servers the fast tests start
# themselves: prometheus (tests/test_metrics_sources.py scrapes simulator processes) and
# redis-server (the gateway's shared tenant quotas). Needs root (or passwordless sudo).
# Waits for the dpkg lock: other installs may run at the same time.
set -eu
binary="$1"
package="${2:-$1}"
if command -v "$binary" >/dev/null 2>&1; then
    command -v "$binary"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$package"
# The package may start a system service; the tests run their own servers.
$SUDO systemctl disable --now "$package" >/dev/null 2>&1 || true
command -v "$binary"
