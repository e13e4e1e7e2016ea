#!/bin/bash
# Runs inside the booted container (fog-boot-test.service, from scripts/boot-test.sh):
# installs the packages with dpkg under a real systemd and checks what an operator
# relies on. Stops at the first failed check, with the journal of the units, and writes
# PASS or FAIL to /root/result either way.
set -uo pipefail
exec > >(tee /root/boot.log) 2>&1
. /root/versions
CFG=/etc/fog/coordinator.toml
AGENT_CFG=/etc/fog/agent.toml
NODE=$(hostname)
echo FAIL > /root/result
step=setup

ok() { echo "ok - $*"; }
fail() {
    echo "not ok - $step: $*"
    echo "--- systemctl status"
    systemctl status --no-pager fog-agent fog-coordinator 2>&1 | tail -40
    echo "--- journal (fog units)"
    journalctl --no-pager -u fog-agent -u fog-coordinator | tail -60
    exit 1
}
# until SECS CMD...: run CMD every 0.5 s until it succeeds, or fail after SECS.
until_ok() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}
prop() { systemctl show -p "$2" --value "$1"; }
active() { [ "$(prop "$1" ActiveState)" = active ]; }
submit() { fog-coordinator submit -c "$CFG" --key /root/client/boot.key "$@"; }

step="broker"
until_ok 30 active mosquitto || fail "mosquitto is not active"
ok "the root's mosquitto is active"

step="install"
dpkg -i /root/debs/fog-coordinator_${VERSION}_amd64.deb /root/debs/fog-agent_${VERSION}_amd64.deb \
    || fail "dpkg -i"
until_ok 30 active fog-coordinator || fail "fog-coordinator is not active after install"
until_ok 30 active fog-agent || fail "fog-agent is not active after install"
[ "$(systemctl is-enabled fog-agent)" = enabled ] || fail "fog-agent is not enabled"
[ "$(systemctl is-enabled fog-coordinator)" = enabled ] || fail "fog-coordinator is not enabled"
ok "dpkg -i enabled and started both units (Type=notify: active means READY=1 was sent)"
[ "$(prop fog-agent DynamicUser)" = yes ] || fail "fog-agent is not a DynamicUser= unit"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$(prop fog-agent MainPID)/status")
[ "$uid" != 0 ] || fail "fog-agent runs as root"
ok "fog-agent runs as dynamic user $(prop fog-agent User) (uid $uid)"

step="status line"
until_ok 15 sh -c 'systemctl status --no-pager fog-agent | grep -q "Status: \""' \
    || fail "systemctl status shows no STATUS= line for fog-agent"
ok "systemctl status fog-agent: $(systemctl status --no-pager fog-agent | grep 'Status:' | sed 's/^ *//')"
until_ok 15 sh -c 'systemctl status --no-pager fog-coordinator | grep -q "Status: \""' \
    || fail "systemctl status shows no STATUS= line for fog-coordinator"
ok "systemctl status fog-coordinator: $(systemctl status --no-pager fog-coordinator | grep 'Status:' | sed 's/^ *//')"

step="readings"
reading=$(mosquitto_sub -t "fog/v1/nodes/$NODE/metrics" -C 1 -W 30) || fail "no reading on fog/v1/nodes/$NODE/metrics within 30 s"
case $reading in *'"memory"'*) ;; *) fail "the reading has no memory figure: $reading" ;; esac
# (No network figures: the container has only lo, which the agent leaves out.)
for key in block_devices frequencies write_bytes_total clock_synced power; do
    case $reading in *"\"$key\""*) ;; *) fail "the reading has no $key: $reading" ;; esac
done
ok "a reading arrived on the broker from node $NODE (${#reading} bytes)"

step="keys"
line=$(fog-coordinator keys show -c "$CFG") || fail "the package made no coordinator key"
fog-agent trust add "$line" || fail "fog-agent trust add"
mkdir -p /root/client
fog-coordinator keys client boot --kind '*' --dir /root/client >> "$CFG" || fail "keys client"
cat >> "$AGENT_CFG" <<'TOML'

# Added by the boot test: a command that tries to write outside the sandbox.
[tasks.escape]
command = "/bin/sh"
args = ["-c", "for f in /etc/fog/escaped /usr/escaped /root/escaped /var/lib/escaped /var/lib/private/escaped; do if echo x > $f 2>/dev/null; then echo WROTE $f; fi; done; echo x > /var/lib/fog-agent/inside && echo inside-ok"]
TOML
systemctl restart fog-coordinator fog-agent || fail "restart after adding keys"
until_ok 30 sh -c "fog-coordinator nodes list -c $CFG | grep -q $NODE" \
    || fail "the node's key never showed as pending: $(fog-coordinator nodes list -c "$CFG" 2>&1)"
fog-coordinator nodes approve -c "$CFG" "$NODE" || fail "nodes approve"
ok "coordinator key trusted by the agent, client key configured, node $NODE approved"

step="a signed task"
until_ok 30 sh -c "fog-coordinator status -c $CFG 2>/dev/null | grep $NODE | grep -q approved" \
    || fail "the node is not approved on status: $(fog-coordinator status -c "$CFG" 2>&1)"
# Until the approved node's next message reaches it, the coordinator answers
# "rejected: no online node runs kind echo (retryable)": resubmit, as a client would.
until_ok 30 sh -c "fog-coordinator submit -c $CFG --key /root/client/boot.key --kind echo --payload hello-from-boot --wait 2>>/root/echo.err | grep -qx hello-from-boot" \
    || fail "echo task: $(tail -3 /root/echo.err)"
ok "an echo task submitted with a client key ran on the node and came back"

step="sandbox"
out=$(submit --kind escape --payload '' --wait 2>&1) || fail "escape task: $out"
case $out in *WROTE*) fail "a command task wrote outside its allowed paths: $out" ;; esac
case $out in *inside-ok*) ;; *) fail "the command task could not write its state directory: $out" ;; esac
for f in /etc/fog/escaped /usr/escaped /root/escaped /var/lib/escaped /var/lib/private/escaped; do
    [ ! -e "$f" ] || fail "$f exists"
done
ok "a declared command ran in the sandbox: wrote its state directory, nothing else"

step="reload"
pid=$(prop fog-agent MainPID)
cp "$AGENT_CFG" /root/agent.toml.before-reload
sed -i 's/^\[labels\]$/[labels]\nroom = "boot-lab"/' "$AGENT_CFG"
systemctl reload fog-agent || fail "systemctl reload"
until_ok 15 sh -c "mosquitto_sub -t fog/v1/nodes/$NODE/status -C 1 -W 2 | grep -q boot-lab" \
    || fail "the reloaded label is not in the retained status"
sed -i '1i heartbeat_interval_secs = "often"' "$AGENT_CFG"
systemctl reload fog-agent || fail "systemctl reload (bad file)"
until_ok 15 sh -c 'systemctl status --no-pager fog-agent | grep -q "config reload refused"' \
    || fail "STATUS= does not say the bad file was refused"
active fog-agent || fail "a refused reload stopped the agent"
cp /root/agent.toml.before-reload "$AGENT_CFG"
systemctl reload fog-agent
[ "$(prop fog-agent MainPID)" = "$pid" ] || fail "a reload restarted the agent"
ok "systemctl reload: a new label applied live; a bad file refused, said on STATUS=, agent kept running"

step="clock"
# No timesyncd runs in a container, and the unit's ProtectClock= denies adjtimex(2):
# the agent asks timesyncd's flag file, which is made and removed here by hand.
cp "$AGENT_CFG" /root/agent.toml.before-clock
sed -i 's/^metrics_interval_secs = .*/metrics_interval_secs = 1.0/' "$AGENT_CFG"
grep -qx 'metrics_interval_secs = 1.0' "$AGENT_CFG" || fail "no metrics_interval_secs line to change in $AGENT_CFG"
systemctl reload fog-agent || fail "systemctl reload (readings every second)"
until_ok 15 sh -c 'journalctl --no-pager -u fog-agent | grep -q "applied=\[\"metrics_interval_secs\"\]"' \
    || fail "the reload did not apply metrics_interval_secs: $(journalctl --no-pager -u fog-agent | grep -i reload | tail -3)"
reading_says() { mosquitto_sub -t "fog/v1/nodes/$NODE/metrics" -C 1 -W 3 | grep -q "$1"; }
node_row() { fog-coordinator status -c "$CFG" | grep -w "$NODE"; }
mkdir -p /run/systemd/timesync && touch /run/systemd/timesync/synchronized
until_ok 15 reading_says '"clock_synced":true' \
    || fail "timesyncd says synchronised, the reading does not: $(mosquitto_sub -t "fog/v1/nodes/$NODE/metrics" -C 1 -W 3)"
rm /run/systemd/timesync/synchronized
until_ok 15 reading_says '"clock_synced":false' || fail "the reading does not flag an unsynchronised clock"
until_ok 15 sh -c "fog-coordinator status -c $CFG | grep -w $NODE | grep -q 'clock not synchronised'" \
    || fail "status does not say the clock is not synchronised: $(node_row)"
touch /run/systemd/timesync/synchronized
until_ok 15 sh -c "! fog-coordinator status -c $CFG | grep -w $NODE | grep -q 'clock not synchronised'" \
    || fail "status still flags the clock once synchronised: $(node_row)"
cp /root/agent.toml.before-clock "$AGENT_CFG"
systemctl reload fog-agent || fail "systemctl reload (config restored)"
ok "the sandboxed agent flags readings made on an unsynchronised clock, and status says so until it is"

step="SIGKILL"
pid=$(prop fog-agent MainPID); restarts=$(prop fog-agent NRestarts)
submit --kind sleep --payload 20000 --timeout 90 --wait > /root/sleep.out 2> /root/sleep.err &
waiter=$!
# Killed while it runs the task: accepted (recorded in its store, acknowledged) and
# not finished. 20 s, so STATUS= (rewritten on the agent's own tick) shows it running
# well before it ends (with 5 s, CI once saw it finish first).
until_ok 15 sh -c 'systemctl status --no-pager fog-agent | grep -q "Status: \"[a-z]*: 1 tasks running"' \
    || fail "the sleep task never ran: $(cat /root/sleep.err)"
systemctl kill -s SIGKILL fog-agent
until_ok 30 sh -c "[ \$(systemctl show -p NRestarts --value fog-agent) -gt $restarts ] && systemctl is-active -q fog-agent" \
    || fail "fog-agent was not restarted after SIGKILL"
[ "$(prop fog-agent MainPID)" != "$pid" ] || fail "same MainPID after SIGKILL"
# The restarted agent finds the task it had acknowledged in its store and hands it
# back; the client hears of it (the retry completes, or with this one node still coming
# back the coordinator answers "rejected ... (retryable)"): an answer, never silence.
until_ok 20 sh -c "journalctl --no-pager -u fog-agent | grep -q 'tasks a previous run accepted and did not finish'" \
    || fail "the restarted agent did not find the task it had accepted"
wait $waiter
grep -q -e '^completed' -e 'retryable' /root/sleep.err || fail "no answer for the task killed mid-run: $(cat /root/sleep.err)"
until_ok 30 sh -c "fog-coordinator submit -c $CFG --key /root/client/boot.key --kind sleep --payload 10 --wait 2>&1 | grep -q '^completed'" \
    || fail "tasks do not run again after the restart"
ok "SIGKILL: restarted (NRestarts $restarts -> $(prop fog-agent NRestarts)); the task it had accepted was found in its store and answered: $(tail -1 /root/sleep.err)"

step="watchdog"
mkdir -p /etc/systemd/system/fog-agent.service.d
printf '[Service]\nWatchdogSec=4\n' > /etc/systemd/system/fog-agent.service.d/boot-test.conf
systemctl daemon-reload && systemctl restart fog-agent || fail "restart with WatchdogSec=4"
until_ok 20 active fog-agent || fail "not active with WatchdogSec=4"
sleep 5   # pings keep it alive past one period
active fog-agent || fail "a running agent was killed by a 4 s watchdog"
pid=$(prop fog-agent MainPID); restarts=$(prop fog-agent NRestarts)
kill -STOP "$pid"
until_ok 40 sh -c "[ \$(systemctl show -p NRestarts --value fog-agent) -gt $restarts ] && systemctl is-active -q fog-agent" \
    || fail "a SIGSTOPped agent was not restarted by the watchdog"
journalctl --no-pager -u fog-agent | grep -q -i 'watchdog timeout' || fail "no watchdog timeout in the journal"
rm /etc/systemd/system/fog-agent.service.d/boot-test.conf
systemctl daemon-reload && systemctl restart fog-agent
ok "SIGSTOP: the watchdog killed the hung agent and systemd restarted it"

step="bad config"
cp "$AGENT_CFG" /root/agent.toml.good
sed -i '1i heartbeat_interval_secs = "often"' "$AGENT_CFG"
restarts=$(prop fog-agent NRestarts)
systemctl restart fog-agent 2>/dev/null && fail "restart with a bad config succeeded"
sleep 6   # RestartSec=2: a restart loop would show by now
[ "$(prop fog-agent ActiveState)" = failed ] || fail "state $(prop fog-agent ActiveState), not failed"
[ "$(prop fog-agent ExecMainStatus)" = 78 ] || fail "exit status $(prop fog-agent ExecMainStatus), not 78"
[ "$(prop fog-agent NRestarts)" = "$restarts" ] || fail "restarted in a loop: NRestarts $(prop fog-agent NRestarts)"
journalctl --no-pager -u fog-agent | grep -q 'heartbeat_interval_secs' || fail "the journal does not name the bad key"
cp /root/agent.toml.good "$AGENT_CFG"
systemctl reset-failed fog-agent; systemctl start fog-agent || fail "start with the good config"
ok "a bad config: exit 78, failed, no restart loop, the journal names the key"

step="upgrade"
key_before=$(md5sum < /var/lib/private/fog-agent/node.key)
cfg_before=$(md5sum < "$AGENT_CFG")
pid=$(prop fog-agent MainPID)
ls /var/lib/private/fog-agent > /root/state.before
dpkg -i /root/debs/fog-agent_${NEXT}_amd64.deb /root/debs/fog-coordinator_${NEXT}_amd64.deb || fail "dpkg -i $NEXT"
[ "$(dpkg-query -W -f '${Version}' fog-agent)" = "$NEXT" ] || fail "fog-agent is not at $NEXT"
until_ok 30 active fog-agent || fail "fog-agent is not active after the upgrade"
[ "$(prop fog-agent MainPID)" != "$pid" ] || fail "the upgrade did not restart fog-agent"
[ "$(md5sum < "$AGENT_CFG")" = "$cfg_before" ] || fail "the upgrade changed $AGENT_CFG"
[ "$(md5sum < /var/lib/private/fog-agent/node.key)" = "$key_before" ] || fail "the upgrade changed the node key"
for f in $(cat /root/state.before); do [ -e "/var/lib/private/fog-agent/$f" ] || fail "the upgrade lost $f"; done
out=$(submit --kind echo --payload after-upgrade --wait) || fail "echo after the upgrade: $out"
[ "$out" = after-upgrade ] || fail "echo after the upgrade printed '$out'"
ok "upgrade to $NEXT: restarted, config, node key and store kept, still approved and running tasks"

step="remove and purge"
dpkg -r fog-agent || fail "dpkg -r"
active fog-agent && fail "fog-agent still active after remove"
[ -e /var/lib/private/fog-agent/node.key ] || fail "remove (not purge) deleted the state"
[ -e "$AGENT_CFG" ] || fail "remove (not purge) deleted the config"
dpkg --purge fog-agent || fail "dpkg --purge"
[ ! -e /var/lib/private/fog-agent ] || fail "purge left /var/lib/private/fog-agent"
[ ! -e /var/lib/fog-agent ] || fail "purge left /var/lib/fog-agent"
[ ! -e "$AGENT_CFG" ] || fail "purge left $AGENT_CFG"
ok "remove stopped the agent and kept its state; purge deleted the state and the config"

echo PASS > /root/result
echo "boot test: every check passed"
