#!/usr/bin/env bash
# Creates or updates the project-local Python environment `.tools/venv` with the exact pins of
# examples/python/requirements.txt (grpcio, grpcio-tools, protobuf), for the Python integrator
# example and its end-to-end test (tests/e2e/python.rs), and of tests/browser/requirements.txt
# (selenium), for the browser test of the live board (tests/e2e/board.rs). scripts/test.sh
# calls it.
#
# Idempotent and quick when nothing changed: a stamp file in the venv holds the SHA-256 of the
# requirements and the interpreter's version; pip runs only when they differ or a pinned package
# does not import. Set PYTHON to choose the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/venv
requirements=(examples/python/requirements.txt tests/browser/requirements.txt)
imports='import grpc, grpc_tools.protoc, google.protobuf, selenium.webdriver'
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

die() {
    echo "python-env.sh: $*" >&2
    exit 1
}

command -v "$python" >/dev/null 2>&1 ||
    die "\`$python\` not found: install Python >= 3.10 with venv and pip (Debian: apt-get install python3 python3-venv python3-pip), or set PYTHON=/path/to/python3"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$("$python" --version 2>&1) is too old: grpcio-tools needs Python >= 3.10 (set PYTHON=/path/to/python3)"
for r in "${requirements[@]}"; do
    [ -f "$r" ] || die "$r is missing"
done

want="$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1) $("$python" --version 2>&1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    "$venv/bin/python" -c "$imports" 2>/dev/null; then
    echo "python-env.sh: $venv is up to date (${requirements[*]} unchanged)"
    exit 0
fi

# A venv made by another interpreter version (or a broken one) is rebuilt rather than patched.
if [ -e "$venv" ] && [ "$("$venv/bin/python" --version 2>&1)" != "$("$python" --version 2>&1)" ]; then
    echo "python-env.sh: $venv was made by another interpreter; rebuilding it"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "python-env.sh: creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv" ||
        die "\`$python -m venv\` failed: install the venv module (Debian: apt-get install python3-venv)"
fi
"$venv/bin/python" -m pip --version >/dev/null 2>&1 ||
    die "pip is not available in $venv: install it (Debian: apt-get install python3-pip python3-venv) and delete $venv"

echo "python-env.sh: installing ${requirements[*]} into $venv"
rm -f "$stamp"
args=()
for r in "${requirements[@]}"; do
    args+=(--requirement "$r")
done
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${args[@]}" ||
    die "pip could not install ${requirements[*]} (is PyPI reachable?)"
"$venv/bin/python" -c "$imports" ||
    die "the pinned packages were installed but do not import"
echo "$want" >"$stamp"
echo "python-env.sh: $venv ready"
