#!/usr/bin/env bash
# Installs nginx from Debian's `nginx` package, for tests/api/behind_nginx.rs, which
# runs deploy/nginx.conf in front of palisade; the package's own nginx on :80 is not
# started (scripts/apt-install-quietly.sh): the test starts its own as a child.
# Needs root (or sudo) and apt.
set -euo pipefail
if [ ! -x /usr/sbin/nginx ]; then
    bash "$(dirname "$0")/apt-install-quietly.sh" nginx nginx
else
    echo "nginx is already installed"
fi
/usr/sbin/nginx -v 2>&1
