#!/bin/sh
# Installs Debian's prometheus package when no prometheus binary is on PATH.
# Run by `make tools` (a step of `make test-fast`): tests/test_metrics_sources.py runs a real
# Prometheus scraping simulator processes. Needs root (or passwordless sudo) to apt-get.
#   sh tests/tools/install-prometheus-deb.sh --check   # the path if installed, else exit 1
set -eu
if command -v prometheus >/dev/null 2>&1; then
    command -v prometheus
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "prometheus is not installed: run 'make tools'" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends prometheus
# The package starts a system service; the tests run their own Prometheus.
$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
command -v prometheus
