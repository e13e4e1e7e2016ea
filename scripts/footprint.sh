#!/usr/bin/env bash
# Agent footprint: run fog-agent (release build) against a local Mosquitto with full
# readings every second for DURATION seconds (default 60), then print its resident
# memory (VmRSS, VmHWM, and how much of it is anonymous or mapped from files) and the
# CPU-seconds it used, per minute.
#
#   scripts/footprint.sh [DURATION_SECS] [AGENT_BINARY ...]
#
# With no binary, builds this tree's agent alone, as packaged (`cargo build --profile
# agent -p fog-agent`:
# built beside the coordinator, Cargo unifies features and the agent comes out larger).
# With several binaries (two trees' agents, say), runs them in turn, RUNS rounds
# (default 3; 1 for a single binary), each run its own broker and data folder, and
# prints each binary's medians and its difference from the first: a single run's RSS
# moves by +-100 KiB with what the page cache holds, a median of alternating runs does not.
#
# COLLECTD=1 runs collectd beside each agent run (cpu, memory, df, disk, interface, load
# and mqtt plugins, every 1 s, publishing to the same broker) and compares the two.
#
# Needs mosquitto (apt-get install mosquitto). Starts its own broker on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
shift || true
bins=("$@")

if [ "${COLLECTD:-0}" = 1 ]; then
    command -v collectd >/dev/null || { echo "footprint: COLLECTD=1 needs collectd (apt-get install collectd-core)" >&2; exit 1; }
fi
command -v mosquitto_sub >/dev/null || { echo "footprint: needs mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)" >&2; exit 1; }
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --profile agent -p fog-agent >/dev/null 2>&1 || cargo build --profile agent -p fog-agent
    bins=("${CARGO_TARGET_DIR:-target}/agent/fog-agent")
fi
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "footprint: $b is not an executable" >&2; exit 1; }; done
runs=${RUNS:-$([ ${#bins[@]} -gt 1 ] && echo 3 || echo 1)}

work=$(mktemp -d)
agent_pid=; broker_pid=; collectd_pid=
cleanup() { [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null; [ -n "$collectd_pid" ] && kill "$collectd_pid" 2>/dev/null; [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A results line for process $2 (named $1): name rss_kib hwm_kib anon_kib file_kib
# cpu_s received (lines in file $3).
record() {
    local clk utime stime
    clk=$(getconf CLK_TCK)
    read -r utime stime < <(awk '{print $14, $15}' "/proc/$2/stat")
    awk -v bin="$1" -v cpu="$(( utime + stime ))" -v clk="$clk" -v received="$(wc -l < "$3")" '
        /^VmRSS/ {rss=$2} /^VmHWM/ {hwm=$2} /^RssAnon/ {anon=$2} /^RssFile/ {file=$2}
        END {printf "%s %d %d %d %d %.2f %d\n", bin, rss, hwm, anon, file, cpu / clk, received}' \
        "/proc/$2/status" >> "$work/results"
}

# collectd with the plugins that match the agent's readings, every second, publishing
# to the same broker (its mqtt plugin), started beside the agent.
start_collectd() {
    local run=$1 port=$2
    cat > "$run/collectd.conf" <<CONF
Hostname "footprint-collectd"
FQDNLookup false
Interval 1
BaseDir "$run/collectd"
PIDFile "$run/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
LoadPlugin load
LoadPlugin mqtt
<Plugin interface>
  Interface "lo"
  IgnoreSelected true
</Plugin>
<Plugin mqtt>
  <Publish "footprint">
    Host "127.0.0.1"
    Port $port
    ClientId "footprint-collectd"
  </Publish>
</Plugin>
CONF
    mkdir -p "$run/collectd"
    timeout "$duration" mosquitto_sub -p "$port" -t 'collectd/#' > "$run/collectd.received" 2>/dev/null &
    collectd -f -C "$run/collectd.conf" > "$run/collectd.log" 2>&1 & collectd_pid=$!
}

# One run of binary $1 into results line: bin rss_kib hwm_kib anon_kib file_kib cpu_s received.
measure() {
    local bin=$1 run=$work/run
    rm -rf "$run"; mkdir -p "$run"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n' "$port" > "$run/mosquitto.conf"
    mosquitto -c "$run/mosquitto.conf" 2>/dev/null & broker_pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
    cat > "$run/agent.toml" <<TOML
node_id = "footprint"
data_dir = "$run/data"
heartbeat_interval_secs = 1.0
metrics_interval_secs = 1.0
[broker]
url = "mqtt://127.0.0.1:$port"
TOML
    # Count what reaches the broker, so the figures are for an agent that really publishes.
    timeout "$duration" mosquitto_sub -p "$port" -t 'fog/v1/nodes/footprint/#' > "$run/received" 2>/dev/null & local sub_pid=$!
    sleep 0.3
    FOG_AGENT_LOG=error "$bin" run --config "$run/agent.toml" 2>/dev/null & agent_pid=$!
    [ "${COLLECTD:-0}" = 1 ] && start_collectd "$run" "$port"
    sleep "$duration"
    wait "$sub_pid" 2>/dev/null || true
    record "$bin" "$agent_pid" "$run/received"
    if [ -n "$collectd_pid" ]; then
        record collectd "$collectd_pid" "$run/collectd.received"
        kill "$collectd_pid" 2>/dev/null; wait "$collectd_pid" 2>/dev/null || true
        collectd_pid=
    fi
    kill "$agent_pid" "$broker_pid" 2>/dev/null; wait "$agent_pid" "$broker_pid" 2>/dev/null || true
    agent_pid=; broker_pid=
}

for round in $(seq "$runs"); do
    for b in "${bins[@]}"; do
        [ "$runs" -gt 1 ] && echo "footprint: round $round/$runs, $b" >&2
        measure "$b"
    done
done

report=("${bins[@]}")
[ "${COLLECTD:-0}" = 1 ] && report+=(collectd)
python3 - "$duration" "$work/results" "${report[@]}" <<'PY'
import os, statistics, sys
dur = float(sys.argv[1]); rows = [l.split() for l in open(sys.argv[2])]; bins = sys.argv[3:]
def med(b, col): return statistics.median(float(r[col]) for r in rows if r[0] == b)
runs = sum(1 for r in rows if r[0] == bins[0])
print(f"fog-agent footprint over {dur:.0f} s, readings and heartbeats every 1 s"
      + (f", median of {runs} runs each:" if runs > 1 else ":"))
first = None
for b in bins:
    rss, hwm, anon, file, cpu, seen = (med(b, c) for c in range(1, 7))
    if len(bins) > 1: print(f"{b}")
    delta = "" if first is None or b == "collectd" else f" ({rss - first:+.0f} KiB against the first)"
    first = rss if first is None else first
    print(f"  VmRSS           {rss/1024:.2f} MiB, {rss:.0f} KiB{delta} (peak {hwm/1024:.2f} MiB)")
    print(f"    of which      {anon:.0f} KiB anonymous, {file:.0f} KiB mapped from files (binary, libc)")
    print(f"  CPU             {cpu:.2f} s total, {cpu * 60 / dur:.3f} CPU-s per minute")
    if b == "collectd":
        for a in bins[:-1]:
            print(f"  {a}: {med(a, 1) / rss:.2f} x collectd's RSS, {med(a, 5) / max(cpu, 0.01):.2f} x its CPU")
    else:
        print(f"  binary          {os.path.getsize(b)/1024/1024:.2f} MiB")
    print(f"  messages seen   {seen:.0f} at the broker (status, heartbeats, readings)")
    if seen < dur:
        sys.exit(f"footprint: {b} published less than one message per second; is it connected?")
PY
