#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each
# (FUZZ_SECONDS, default 60), starting from the committed seeds in
# fuzz/seeds/<target>/ (which also hold every crash input ever found, so
# each run replays them first) and a growing corpus in target/fuzz-corpus/.
#
# A crash stops the run with a non-zero exit; libFuzzer writes the input to
# fuzz/artifacts/<target>/. Fix the bug, add the input to fuzz/seeds/<target>/
# and a unit test next to the code, so it stays fixed.
#
# cargo-fuzz passes nightly-only flags (-Z...). Our machines have only the
# stable toolchain, which accepts them with RUSTC_BOOTSTRAP=1; the address
# sanitizer runtime ships with it, so the default sanitizer works.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >/dev/null
fi
export RUSTC_BOOTSTRAP=1
for target in topic_parse codecs record_decode; do
    corpus="target/fuzz-corpus/$target"
    mkdir -p "$corpus"
    echo "fuzz: $target for ${seconds}s" >&2
    log="target/fuzz-logs/$target.log"
    mkdir -p target/fuzz-logs
    set +e
    cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/, the log in $log" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran ${seconds}s each without a crash" >&2
