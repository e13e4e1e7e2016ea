#!/usr/bin/env bash
# Usage: scripts/unit-security.sh
#
# Prints systemd's exposure score (0 = locked down, 10 = unprotected) for every unit
# in systemd/, one line each:
#
#   fog-agent.service        exposure 1.1  OK
#
# and exits non-zero if fog-agent.service scores above MAX_AGENT_EXPOSURE (default
# 2.0), so a change that loosens the agent's sandbox is noticed. The score comes from
# `systemd-analyze security --offline=true <unit file>`, which reads the file as
# written: no systemd running, no root, and the ExecStart= binary need not exist
# (checked with systemd 252, Debian 12). Drop-ins installed on this machine for a
# unit of the same name are merged in, as systemd would. For the checks behind a
# score:  systemd-analyze security --offline=true systemd/fog-agent.service
set -euo pipefail

cd "$(dirname "$0")/.."
max_agent="${MAX_AGENT_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null; then
    echo "unit-security.sh: systemd-analyze not found (install systemd)" >&2
    exit 2
fi

status=0
for unit in systemd/*.service; do
    name="$(basename "$unit")"
    # C locale: plain "->" and ":-)" instead of arrows and emoji, same wording.
    if ! out="$(LC_ALL=C systemd-analyze security --offline=true --no-pager "$unit" 2>&1)"; then
        echo "$out" >&2
        echo "unit-security.sh: systemd-analyze failed on $unit" >&2
        exit 2
    fi
    # "-> Overall exposure level for fog-agent.service: 1.1 OK :-)"
    score="" rating=""
    read -r score rating < <(
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' <<<"$out"
    ) || true
    if [[ -z "$score" ]]; then
        echo "$out" >&2
        echo "unit-security.sh: no overall exposure level for $unit" >&2
        exit 2
    fi
    verdict="$rating"
    if [[ "$name" == fog-agent.service ]] &&
        awk -v s="$score" -v m="$max_agent" 'BEGIN { exit !(s > m) }'; then
        verdict="$rating, ABOVE MAX_AGENT_EXPOSURE=$max_agent"
        status=1
    fi
    printf '%-24s exposure %-4s %s\n' "$name" "$score" "$verdict"
done
exit "$status"
