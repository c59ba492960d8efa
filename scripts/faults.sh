#!/usr/bin/env bash
# The long run of the fault matrix (docs/reliability.md): the store's own crash test
# (crates/engine/tests/store_crash.rs) and the engine SIGKILLed under load, embedded and as an
# engine node over NATS (tests/e2e/faults.rs), KILLS times each. CI runs the same tests with a
# few kills each. Full output in target/faults.log.
# Usage: scripts/faults.sh [KILLS] [SEED]   (defaults: 50, the tests' own seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-50}"
export LIENTHONG_FAULT_KILLS="$kills" LIENTHONG_CRASH_ROUNDS="$kills"
if [[ -n "${2:-}" ]]; then
    export LIENTHONG_FAULT_SEED="$2" LIENTHONG_CRASH_SEED="$2"
fi
cargo build --locked --bin lienthong
scripts/nats-server.sh >/dev/null
log=target/faults.log
started=$(date +%s)
status=0
{
    cargo test --locked -p lienthong-engine --test store_crash -- --nocapture &&
        cargo test --locked -p lienthong-e2e --test faults -- --nocapture --test-threads 1
} >"$log" 2>&1 || status=$?
grep -oE "[0-9]+ SIGKILL rounds.*|faults: (embedded|distributed):.*|test [a-z_]+ \.\.\. (ok|FAILED)|panicked.*" "$log" || true
echo "fault matrix: $kills kills per scenario, $(( $(date +%s) - started )) s, exit $status (log: $log)"
exit "$status"
