#!/bin/sh
# Installs Debian's prometheus package when no prometheus binary is on PATH.
# Called by tests/test_metrics_sources.py (a real Prometheus scraping simulator processes)
# and meant for CI before `make test-fast`. Needs root (or passwordless sudo) to apt-get.
set -eu
if command -v prometheus >/dev/null 2>&1; then
    exit 0
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
