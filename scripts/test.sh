#!/usr/bin/env bash
# The README's test command: start the brokers, check formatting and lints,
# and run every test of the workspace (all backends compiled in) against them,
# then the Kafka and Pulsar conformance suites again against the second
# implementation of each protocol.
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
log="$PWD/target/test.log"
: >"$log"
status=0
# Every runner's output goes to the terminal and to $log, whose
# "test result:" lines are added up at the end.
run() { "$@" 2>&1 | tee -a "$log" || status=1; }

# The whole workspace with every backend, doctests (and the README's
# snippets) included.
run cargo test --workspace --all-features --no-fail-fast
# With default features only: a backend that is not compiled in names its feature.
run cargo test -p pubsub --test env_config

# The second implementations, through the conformance binaries just built
# (no rebuild): noida-db for Kafka, pulsar-lite for Pulsar.
conformance_binary() { # package
    cargo test -p "$1" --all-features --test conformance --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance":
        print(m["executable"])'
}
echo "== Kafka conformance on noida-db 0.2.2 (127.0.0.1:9094)"
# noida-db never completes a rebalance when a second member joins a group:
# the four cases that need one are Apache Kafka's alone (README, Kafka), and
# listed as skipped on noida in the report.
kafka_bin=$(conformance_binary pubsub-kafka)
noida_skips=(concurrent_producers_and_consumers unsubscribe_deletes_position shared_scale_down shared_scale_up_keeps_held)
skip_args=()
for case in "${noida_skips[@]}"; do
    skip_args+=(--skip "$case")
    echo "SKIPPED kafka on noida-db $case: noida never completes a rebalance when a second member joins (passes on Apache Kafka)" >>"$PUBSUB_TEST_REPORT"
done
run env KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:9094?broker=noida' "$kafka_bin" --test-threads 2 "${skip_args[@]}"
if [ "${PUBSUB_TANSU:-}" = "1" ]; then
    echo "== Kafka conformance on Tansu 0.6 (127.0.0.1:9095)"
    run env KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:9095?broker=tansu' "$kafka_bin" --test-threads 2
fi
echo "== Pulsar conformance on pulsar-lite 0.2 (127.0.0.1:6650, behind its relay)"
pulsar_bin=$(conformance_binary pubsub-pulsar)
run env PULSAR_URL='pulsar://127.0.0.1:6650?broker=lite' "$pulsar_bin" --test-threads 2

echo "== fuzz (FUZZ_SECONDS=${FUZZ_SECONDS:=20} per target)"
FUZZ_SECONDS="$FUZZ_SECONDS" scripts/fuzz.sh || status=1

echo "== unsupported and skipped cases"
sort -u "$PUBSUB_TEST_REPORT"
[ -s "$PUBSUB_TEST_REPORT" ] || echo "(none)"

# On a failure, what the brokers complained of: their logs are gone with
# the machine, and a broker that went wrong explains a whole block of failures.
if [ "$status" -ne 0 ]; then
    for broker_log in target/brokers/*.log target/brokers/*-cluster/*/*.log; do
        [ -f "$broker_log" ] || continue
        echo "== last warnings and errors of $broker_log"
        # (a log without any is no reason to stop before the counts: set -e)
        { grep -E 'WARN|ERROR|FATAL|Exception' "$broker_log" || true; } | tail -n 15 | cut -c1-400
    done
fi

# Close with the runners' counts added up, as one plain line.
read -r passed failed ignored < <(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$log" |
    awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}')
echo "tests: ${passed} passed, ${failed} failed, ${ignored} skipped"
[ "$failed" -eq 0 ] || status=1
exit "$status"
