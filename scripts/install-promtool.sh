#!/usr/bin/env bash
# Installs promtool, which checks and unit-tests deploy/alerts.yml, from Debian's
# `prometheus` package, without starting the package's Prometheus server on :9090
# (scripts/apt-install-quietly.sh). Needs root (or sudo) and apt.
set -euo pipefail
if ! command -v promtool >/dev/null; then
    bash "$(dirname "$0")/apt-install-quietly.sh" prometheus prometheus
else
    echo "promtool is already installed"
fi
promtool --version 2>&1 | head -n 1
