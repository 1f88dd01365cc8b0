#!/usr/bin/env bash
# Installs a Debian package whose postinst would start a service (nginx on :80,
# Prometheus on :9090) without starting it: a policy-rc.d that refuses every start is
# in place for the install (the one already there, if any, is put back after), and where
# systemd runs the service is disabled too, so nothing is left running or starts at the
# next boot. Used by scripts/install-nginx.sh and scripts/install-promtool.sh.
# Usage: apt-install-quietly.sh PACKAGE SERVICE. Needs root (or sudo) and apt.
set -euo pipefail
package=$1 service=$2
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
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$service.service" >/dev/null 2>&1 || true
fi
