#!/usr/bin/env bash
# Installs axe-core, which the accessibility browser tests inject into the page, at the
# version pinned in tests/browser/package-lock.json, into tests/browser/node_modules/
# (git-ignored). Needs node and npm (Debian: apt-get install npm); install-browser.sh calls it.
set -euo pipefail
cd "$(dirname "$0")/../tests/browser"
if ! command -v npm >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq npm >/dev/null
fi
# ci: exactly the lock file's versions and hashes, and no install scripts run.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "axe-core $(node -p 'require("axe-core/package.json").version') in tests/browser/node_modules"
