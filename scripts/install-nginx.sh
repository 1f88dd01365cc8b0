#!/usr/bin/env bash
# Installs nginx from Debian's `nginx` package, for tests/api/behind_nginx.rs, which
# runs deploy/nginx.conf in front of palisade. The package's postinst would start nginx
# on :80: a policy-rc.d that refuses every start is in place for the install (the one
# already there, if any, is put back after), as scripts/install-promtool.sh does, so
# nothing is left running and the test starts its own nginx as a child.
# Needs root (or sudo) and apt.
set -euo pipefail
if [ -x /usr/sbin/nginx ]; then
    echo "nginx is already installed"
    /usr/sbin/nginx -v 2>&1
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
$SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
# Where systemd runs, the unit must not come up at the next boot either.
if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi
/usr/sbin/nginx -v 2>&1
