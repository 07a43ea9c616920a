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
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first, so that nextest's summary closes the run.
    cargo test --workspace --all-features --doc
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast
fi
