#!/usr/bin/env bash
# A large fleet on one machine: AGENTS simulated agents (fog-sim, one process) against
# a private Mosquitto and a real coordinator (release builds, each its own process),
# then what it costs the coordinator.
#
#   scripts/sim.sh AGENTS [WINDOW_SECS]      e.g. scripts/sim.sh 10000 60
#
# RATE=R agents connect R a second (default 500); HEARTBEAT=S and READING=S their
# intervals (default 5 and 10 s, the agent's defaults); TASKS=N tasks through
# `fog-coordinator bench` once the fleet is up (default 2000, 0 for none);
# ENCODING=postcard (default json). BIN_DIR=DIR runs DIR's fog-coordinator and fog-sim
# and builds nothing.
#
# Measured over a WINDOW_SECS window (default 60) once every agent is connected:
# the coordinator's CPU (utime+stime from /proc), its RSS, the heartbeat age at the
# registry (p50/p99 of `fog_coordinator_heartbeat_age_seconds` over the window), then
# how long the main loop's turns took by what they handled (p99 and the slowest), the
# bench's tasks and the placement wait, the time `fog-coordinator status` takes,
# the retained coordinator status' size, and fog-sim's own RSS. One JSON line at the
# end; the simulator's progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:?usage: scripts/sim.sh AGENTS [WINDOW_SECS]}
window=${2:-60}
rate=${RATE:-500}; heartbeat=${HEARTBEAT:-5}; reading=${READING:-10}
tasks=${TASKS:-2000}; encoding=${ENCODING:-json}
command -v mosquitto >/dev/null || { echo "sim: needs mosquitto (apt-get install mosquitto mosquitto-clients)" >&2; exit 1; }
command -v mosquitto_sub >/dev/null || { echo "sim: needs mosquitto_sub (apt-get install mosquitto-clients)" >&2; exit 1; }
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p fog-coordinator -p fog-benches --bin fog-coordinator --bin fog-sim >/dev/null 2>&1 \
        || cargo build --release -p fog-coordinator -p fog-benches --bin fog-coordinator --bin fog-sim
fi
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
# A descriptor per connection on both sides of the broker, and the coordinator's.
ulimit -n $((agents * 2 + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; sleep 0.1; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port); http=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\nlog_type error\n' "$mqtt" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & pids+=($!)
sleep 0.5
# Node identities are not checked (the simulated agents do not sign): what is
# measured is the registry, placement and the broker at this many nodes.
mkdir -p "$work/coordinator"
printf 'encoding = "%s"\ndata_dir = "%s/coordinator"\nhttp_listen = "127.0.0.1:%s"\n[security]\nallow_unapproved_nodes = true\nclient_key = "%s/bench.key"\n[broker]\nurl = "mqtt://127.0.0.1:%s"\n' \
    "$encoding" "$work" "$http" "$work" "$mqtt" > "$work/coordinator.toml"
"$bin/fog-coordinator" keys client bench --dir "$work" --kind echo >> "$work/coordinator.toml" 2>/dev/null
"$bin/fog-coordinator" keys init --dir "$work/coordinator/keys" >/dev/null 2>&1
FOG_LOG=warn "$bin/fog-coordinator" serve --config "$work/coordinator.toml" & coord=$!; pids+=($coord)
sleep 1
boot=$(python3 -c "print(int($agents / $rate) + 30)")
"$bin/fog-sim" --broker "127.0.0.1:$mqtt" --agents "$agents" --rate "$rate" --heartbeat "$heartbeat" \
    --reading "$reading" --encoding "$encoding" --duration $((boot + window + 120)) > "$work/sim.json" & sim=$!; pids+=($sim)

api="http://127.0.0.1:$http"
online() { curl -s "$api/api/v1/nodes?state=online" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))' 2>/dev/null || echo 0; }
t0=$(date +%s)
while [ "$(online)" -lt "$agents" ]; do
    if [ $(( $(date +%s) - t0 )) -gt "$boot" ]; then
        echo "sim: only $(online) of $agents online after ${boot}s" >&2; exit 1
    fi
    sleep 2
done
up_secs=$(( $(date +%s) - t0 ))
sleep 10
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
curl -s "$api/metrics" > "$work/m0"
c0=$(cpu_ticks "$coord"); w0=$(date +%s.%N)
sleep "$window"
c1=$(cpu_ticks "$coord"); w1=$(date +%s.%N)
curl -s "$api/metrics" > "$work/m1"
coord_rss=$(rss_kib "$coord")
sim_rss=$(rss_kib "$sim")
hz=$(getconf CLK_TCK)
status_start=$(date +%s.%N)
"$bin/fog-coordinator" status --config "$work/coordinator.toml" > "$work/status.txt"
status_secs=$(python3 -c "print(round($(date +%s.%N) - $status_start, 2))")
status_bytes=$(mosquitto_sub -h 127.0.0.1 -p "$mqtt" -t fog/v1/coordinator/status -C 1 -W 10 | wc -c)
bench=""
if [ "$tasks" -gt 0 ]; then
    bench=$("$bin/fog-coordinator" bench --config "$work/coordinator.toml" --tasks "$tasks" --concurrency 200 --kind echo --payload-bytes 16 2>&1 | tr '\n' ' ')
fi
sleep 2  # the next snapshot, which /metrics reads
curl -s "$api/metrics" > "$work/m2"
python3 - "$work" "$agents" "$window" "$c0" "$c1" "$w0" "$w1" "$hz" "$coord_rss" "$sim_rss" "$status_secs" "$status_bytes" "$up_secs" "$bench" <<'PY'
import json, sys
work, agents, window, c0, c1, w0, w1, hz, coord_rss, sim_rss, status_secs, status_bytes, up_secs, bench = sys.argv[1:]

def hist(path, name):
    buckets = {}
    for line in open(path):
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets

def quantile(before, after, q):
    les = sorted(after)
    counts = [after[le] - before.get(le, 0) for le in les]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    for le, c in zip(les, counts):
        if c >= q * total:
            return le
    return les[-1]

def turns(path):
    """The main loop's turn histograms, by what they handled."""
    out = {}
    for line in open(path):
        if line.startswith("fog_coordinator_loop_turn_seconds_bucket{"):
            handled = line.split('handled="')[1].split('"')[0]
            le = line.split('le="')[1].split('"')[0]
            out.setdefault(handled, {})[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out

t0, t1 = turns(f"{work}/m0"), turns(f"{work}/m1")
hb0 = hist(f"{work}/m0", "fog_coordinator_heartbeat_age_seconds")
hb1 = hist(f"{work}/m1", "fog_coordinator_heartbeat_age_seconds")
pl1 = hist(f"{work}/m1", "fog_coordinator_placement_seconds")
pl2 = hist(f"{work}/m2", "fog_coordinator_placement_seconds")
ms = lambda v: None if v is None else (v * 1000 if v != float("inf") else "over 5000")
sim = {}
try:
    sim = json.loads(open(f"{work}/sim.json").read().strip().splitlines()[-1])
except Exception:
    pass
heartbeats = hb1.get(float("inf"), 0) - hb0.get(float("inf"), 0)
print(json.dumps({
    "agents": int(agents),
    "all_online_after_s": int(up_secs),
    "window_s": int(window),
    "coordinator_cpu_pct": round((int(c1) - int(c0)) / int(hz) / (float(w1) - float(w0)) * 100, 1),
    "coordinator_rss_mib": round(int(coord_rss) / 1024, 1),
    "heartbeats_in_window": int(heartbeats),
    "heartbeat_age_p50_ms_at_most": ms(quantile(hb0, hb1, 0.50)),
    "heartbeat_age_p99_ms_at_most": ms(quantile(hb0, hb1, 0.99)),
    "placement_wait_p50_ms_at_most": ms(quantile(pl1, pl2, 0.50)),
    "placement_wait_p99_ms_at_most": ms(quantile(pl1, pl2, 0.99)),
    "loop_turns_in_window": {h: int(t1[h].get(float("inf"), 0) - t0.get(h, {}).get(float("inf"), 0)) for h in t1},
    "loop_turn_p99_ms_at_most": {h: ms(quantile(t0.get(h, {}), t1[h], 0.99)) for h in t1 if t1[h].get(float("inf"), 0) > t0.get(h, {}).get(float("inf"), 0)},
    "loop_turn_max_ms_at_most": {h: ms(quantile(t0.get(h, {}), t1[h], 1.0)) for h in t1 if t1[h].get(float("inf"), 0) > t0.get(h, {}).get(float("inf"), 0)},
    "status_cli_s": float(status_secs),
    "retained_status_bytes": int(status_bytes),
    "sim_rss_mib": round(int(sim_rss) / 1024, 1),
    "sim_bytes_per_agent": round(int(sim_rss) * 1024 / int(agents)),
    "bench": bench.strip()[-300:],
}))
PY
