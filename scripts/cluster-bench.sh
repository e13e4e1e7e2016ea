#!/usr/bin/env bash
# Cluster mode's throughput on one machine: COORDINATORS coordinators (release builds,
# each its own process) on one private PostgreSQL (initdb into a temp dir, fsync on)
# and one private Mosquitto, AGENTS light agents (fog-sim, answering every task at
# once) and `fog-coordinator bench` as the client, all on this machine.
#
#   scripts/cluster-bench.sh [COORDINATORS] [TASKS] [CONCURRENCY]   (default 3 20000 4000)
#
# COORDINATORS=0 runs one coordinator with its redb journal instead (the baseline on
# the same machine, same session). AGENTS=N (default 5); PGBENCH=1 first calibrates the
# database with pgbench (a simple-update load, 4 clients, 10 s) and prints its TPS;
# KILL_AFTER=S kills one coordinator (c2, with kill -9) S seconds into the bench, to see
# a failover under load: its unfinished tasks move to the others after its lease; what
# the broker had handed it and it had not acknowledged shows as lost, since `bench`
# does not resubmit (a client should; docs/scale-out.md).
# BIN_DIR=DIR runs DIR's binaries and builds nothing. One JSON line at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
coordinators=${1:-3}; tasks=${2:-20000}; concurrency=${3:-4000}
agents=${AGENTS:-5}
for p in mosquitto; do
    command -v "$p" >/dev/null || { echo "cluster-bench: needs $p (apt-get install mosquitto)" >&2; exit 1; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "cluster-bench: needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -p fog-coordinator -p fog-benches --bin fog-coordinator --bin fog-sim >/dev/null 2>&1 \
        || cargo build --release -p fog-coordinator -p fog-benches --bin fog-coordinator --bin fog-sim
fi
bin=$(realpath "${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}")
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root, as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgport=$(free_port)
if [ "$coordinators" -gt 0 ]; then
    mkdir -p "$work/pg"
    [ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
    as_pg "$pgbin/initdb" -A trust -U fog -E UTF8 -D "$work/pg/data" >/dev/null
    as_pg "$pgbin/postgres" -D "$work/pg/data" -p "$pgport" -k "$work/pg" -c listen_addresses=127.0.0.1 \
        -c max_connections=50 2>"$work/pg/log" & pids+=($!)
    for _ in $(seq 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" && break; sleep 0.1; done
    pgbench_tps=null
    if [ "${PGBENCH:-0}" = 1 ]; then
        "$pgbin/pgbench" -q -i -s 10 -h 127.0.0.1 -p "$pgport" -U fog postgres >/dev/null 2>&1
        pgbench_tps=$("$pgbin/pgbench" -N -c 4 -j 2 -T 10 -h 127.0.0.1 -p "$pgport" -U fog postgres 2>/dev/null \
            | awk '/^tps/ {print int($3); exit}')
        echo "cluster-bench: pgbench -N -c 4 -T 10: $pgbench_tps TPS" >&2
    fi
fi
mqtt=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\nlog_type error\n' "$mqtt" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & pids+=($!)
sleep 0.5
"$bin/fog-coordinator" keys init --dir "$work/keys" >/dev/null 2>&1
n=$(( coordinators > 0 ? coordinators : 1 ))
for i in $(seq "$n"); do
    mkdir -p "$work/c$i"
    {
        printf 'data_dir = "%s/c%s"\nhttp_listen = ""\n' "$work" "$i"
        if [ "$coordinators" -gt 0 ]; then
            printf '[cluster]\npostgres_url = "host=127.0.0.1 port=%s user=fog dbname=postgres"\ncoordinator_id = "c%s"\n' "$pgport" "$i"
        fi
        printf '[security]\nkey_dir = "%s/keys"\nallow_unapproved_nodes = true\nclient_key = "%s/bench.key"\n[broker]\nurl = "mqtt://127.0.0.1:%s"\n' \
            "$work" "$work" "$mqtt"
    } > "$work/c$i.toml"
done
# One client key, the same [clients] table in every coordinator's config.
"$bin/fog-coordinator" keys client bench --dir "$work" --kind echo > "$work/clients.toml" 2>/dev/null
cpids=()
for i in $(seq "$n"); do
    cat "$work/clients.toml" >> "$work/c$i.toml"
    FOG_LOG=warn "$bin/fog-coordinator" serve --config "$work/c$i.toml" 2>"$work/c$i.log" & pids+=($!); cpids+=($!)
done
"$bin/fog-sim" --broker "127.0.0.1:$mqtt" --agents "$agents" --rate 100 --heartbeat 1 --reading 10 \
    --duration 600 >/dev/null 2>"$work/sim.log" & pids+=($!)
sleep 4
killed=null
if [ -n "${KILL_AFTER:-}" ] && [ "$n" -gt 1 ]; then
    (sleep "$KILL_AFTER"; kill -9 "${cpids[1]}") & pids+=($!)
    killed='"c2"'
fi
out=$("$bin/fog-coordinator" bench --config "$work/c1.toml" --tasks "$tasks" --concurrency "$concurrency" \
    --kind echo --payload-bytes 16 2>&1 | tr '\n' ' ' || true)
tps=$(grep -o '[0-9.]* tasks/s' <<<"$out" | head -1 | cut -d' ' -f1)
printf '{"coordinators": %s, "journal": "%s", "agents": %s, "tasks": %s, "concurrency": %s, "tasks_per_sec": %s, "pgbench_tps": %s, "killed": %s, "bench": "%s"}\n' \
    "$n" "$([ "$coordinators" -gt 0 ] && echo postgresql || echo redb)" "$agents" "$tasks" "$concurrency" \
    "${tps:-null}" "${pgbench_tps:-null}" "$killed" "$(sed 's/"/\\"/g' <<<"$out" | cut -c1-400)"
