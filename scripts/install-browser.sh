#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium and ChromeDriver, and axe-core
# for the accessibility check (scripts/install-axe.sh, pinned, into tests/browser/).
# `cargo test` runs the browser tests when /usr/bin/chromium and /usr/bin/chromedriver
# exist, and skips them (saying so) when they do not. Needs root (or sudo) and apt.
set -euo pipefail
bash "$(dirname "$0")/install-axe.sh"
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium and chromedriver are already installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
