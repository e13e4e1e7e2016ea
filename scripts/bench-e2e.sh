#!/usr/bin/env bash
# End-to-end task throughput through a local Mosquitto: a coordinator, AGENTS agents
# (default 3) and `fog-coordinator bench`, all release builds, each its own process.
#
#   scripts/bench-e2e.sh [TASKS] [CONCURRENCY] [KIND] [PAYLOAD_BYTES]
#   defaults:             100000  1000          sha256 1024
#
# AGENT_BIN=PATH runs that agent binary instead of this tree's release build.
# BIN_DIR=DIR runs DIR's fog-coordinator and fog-agent and builds nothing (another
# tree's binaries, for a before/after on the same machine).
# RATE=R runs the bench open loop, R tasks/s offered whatever comes back (`bench
# --rate`), instead of CONCURRENCY in flight.
# SUBMITS=N then times N `fog-coordinator submit --kind KIND --wait` calls, each a new
# CLI process with its own connection, and prints their median and slowest wall time.
# NODELAY=0 leaves Mosquitto's set_tcp_nodelay off (its default): small messages then
# wait for the receiver's delayed ACK, up to 40 ms per hop.
# ENCODING=postcard (default json) makes the coordinator, the agents and the bench client
# publish postcard instead of JSON. LISTS=1 also counts the assignment and result lists
# on the wire (a mosquitto_sub beside the run; it costs the broker a little), to see how
# many tasks each signed list carries. HTTP_LISTEN=ADDR serves the coordinator's HTTP
# API and /metrics there (off by default), to measure what a scraper or a console costs.
#
# Prints the bench report (throughput, lost and duplicated, the latency distribution).
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-100000}; concurrency=${2:-1000}; kind=${3:-sha256}; bytes=${4:-1024}
agents=${AGENTS:-3}
encoding=${ENCODING:-json}
command -v mosquitto >/dev/null || { echo "bench-e2e: needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
bin_dir=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p fog-agent -p fog-coordinator >/dev/null 2>&1 || cargo build --release -p fog-agent -p fog-coordinator
fi
# AGENT_BIN=path runs another agent build (a package's static one, another opt-level).
agent_bin=${AGENT_BIN:-$bin_dir/fog-agent}
coordinator=$bin_dir/fog-coordinator
nodelay=$([ "${NODELAY:-1}" = 0 ] && echo false || echo true)
work=$(mktemp -d)
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; sleep 0.05; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Generous queues: Mosquitto's defaults (max_queued_messages 1000) drop QoS 1 messages
# to a subscriber that falls behind; end-to-end acks would then report them lost.
printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay %s\nlog_type error\n' "$port" "$nodelay" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & pids+=($!)
sleep 0.5
url="mqtt://127.0.0.1:$port"
# The bench signs its lists as client `bench` (security.client_key), as a site would.
printf 'encoding = "%s"\ndata_dir = "%s/coordinator"\nhttp_listen = "%s"\n[security]\nclient_key = "%s/bench.key"\n[broker]\nurl = "%s"\n' "$encoding" "$work" "${HTTP_LISTEN:-}" "$work" "$url" > "$work/coordinator.toml"
$coordinator keys client bench --dir "$work" --kind "$kind" >> "$work/coordinator.toml" 2>/dev/null
# Secure as a site is: the coordinator signs (its key made here), the agents trust
# that key, and their node keys are approved once they announce them.
mkdir -p "$work/coordinator"
coordinator_key=$($coordinator keys init --dir "$work/coordinator/keys" 2>/dev/null | sed -n "s/^fog-agent trust add '\(.*\)'$/\1/p")
FOG_LOG=warn $coordinator serve --config "$work/coordinator.toml" & pids+=($!)
for i in $(seq "$agents"); do
    printf 'node_id = "bench-%s"\ndata_dir = "%s/a%s"\nencoding = "%s"\nheartbeat_interval_secs = 1.0\n[pool]\nqueue_capacity = 4096\narena_bytes = 16777216\n[trust]\ncoordinator_keys = ["%s"]\nkeys_dir = ""\n[broker]\nurl = "%s"\n' "$i" "$work" "$i" "$encoding" "$coordinator_key" "$url" > "$work/a$i.toml"
    FOG_AGENT_LOG=warn "$agent_bin" run --config "$work/a$i.toml" & pids+=($!)
done
sleep 2
for i in $(seq "$agents"); do
    $coordinator nodes --config "$work/coordinator.toml" approve "bench-$i" >/dev/null
done
sleep 2
# CPU seconds (user + system) each process used during the bench, to see where the
# time goes; the bench client's own from bash's `time`.
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo "?"; }
names=(mosquitto coordinator); for i in $(seq "$agents"); do names+=("agent-$i"); done
before=(); for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
if [ "${LISTS:-0}" = 1 ]; then
    mosquitto_sub -p "$port" -t 'fog/v1/nodes/+/tasks' -t 'fog/v1/nodes/+/results' -F '%t' > "$work/lists" 2>/dev/null & pids+=($!); names+=(lists)
    before+=(0); sleep 0.3
fi
TIMEFORMAT='%U %S'
load=(--concurrency "$concurrency"); [ -n "${RATE:-}" ] && load=(--rate "$RATE")
{ time $coordinator bench --config "$work/coordinator.toml" --tasks "$tasks" "${load[@]}" --kind "$kind" --payload-bytes "$bytes" 2>&3; } 3>&2 2> "$work/client-cpu"
echo "CPU seconds during the bench, by process:"
for k in "${!pids[@]}"; do
    after=$(cpu "${pids[k]}")
    awk -v n="${names[k]}" -v a="$after" -v b="${before[k]}" 'BEGIN { printf "  %-12s %6.2f\n", n, a - b }'
done
awk '{ printf "  %-12s %6.2f\n", "bench client", $1 + $2 }' "$work/client-cpu"
if [ "${LISTS:-0}" = 1 ]; then
    sleep 1
    awk -v t="$tasks" '/\/tasks$/ {a++} /\/results$/ {r++} END {
        printf "lists on the wire: %d assignment lists (%.1f tasks each), %d result lists (%.1f results each)\n", a, t / (a ? a : 1), r, t / (r ? r : 1) }' "$work/lists"
fi
if [ "${SUBMITS:-0}" -gt 0 ]; then
    for _ in $(seq "$SUBMITS"); do
        t0=$(date +%s%N)
        $coordinator submit --config "$work/coordinator.toml" --kind "$kind" --payload hello --wait > /dev/null
        echo $(( ($(date +%s%N) - t0) / 1000 ))
    done | sort -n | awk '{ v[NR] = $1 } END {
        printf "submit --wait, %d calls (a new process and connection each): median %.1f ms, slowest %.1f ms\n", NR, v[int((NR + 1) / 2)] / 1000, v[NR] / 1000 }'
fi
