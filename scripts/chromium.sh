#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver from Debian's packages (`chromium`,
# `chromium-driver`: /usr/bin/chromium, /usr/bin/chromedriver) for the browser test of the live
# board (tests/e2e/board.rs). scripts/test.sh calls it.
#
# Idempotent and quick when both are there: apt runs only when one is missing. Needs root (or
# sudo) for apt-get; without either it says what to install and fails, so that the browser test
# is never silently skipped.
set -euo pipefail

die() {
    echo "chromium.sh: $*" >&2
    exit 1
}

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null | head -n1) and chromedriver are installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found: install Chromium and its driver so that /usr/bin/chromium and /usr/bin/chromedriver exist"
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
        die "not root and no sudo: run \`apt-get install -y chromium chromium-driver\` as root"
    sudo="sudo"
fi
echo "chromium.sh: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || die "apt-get update failed (are Debian's mirrors reachable?)"
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null ||
    die "apt-get install chromium chromium-driver failed"
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] ||
    die "installed, yet /usr/bin/chromium or /usr/bin/chromedriver is missing"
echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null | head -n1) ready"
