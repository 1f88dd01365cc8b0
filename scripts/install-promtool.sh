#!/usr/bin/env bash
# Installs promtool, which checks and unit-tests deploy/alerts.yml, from Debian's
# `prometheus` package. That package's postinst would start a Prometheus server on
# :9090: a policy-rc.d that refuses every start is in place for the install (the one
# already there, if any, is put back after), so nothing is left running.
# Needs root (or sudo) and apt.
set -euo pipefail
if command -v promtool >/dev/null; then
    echo "promtool is already installed"
    promtool --version 2>&1 | head -n 1
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
    saved=$(mktemp)
    $SUDO cp -p "$policy" "$saved"
fi
restore() {
    if [ -n "$saved" ]; then
        $SUDO cp -p "$saved" "$policy"
        rm -f "$saved"
    else
        $SUDO rm -f "$policy"
    fi
}
trap restore EXIT
# 101: "action forbidden by policy", so invoke-rc.d starts no service.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod 755 "$policy"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# Where systemd runs, the unit must not come up at the next boot either.
if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
promtool --version 2>&1 | head -n 1
