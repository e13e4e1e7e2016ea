#!/usr/bin/env bash
# Agent footprint: run fog-agent (release build) against a local Mosquitto with full
# readings every second for DURATION seconds (default 60), then print its resident
# memory (VmRSS, VmHWM) and the CPU-seconds it used, per minute.
#
#   scripts/footprint.sh [DURATION_SECS]
#
# Needs mosquitto (apt-get install mosquitto). Starts its own broker on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}

command -v mosquitto_sub >/dev/null || { echo "footprint: needs mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)" >&2; exit 1; }
cargo build --release -p fog-agent >/dev/null 2>&1 || cargo build --release -p fog-agent
bin=target/release/fog-agent

work=$(mktemp -d)
cleanup() { [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null; [ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & broker_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done

cat > "$work/agent.toml" <<TOML
node_id = "footprint"
data_dir = "$work/data"
heartbeat_interval_secs = 1.0
metrics_interval_secs = 1.0
[broker]
url = "mqtt://127.0.0.1:$port"
TOML
# Count what reaches the broker, so the figures are for an agent that really publishes.
timeout "$duration" mosquitto_sub -p "$port" -t 'fog/v1/nodes/footprint/#' > "$work/received" 2>/dev/null & sub_pid=$!
sleep 0.3
FOG_AGENT_LOG=warn "$bin" run --config "$work/agent.toml" & agent_pid=$!
sleep "$duration"
wait "$sub_pid" 2>/dev/null || true
received=$(wc -l < "$work/received")

clk=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$agent_pid/stat")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
size=$(stat -c %s "$bin")
python3 - "$rss" "$hwm" "$utime" "$stime" "$clk" "$duration" "$size" "$received" <<'PY'
import sys
rss, hwm, ut, st, clk, dur, size, received = (float(x) for x in sys.argv[1:])
cpu = (ut + st) / clk
print(f"fog-agent footprint over {dur:.0f} s, readings and heartbeats every 1 s:")
print(f"  VmRSS           {rss/1024:.2f} MiB (peak {hwm/1024:.2f} MiB)")
print(f"  CPU             {cpu:.2f} s total, {cpu * 60 / dur:.3f} CPU-s per minute")
print(f"  binary          {size/1024/1024:.2f} MiB (x86_64, stripped release)")
print(f"  messages seen   {received:.0f} at the broker (status, heartbeats, readings)")
if received < dur:
    sys.exit("footprint: the agent published less than one message per second; is it connected?")
PY
