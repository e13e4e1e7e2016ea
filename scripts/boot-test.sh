#!/usr/bin/env bash
# Boot test under a real systemd: the amd64 packages installed with dpkg into a Debian 12
# root that boots with systemd as PID 1 (systemd-nspawn), next to that root's own
# Mosquitto, and checked from inside (scripts/boot/inside.sh says what is checked).
#
#   scripts/boot-test.sh            # as root; builds the packages it needs
#
# The debootstrapped root (~60-90 s to make) is cached in target/boot/rootfs-bookworm and
# copied for every run; delete it to start from a new one. The container has its own
# network namespace with only loopback (--private-network), so its broker on 1883 never
# meets one on the host. Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "boot-test: needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
cache=${CARGO_TARGET_DIR:-target}/boot
base=$cache/rootfs-bookworm
root=$cache/root
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
next=$version+boot1

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# What the root holds besides minbase: systemd as PID 1, a broker and its clients, and
# the packages' Depends (dpkg -i fetches nothing; procps for the agent's /bin/kill). The
# cache is remade when this list changes.
include=systemd,systemd-sysv,dbus,mosquitto,mosquitto-clients,procps
if [ "$(cat "$base/.complete" 2>/dev/null)" != "$include" ]; then
    echo "== debootstrap bookworm into $base"
    rm -rf "$base"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$include" \
        bookworm "$base" http://deb.debian.org/debian > "$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log"; exit 1; }
    echo "$include" > "$base/.complete"
fi

echo "== packages $version and $next (amd64)"
# lintian and the name-resolution check are scripts/package.sh's own run's business.
ARCHS=amd64 LINTIAN=0 RESOLVE_CHECK=0 scripts/package.sh
VERSION=$next ARCHS=amd64 LINTIAN=0 RESOLVE_CHECK=0 scripts/package.sh

echo "== a fresh copy of the root"
rm -rf "$root"
cp -a "$base" "$root"
install -d "$root/root/debs"
cp "${CARGO_TARGET_DIR:-target}"/debian/fog-{agent,coordinator}_{"$version","$next"}_amd64.deb "$root/root/debs/"
install -m 0755 scripts/boot/inside.sh "$root/root/inside.sh"
printf 'VERSION=%s\nNEXT=%s\n' "$version" "$next" > "$root/root/versions"
install -m 0644 scripts/boot/fog-boot-test.service "$root/etc/systemd/system/"
ln -sf /etc/systemd/system/fog-boot-test.service "$root/etc/systemd/system/multi-user.target.wants/"
# The container's host name is its node id; say it, rather than inherit "root". And
# the /etc/hosts a Debian install writes (debootstrap copies the host's, or none): the
# packages' default broker is mqtt://localhost:1883, and the container has no DNS.
echo fog-boot > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfog-boot\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

echo "== boot"
# inside.sh powers the container off when it is done; the timeout is for a hang.
status=0
timeout --foreground -k 10 600 systemd-nspawn --register=no --keep-unit --private-network \
    --machine=fog-boot -D "$root" -b > "$cache/console.log" 2>&1 || status=$?
cat "$root/root/boot.log" 2>/dev/null || tail -40 "$cache/console.log"
if [ "$status" = 124 ]; then
    echo "boot-test: the container did not power off within 600 s" >&2
fi
if [ "$(cat "$root/root/result" 2>/dev/null)" != PASS ]; then
    echo "boot-test: FAILED (console: $cache/console.log; the root stays in $root)" >&2
    exit 1
fi
echo "boot-test: every check passed"
rm -rf "$root"
