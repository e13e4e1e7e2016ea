#!/usr/bin/env bash
# The latency figures of docs/performance.md ("Latency"), reproducible: each through
# scripts/bench-e2e.sh (a local Mosquitto, a coordinator with its durable journal,
# agents with their durable store, all release builds), with this machine's fsync
# cost printed first, since a durable commit is the floor of every figure here.
#
#   scripts/latency.sh            # every figure (a few minutes)
#   scripts/latency.sh one        # only one task at a time and submit --wait
#
# BIN_DIR=DIR measures another tree's binaries (see scripts/bench-e2e.sh), for a
# before/after on the same machine in the same session.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
case $which in all|one) ;; *) echo "latency: unknown set '$which' (all or one)" >&2; exit 2 ;; esac

# What one durable 4 KiB write costs here: 200 writes with O_DSYNC, in the temp dir the
# bench keeps its journal and stores in.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
dd_out=$(dd if=/dev/zero of="$probe/f" bs=4k count=200 oflag=dsync 2>&1 | tail -1)
secs=$(awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^s,?$/) print $i}' <<<"$dd_out" | tr , .)
awk -v s="$secs" 'BEGIN { printf "fsync cost here: 200 durable 4 KiB writes in %.1f ms, %.3f ms each\n", s * 1000, s * 5 }'

run() { # title, then bench-e2e's arguments; env before it
    echo
    echo "== $1"
    shift
    "$@" 2>&1 | grep -E "tasks/s|lost|latency|submit --wait" || { echo "latency: the run failed" >&2; exit 1; }
}
run "one task at a time (bench --concurrency 1, echo 16 B, 1 agent); then submit --wait x20" \
    env AGENTS=1 SUBMITS=20 scripts/bench-e2e.sh 1000 1 echo 16
[ "$which" = one ] && exit 0
run "open loop, 1,000 tasks/s offered (echo 16 B, 3 agents)" \
    env RATE=1000 scripts/bench-e2e.sh 20000 0 echo 16
run "closed loop, 512 in flight, JSON (sha256 1 KiB, 3 agents)" \
    scripts/bench-e2e.sh 100000 512
run "closed loop, 4,000 in flight, JSON (sha256 1 KiB, 3 agents)" \
    scripts/bench-e2e.sh 100000 4000
run "closed loop, 4,000 in flight, postcard (sha256 1 KiB, 3 agents)" \
    env ENCODING=postcard scripts/bench-e2e.sh 100000 4000
