#!/usr/bin/env bash
# The web console in a real browser: a coordinator with its embedded broker and HTTP
# console, NODES real fog-agent processes (default 3, each approved as a site would),
# then tests/browser/console.mjs drives Debian's chromium through playwright-core
# (installed from npm into target/browser-test, kept there between runs): nodes
# appear, a node's detail and charts open, an agent killed with SIGKILL turns
# offline within the detection bound (1.5 keep-alives of 4 s, plus a second for the
# page), a 1,000-node update is rendered and timed, the page fits a phone. Screenshots
# go to target/browser/, with the HTML report (`fog-coordinator report`) of the same
# coordinator after 300 echo tasks.
#
#   scripts/browser-test.sh
#
# Then, over the same API: an unsigned drain is refused (401), a signed one keeps
# new tasks off its node; a task submitted with `submit --url` comes back with its
# output (unsigned and forbidden ones refused); `fog-coordinator report` writes the
# HTML report.
#
# Needs chromium, node, npm and curl (apt-get install chromium nodejs npm curl).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-3}
for c in node npm; do command -v "$c" >/dev/null || { echo "browser-test: needs $c" >&2; exit 1; }; done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "browser-test: needs chromium (apt-get install chromium)" >&2; exit 1; }
root=$PWD
mods="$root/target/browser-test"
if [ ! -d "$mods/node_modules/playwright-core" ]; then
    mkdir -p "$mods"
    (cd "$mods" && npm install --no-audit --no-fund --silent playwright-core@1 >/dev/null)
fi
cargo build -p fog-coordinator -p fog-agent >/dev/null 2>&1 || cargo build -p fog-coordinator -p fog-agent
bin=${CARGO_TARGET_DIR:-target}/debug
out="$root/target/browser"; mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(free_port); http=$(free_port)
mkdir -p "$work/coordinator"
# Tasks are submitted as client `bench` (signed, as a site's clients are).
printf 'data_dir = "%s/coordinator"\nhttp_listen = "127.0.0.1:%s"\nstatus_interval_secs = 1.0\ndefault_heartbeat_interval_secs = 1.0\n[security]\nclient_key = "%s/bench.key"\n[broker]\nurl = "mqtt://127.0.0.1:%s"\n' \
    "$work" "$http" "$work" "$mqtt" > "$work/coordinator.toml"
"$bin/fog-coordinator" keys client bench --dir "$work" --kind echo >> "$work/coordinator.toml" 2>/dev/null
key=$("$bin/fog-coordinator" keys init --dir "$work/coordinator/keys" 2>/dev/null | sed -n "s/^fog-agent trust add '\(.*\)'$/\1/p")
FOG_LOG=warn "$bin/fog-coordinator" serve --config "$work/coordinator.toml" --embedded-broker "127.0.0.1:$mqtt" & pids+=($!)
sleep 1
agent_pids=()
for i in $(seq "$nodes"); do
    printf 'node_id = "pi-%s"\ndata_dir = "%s/a%s"\nheartbeat_interval_secs = 1.0\nmetrics_interval_secs = 1.0\n[labels]\nroom = "lab"\n[trust]\ncoordinator_keys = ["%s"]\n[broker]\nurl = "mqtt://127.0.0.1:%s"\nkeep_alive_secs = 4\n' \
        "$i" "$work" "$i" "$key" "$mqtt" > "$work/a$i.toml"
    FOG_AGENT_LOG=warn "$bin/fog-agent" run --config "$work/a$i.toml" & pids+=($!); agent_pids+=($!)
done
sleep 2
for i in $(seq "$nodes"); do "$bin/fog-coordinator" nodes --config "$work/coordinator.toml" approve "pi-$i" >/dev/null; done
sleep 1
# Some work, so the task views and the profiles have something to show.
"$bin/fog-coordinator" bench --config "$work/coordinator.toml" --tasks 300 --concurrency 8 --kind echo --payload-bytes 16 >/dev/null 2>&1
# Run from beside its node_modules (ES modules resolve from the script's folder).
cp tests/browser/console.mjs "$mods/"
if ! CONSOLE_URL="http://127.0.0.1:$http/" VICTIM=pi-1 VICTIM_PID=${agent_pids[0]} NODES=$nodes BOUND_MS=7000 OUT="$out" \
    node "$mods/console.mjs" > "$work/results.json"; then
    cat "$work/results.json"
    echo "browser-test: FAILED; screenshots so far in $out" >&2
    exit 1
fi
cat "$work/results.json"
# Drain over the real API: refused unsigned; signed (the bench client's key), pi-2
# takes nothing new while 100 more tasks run; undrained, it takes tasks again.
api="http://127.0.0.1:$http"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/api/v1/nodes/pi-2/drain")
[ "$code" = 401 ] || { echo "browser-test: an unsigned drain got HTTP $code, not 401" >&2; exit 1; }
on_pi2() { curl -s "$api/api/v1/tasks?node=pi-2&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
"$bin/fog-coordinator" drain pi-2 --config "$work/coordinator.toml" --url "$api"
before=$(on_pi2)
"$bin/fog-coordinator" bench --config "$work/coordinator.toml" --tasks 100 --concurrency 8 --kind echo --payload-bytes 16 >/dev/null 2>&1
sleep 1.5
after=$(on_pi2)
[ "$before" = "$after" ] || { echo "browser-test: a drained node took tasks ($before then $after)" >&2; exit 1; }
"$bin/fog-coordinator" drain pi-2 --undo --config "$work/coordinator.toml" --url "$api"
echo "drain: pi-2 took none of 100 tasks while drained"

# A task submitted over HTTP: unsigned, 401; by the CLI signed as bench, its output.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"tasks":[{"kind":"echo"}]}' "$api/api/v1/tasks")
[ "$code" = 401 ] || { echo "browser-test: an unsigned submission got HTTP $code, not 401" >&2; exit 1; }
got=$("$bin/fog-coordinator" submit --config "$work/coordinator.toml" --url "$api" --kind echo --payload over-http --wait)
[ "$got" = over-http ] || { echo "browser-test: submit --url gave ${got@Q}, not over-http" >&2; exit 1; }
if "$bin/fog-coordinator" submit --config "$work/coordinator.toml" --url "$api" --kind sha256 --payload x 2>"$work/refused"; then
    echo "browser-test: a kind bench may not submit was taken over HTTP" >&2; exit 1
fi
grep -q 'refused' "$work/refused" || { echo "browser-test: the refusal does not say so: $(cat "$work/refused")" >&2; exit 1; }
echo "submit over HTTP: output back; unsigned and a forbidden kind refused"

# Each node's charts carry the tasks that ended there (a sample every 10 s).
charted=$(python3 - "$api" <<'PY'
import json, sys, time, urllib.request
api = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(api + p))
deadline = time.time() + 30
while True:
    names = [n["node"] for n in get("/api/v1/nodes")["nodes"]]
    total = sum(s["tasks_per_sec"] * 10 for n in names for s in get(f"/api/v1/nodes/{n}/history")["samples"])
    if total > 0 or time.time() > deadline:
        print(round(total))
        break
    time.sleep(2)
PY
)
[ "$charted" -gt 0 ] || { echo "browser-test: no node's chart shows a task that ended there" >&2; exit 1; }
echo "node charts: about $charted tasks charted"

# pi-1 was killed (offline): forgotten, signed; it leaves the node list.
"$bin/fog-coordinator" nodes forget pi-1 --config "$work/coordinator.toml" --url "$api"
sleep 1.5
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/v1/nodes/pi-1")
[ "$code" = 404 ] || { echo "browser-test: a forgotten node is still served (HTTP $code)" >&2; exit 1; }
if "$bin/fog-coordinator" nodes forget pi-2 --config "$work/coordinator.toml" --url "$api" 2>"$work/online"; then
    echo "browser-test: an online node was forgotten" >&2; exit 1
fi
grep -q 'online' "$work/online" || { echo "browser-test: the refusal does not say why: $(cat "$work/online")" >&2; exit 1; }
echo "nodes forget: the killed pi-1 forgotten; online pi-2 refused"

# The HTML report from the same coordinator: self-contained, with the profiles.
"$bin/fog-coordinator" report --html "$out/report.html" --url "http://127.0.0.1:$http" --since 30m
grep -q '<td>echo</td>' "$out/report.html" || { echo "browser-test: the report has no profile of echo" >&2; exit 1; }
if grep -q '<script\| src=' "$out/report.html"; then echo "browser-test: the report loads something" >&2; exit 1; fi
echo "browser-test: ok; screenshots and report.html in $out"
