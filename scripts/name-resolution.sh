#!/usr/bin/env bash
# Does this fog-agent binary find a broker given by host name? A static musl build
# resolves names with musl's own resolver (no NSS, no nscd), so check each build we
# ship, through both ways a name is found:
#   * /etc/hosts       (`localhost`)
#   * DNS              (`broker.fog.test`, answered by a dnsmasq started here)
# in a private network and mount namespace (unshare, as root): loopback only, its own
# /etc/resolv.conf pointing at that dnsmasq, its own Mosquitto. Passes when the agent's
# retained `online` status reaches the broker both ways.
#
#   scripts/name-resolution.sh BINARY [RUNNER...]     # e.g. RUNNER=qemu-aarch64
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [RUNNER...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "name-resolution: needs root (unshare)" >&2; exit 1; }
bin=$(realpath "$1"); shift
runner=("$@")
need=()
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/inside.sh" <<'INSIDE'
set -euo pipefail
work=$1; bin=$2; shift 2
ip link set lo up
echo 'nameserver 127.0.0.1' > "$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf
dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \
    --host-record=broker.fog.test,127.0.0.1,::1 --pid-file="$work/dnsmasq.pid" --user=root 2>"$work/dnsmasq.log" &
dns=$!
printf 'user root\nlistener 1883\nallow_anonymous true\npersistence false\nlog_type error\n' > "$work/m.conf"
mosquitto -c "$work/m.conf" & broker=$!
trap 'kill $dns $broker 2>/dev/null; wait 2>/dev/null' EXIT
sleep 0.5
status=0
for host in localhost broker.fog.test; do
    node="resolve-${host//./-}"
    cat > "$work/$node.toml" <<TOML
node_id = "$node"
data_dir = "$work/$node"
[broker]
url = "mqtt://$host:1883"
TOML
    FOG_AGENT_LOG=warn "$@" "$bin" run --config "$work/$node.toml" 2>"$work/$node.log" & agent=$!
    if got=$(mosquitto_sub -h 127.0.0.1 -t "fog/v1/nodes/$node/status" -C 1 -W 20 2>&1) \
        && [[ $got == *'"online":true'* ]]; then
        echo "   $host: connected"
    else
        echo "   $host: the agent did not reach the broker; its log:" >&2
        sed 's/^/     /' "$work/$node.log" >&2
        status=1
    fi
    kill $agent 2>/dev/null; wait $agent 2>/dev/null || true
done
exit $status
INSIDE
unshare --net --mount bash "$work/inside.sh" "$work" "$bin" "${runner[@]}"
