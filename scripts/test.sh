#!/usr/bin/env bash
# The README's test command: start the brokers, check formatting and lints,
# and run every test of the workspace (all backends compiled in) against them.
#
# Under CI=true (or PUBSUB_REQUIRE_BROKERS=1) a broker that cannot be
# started fails the run; elsewhere its tests print SKIPPED and pass.
set -euo pipefail
cd "$(dirname "$0")/.."

required() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ] || [ "${PUBSUB_REQUIRE_BROKERS:-}" = "1" ]; }

echo "== brokers"
if ! scripts/brokers.sh; then
    if required; then
        echo "a broker is missing and CI=true / PUBSUB_REQUIRE_BROKERS=1: failing" >&2
        exit 1
    fi
    echo "some brokers are missing: their tests will be skipped" >&2
fi

echo "== fmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== tests"
# Cases a backend does not support, and broker tests skipped for want of a
# broker, are appended here by the conformance suite.
mkdir -p target
export PUBSUB_TEST_REPORT="$PWD/target/test-report.txt"
: >"$PUBSUB_TEST_REPORT"
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo test --workspace --all-features --doc
    # With default features: a backend that is not compiled in names its feature.
    cargo nextest run -p pubsub --test env_config
    cargo nextest run --workspace --all-features --no-fail-fast 2>&1 | tee target/nextest.log || status=$?
else
    cargo test --workspace --all-features --no-fail-fast 2>&1 | tee target/nextest.log || status=$?
fi

echo "== fuzz (FUZZ_SECONDS=${FUZZ_SECONDS:=20} per target)"
FUZZ_SECONDS="$FUZZ_SECONDS" scripts/fuzz.sh || status=1

echo "== unsupported and skipped cases"
sort -u "$PUBSUB_TEST_REPORT"
[ -s "$PUBSUB_TEST_REPORT" ] || echo "(none)"

# Close with the runner's own counts, as a plain line.
summary=$(grep -E "tests run: [0-9]+ passed" target/nextest.log | tail -1 || true)
passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
skipped=$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$summary")
if [ -n "$passed" ]; then
    echo "tests: ${passed} passed, ${failed:-0} failed, ${skipped:-0} skipped"
fi
exit "$status"
