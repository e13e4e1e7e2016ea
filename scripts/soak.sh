#!/usr/bin/env bash
# Soak: run fog-agent (release build) against a local Mosquitto for SECONDS, with
# readings every second, and sample its resident memory (VmRSS) and open file
# descriptors once a minute. With WITH_COORDINATOR=1 (the default) a coordinator runs
# too and a steady task load (a bench of 200 sha256 tasks every 10 s) goes through the
# agent. Every OUTAGE_EVERY seconds (default 600; 0 for none) the broker is stopped
# for 60 s, so the backlog is written and replayed during the soak as well.
#
#   scripts/soak.sh SECONDS                # e.g. scripts/soak.sh 1800
#   WITH_COORDINATOR=0 scripts/soak.sh 600
#
# Prints one line per sample and a verdict: RSS growth between the second sample
# (after warm-up) and the last, and the fd count range. Needs mosquitto
# (apt-get install mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:?usage: scripts/soak.sh SECONDS}
with_coord=${WITH_COORDINATOR:-1}
outage_every=${OUTAGE_EVERY:-600}
sample_every=${SAMPLE_EVERY:-60}

command -v mosquitto >/dev/null || { echo "soak: needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
cargo build --release -p fog-agent -p fog-coordinator >/dev/null 2>&1 || cargo build --release -p fog-agent -p fog-coordinator
agent_bin=target/release/fog-agent
coord_bin=target/release/fog-coordinator

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}" ${broker_pid:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n' "$port" > "$work/mosquitto.conf"
start_broker() {
    mosquitto -c "$work/mosquitto.conf" 2>>"$work/broker.log" & broker_pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
}
start_broker

# The coordinator's signing key, made ahead so the agent can trust it.
coordinator_key=""
if [ "$with_coord" = 1 ]; then
    coordinator_key=$("$coord_bin" keys init --dir "$work/coordinator/keys" 2>/dev/null | sed -n "s/^fog-agent trust add '\(.*\)'$/\1/p")
fi
cat > "$work/agent.toml" <<TOML
node_id = "soak"
data_dir = "$work/agent"
heartbeat_interval_secs = 1.0
metrics_interval_secs = 1.0
[trust]
coordinator_keys = [$( [ -n "$coordinator_key" ] && printf '"%s"' "$coordinator_key" )]
keys_dir = ""
[broker]
url = "mqtt://127.0.0.1:$port"
TOML
FOG_AGENT_LOG=warn "$agent_bin" run --config "$work/agent.toml" 2>"$work/agent.log" & agent_pid=$!
pids+=("$agent_pid")

if [ "$with_coord" = 1 ]; then
    # The bench signs as client `soak` (security.client_key), which [clients.soak] admits.
    cat > "$work/coordinator.toml" <<TOML
data_dir = "$work/coordinator"
[security]
client_key = "$work/soak.key"
[broker]
url = "mqtt://127.0.0.1:$port"
TOML
    "$coord_bin" keys client soak --dir "$work" --kind sha256 >>"$work/coordinator.toml" 2>/dev/null
    FOG_LOG=warn "$coord_bin" serve --config "$work/coordinator.toml" 2>"$work/coordinator.log" &
    pids+=("$!")
    # Approve the agent's node key once it has announced it.
    for _ in $(seq 50); do
        "$coord_bin" nodes --config "$work/coordinator.toml" approve soak >/dev/null 2>&1 && break
        sleep 0.2
    done
    (
        while true; do
            "$coord_bin" bench --config "$work/coordinator.toml" --tasks 200 --concurrency 20 \
                --kind sha256 --payload-bytes 1024 >>"$work/bench.log" 2>&1 || true
            sleep 10
        done
    ) &
    pids+=("$!")
fi

sample() {
    local rss fds
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
    fds=$(ls "/proc/$agent_pid/fd" | wc -l)
    printf '%6d s  rss %6.2f MiB  fds %3d\n' "$1" "$(echo "$rss/1024" | bc -l)" "$fds"
    echo "$1 $rss $fds" >>"$work/samples"
}

echo "soak: agent pid $agent_pid, broker 127.0.0.1:$port, coordinator: $with_coord, outage every ${outage_every}s, ${duration}s"
start=$(date +%s)
next_sample=0
next_outage=$outage_every
while true; do
    now=$(( $(date +%s) - start ))
    [ "$now" -ge "$duration" ] && break
    kill -0 "$agent_pid" 2>/dev/null || { echo "soak: the agent died; its log:" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
    if [ "$now" -ge "$next_sample" ]; then
        sample "$now"
        while [ "$next_sample" -le "$now" ]; do next_sample=$(( next_sample + sample_every )); done
    fi
    if [ "$outage_every" -gt 0 ] && [ "$now" -ge "$next_outage" ] && [ $(( now + 90 )) -lt "$duration" ]; then
        echo "        broker stopped for 60 s"
        kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
        sleep 60
        start_broker
        echo "        broker back"
        [ -z "${first_recovery:-}" ] && first_recovery=$(( $(date +%s) - start + 60 ))
        next_outage=$(( next_outage + outage_every ))
    fi
    sleep 1
done
sample "$(( $(date +%s) - start ))"
clean=$(grep -c "lost 0, duplicated 0" "$work/bench.log" 2>/dev/null || true)
runs=$(grep -c "duplicated" "$work/bench.log" 2>/dev/null || true)
python3 - "$work/samples" "$clean" "$runs" "${first_recovery:-}" <<'PY'
import sys
rows = [tuple(int(x) for x in l.split()) for l in open(sys.argv[1]) if l.strip()]
# Warm-up: the first minute, and the first outage (the store's page cache fills once).
base = rows[1] if len(rows) > 2 else rows[0]
if len(sys.argv) > 4 and sys.argv[4]:
    after = [r for r in rows if r[0] >= int(sys.argv[4])]
    if len(after) >= 2:
        base = after[0]
last = rows[-1]
rss = [r[1] for r in rows[1:]] or [rows[0][1]]
fds = [r[2] for r in rows]
print(f"samples {len(rows)}; RSS at {base[0]} s (after warm-up) {base[1]/1024:.2f} MiB, last {last[1]/1024:.2f} MiB, "
      f"min {min(rss)/1024:.2f}, max {max(rss)/1024:.2f} MiB; growth {(last[1]-base[1])/1024:+.2f} MiB")
print(f"open fds: min {min(fds)}, max {max(fds)}, last {last[2]}")
if sys.argv[3] and sys.argv[3] != "0":
    print(f"task bench runs: {sys.argv[3]}, with zero lost and zero duplicated: {sys.argv[2]} "
          "(runs overlapping a broker outage lose their in-flight client replies)")
PY
echo "agent warnings and errors logged: $(grep -cE 'WARN|ERROR' "$work/agent.log" || true)"
