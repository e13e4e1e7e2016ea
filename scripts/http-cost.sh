#!/usr/bin/env bash
# What serving the HTTP API, /metrics and the console costs the coordinator's task
# throughput: scripts/bench-e2e.sh without the HTTP listener, then with it, a scraper
# that fetches /metrics and /api/v1/nodes every INTERVAL seconds (default 1;
# Prometheus scrapes every 15 s) and a headless chromium showing the console (its
# event stream, a redraw a second; BROWSER=0 leaves it out), alternating, ROUNDS
# times (default 2). The browser's own CPU is on the same 2 cores as everything else,
# so this counts against the coordinator more than it costs it.
#
#   scripts/http-cost.sh [TASKS] [CONCURRENCY] [KIND] [PAYLOAD_BYTES]
#   defaults:             100000  512           echo   16
#
# BIN_DIR and the other variables of scripts/bench-e2e.sh apply. Prints each run's
# tasks/s and the ratio of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-100000}; concurrency=${2:-512}; kind=${3:-echo}; bytes=${4:-16}
rounds=${ROUNDS:-2}; interval=${INTERVAL:-1}
command -v curl >/dev/null || { echo "http-cost: needs curl (apt-get install curl)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() {
    scripts/bench-e2e.sh "$tasks" "$concurrency" "$kind" "$bytes" 2>&1 | sed -n 's/^[0-9]* tasks in [0-9.]*s: \([0-9]*\) tasks\/s$/\1/p'
}
without=(); with=(); scrapes=0
for r in $(seq "$rounds"); do
    without+=("$(HTTP_LISTEN= run)")
    port=$(free_port)
    ( while :; do
          curl -s -o /dev/null "http://127.0.0.1:$port/metrics" && echo m
          curl -s -o /dev/null "http://127.0.0.1:$port/api/v1/nodes" && echo n
          sleep "$interval"
      done ) > /tmp/http-cost-scrapes.$$ 2>/dev/null &
    scraper=$!
    browser=
    if [ "${BROWSER:-1}" = 1 ] && [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
        # Waits for the coordinator: the page reconnects its event stream by itself.
        ( sleep 3; exec "${CHROMIUM:-/usr/bin/chromium}" --headless --no-sandbox --disable-gpu --disable-quic \
            --no-first-run --disable-background-networking --disable-component-update --disable-sync \
            --user-data-dir="$(mktemp -d)" --remote-debugging-port=0 "http://127.0.0.1:$port/" ) >/dev/null 2>&1 &
        browser=$!
    fi
    with+=("$(HTTP_LISTEN="127.0.0.1:$port" run)")
    kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true
    [ -n "$browser" ] && { pkill -P "$browser" 2>/dev/null; kill "$browser" 2>/dev/null; wait "$browser" 2>/dev/null || true; }
    scrapes=$((scrapes + $(wc -l < /tmp/http-cost-scrapes.$$)))
    rm -f /tmp/http-cost-scrapes.$$
    echo "round $r: without HTTP ${without[-1]} tasks/s, with HTTP, a scraper${browser:+ and a browser} ${with[-1]} tasks/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
m0=$(median "${without[@]}"); m1=$(median "${with[@]}")
echo "median without ${m0} tasks/s, with ${m1} tasks/s: $(awk -v a="$m1" -v b="$m0" 'BEGIN {printf "%.3f", a / b}') x; ${scrapes} successful requests by the scraper"
