#!/usr/bin/env bash
# The project's test command (README.md). Installs whatever the tests need that a fresh machine
# lacks, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin lienthong
cargo test --workspace --locked --no-fail-fast "$@"
