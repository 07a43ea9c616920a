#!/usr/bin/env bash
# The no-loss-across-restart tests as a longer soak: every backend's broker
# is killed (or stopped) and restarted while N messages (default 20000) are
# sent and consumed. Prints each backend's sent/confirmed/received/lost line.
#   scripts/soak.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export PUBSUB_SOAK_MESSAGES="${1:-20000}" PUBSUB_REQUIRE_BROKERS=1
bash scripts/brokers.sh
cargo nextest run --workspace --all-features --no-capture -E 'test(restart_loses_no_confirmed_message)' 2>&1 |
    grep -E "restart \(|PASS|FAIL|Summary"
