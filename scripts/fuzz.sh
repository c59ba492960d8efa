#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (docs/fuzzing.md) and runs each for a while over its committed
# corpus; fails if any target finds a crash, a panic, a leak or a hang.
#
#   scripts/fuzz.sh                  20 s per target (what CI runs, from scripts/test.sh)
#   scripts/fuzz.sh 1800             a long run: 30 min per target
#   scripts/fuzz.sh 600 condition    only the named targets
#   scripts/fuzz.sh 600 --grow       add the new inputs to fuzz/corpus/ (then minimise and commit)
#   scripts/fuzz.sh 600 -- -len_control=0   extra libFuzzer flags after `--`
#   scripts/fuzz.sh 20 --dev         an unoptimised build: half the build time, a tenth of the
#                                    speed; what CI uses, where the build is most of the cost
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sanitizer coverage). A fresh
# machine has only stable Rust, so the build runs on stable with RUSTC_BOOTSTRAP=1, which unlocks
# them; AddressSanitizer works that way (it is cargo-fuzz's default) and is what we use. The
# pinned cargo-fuzz is installed from crates.io into .tools/ (gitignored) the first time.
#
# New inputs go to a scratch corpus under fuzz/target/ unless --grow is given, so a CI run never
# changes the tree. A crash leaves its input in fuzz/artifacts/<target>/ (commit it, with a unit
# test in the owning crate that replays it, once fixed). Prints, per target: executions, seconds,
# executions per second, coverage (edges and features), corpus size, new inputs and the result.
set -euo pipefail

CARGO_FUZZ_VERSION="0.13.2"
TARGETS_ALL=(workflow condition calendar proto_decode)
# One input running longer than this is a hang: libFuzzer stops and reports it as a crash.
INPUT_TIMEOUT_S=10
# Memory a target may use (the build runs ASan, which needs more than a plain build).
RSS_LIMIT_MB=2048

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds=20
grow=false
build_args=()
profile="release with debug assertions"
targets=()
libfuzzer_args=()
while [[ $# -gt 0 ]]; do
    arg="$1"
    shift
    case "$arg" in
        --) libfuzzer_args=("$@"); break ;;
        --grow) grow=true ;;
        --dev) build_args=(--dev); profile="dev (unoptimised)" ;;
        ''|*[!0-9]*) targets+=("$arg") ;;
        *) seconds="$arg" ;;
    esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${TARGETS_ALL[@]}")
fi

cargo_fuzz="$root/.tools/bin/cargo-fuzz"
if [[ ! -x "$cargo_fuzz" || "$("$cargo_fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$root/.tools"
fi

export RUSTC_BOOTSTRAP=1
cd "$root/fuzz"
echo "== building the fuzz targets (AddressSanitizer, $profile)"
build_start=$(date +%s)
"$cargo_fuzz" build ${build_args[@]+"${build_args[@]}"}
echo "built in $(( $(date +%s) - build_start )) s"

scratch="$root/fuzz/target/scratch-corpus"
logs="$root/fuzz/target/fuzz-logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    if [[ ! -d "corpus/$t" ]]; then
        echo "no corpus for target \`$t\` (targets: ${TARGETS_ALL[*]})" >&2
        exit 2
    fi
    if $grow; then
        dirs=("corpus/$t")
    else
        rm -rf "${scratch:?}/$t"
        mkdir -p "$scratch/$t"
        dirs=("$scratch/$t" "corpus/$t")
    fi
    echo "== fuzzing $t for $seconds s"
    log="$logs/$t.log"
    status=0
    "$cargo_fuzz" run ${build_args[@]+"${build_args[@]}"} "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout="$INPUT_TIMEOUT_S" -rss_limit_mb="$RSS_LIMIT_MB" \
        -print_final_stats=1 ${libfuzzer_args[@]+"${libfuzzer_args[@]}"} >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$done_line")
    if [[ $status -eq 0 ]]; then
        result="ok"
    else
        result="FAILED (exit $status; see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written' "$log" | head -10 || true
    fi
    summary+=("$(printf '%-13s %11s %6s %8s %6s %7s %11s %5s  %s' "$t" \
        "$(stat number_of_executed_units)" "$seconds" "$(stat average_exec_per_sec)" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$(stat new_units_added)" "$result")")
done

echo "== fuzzing summary (log per target in fuzz/target/fuzz-logs/)"
printf '%-13s %11s %6s %8s %6s %7s %11s %5s  %s\n' target executions s exec/s cov ft corpus new result
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
