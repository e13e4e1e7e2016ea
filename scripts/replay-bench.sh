#!/usr/bin/env bash
# Backlog replay: an agent comes back to its broker with N readings stored (default
# 10,000, ~28 hours of outage at the 10 s default interval) and replays them at the
# configured rate (default: the agent's, 100/s) while making live readings every
# second. Prints the time the replay took, its rate, whether it was complete, in
# order and free of duplicates, and how late the live readings were meanwhile.
#
#   scripts/replay-bench.sh [N] [RATE_PER_SEC]
#
# Uses Mosquitto when installed (apt-get install mosquitto), else the embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p fog-e2e --bin fog-replay-bench --bin fog-test-broker >/dev/null 2>&1 \
    || cargo build --release -p fog-e2e --bin fog-replay-bench --bin fog-test-broker
if command -v mosquitto >/dev/null; then export FOG_E2E_MOSQUITTO=1; fi
exec target/release/fog-replay-bench "$@"
