#!/usr/bin/env bash
# ARM cross-check without Docker: build fog-agent for the ARM targets its packages ship
# (scripts/package.sh), run the fog-proto, fog-rt and fog-agent tests under qemu-user,
# run the release binary's `metrics --once` under qemu and check that its output
# parses, and print each stripped binary's size.
#
#   scripts/cross-check.sh            # aarch64, armv6 and armv7, the static agents shipped
#   TARGETS=aarch64 scripts/cross-check.sh
#   TEST_TARGETS="aarch64 armv6 armv7" scripts/cross-check.sh   # unit tests on all three
#
#   aarch64  aarch64-unknown-linux-musl      static (the arm64 package), under qemu-aarch64
#   armv6    arm-unknown-linux-musleabi      static ARMv6 (the armhf package), under qemu's
#                                            ARM1176, the Pi 1/Zero core
#   armv7    armv7-unknown-linux-musleabihf  static ARMv7 hard-float (the armv7 tarball),
#                                            under qemu's Cortex-A7, the Pi 2 core
# The 32-bit ARM standard libraries are built by nightly (scripts/arm-musl.sh).
#
# The unit tests run on TEST_TARGETS (default armv6); the other targets get the release
# build, `metrics --once` and `--version` under qemu. armv7 and aarch64 are left out of
# the default tests for CI's time (about 5 minutes and 1 minute more: dropping
# aarch64's saved 73 s of CI, 691 s to 618 s). armv7 is the same
# source, the same musl and the same 32-bit ARM as armv6, which runs them; aarch64 is a
# 64-bit target like the x86_64 host, where the whole suite runs, and qemu-user on an
# x86 host does not reproduce ARM's weaker memory ordering, so its tests under qemu add
# what its release binary under qemu already shows: its code generation. Where a change
# touches either (atomics, `cfg(target_arch)`), run TEST_TARGETS="aarch64 armv6 armv7".
#
# Uses rustup's toolchain and its prebuilt standard libraries (added when missing), and
# Debian's cross C compilers for ring's C code and as linkers; installs what it needs
# if missing (as root). The release binaries land where scripts/package.sh looks, so
# packaging after this check builds nothing again.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${TARGETS:-"aarch64 armv6 armv7"}
test_targets=${TEST_TARGETS:-"armv6"}
# shellcheck source=scripts/arm-musl.sh
. scripts/arm-musl.sh

apt_retry() {
    for i in 1 2 3 4 5; do
        if "$@"; then return 0; fi
        echo "cross-check: '$*' failed (attempt $i); retrying" >&2
        sleep $((i * 5))
    done
    return 1
}

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
case " $targets " in *" aarch64 "*)
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
esac
if [ ${#need[@]} -gt 0 ]; then
    echo "cross-check: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_retry apt-get update -qq
    apt_retry apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
target_dir=${CARGO_TARGET_DIR:-target}
echo "cross-check: $(rustc --version)"

check_target() {
    local short=$1 triple gcc qemu cargo=(cargo)
    case $short in
        armv6 | armv7) arm_musl_setup "$short"; triple=$ARM_MUSL_TRIPLE; qemu=$ARM_MUSL_RUNNER
                       cargo=("${ARM_MUSL_CARGO[@]}") ;;
        aarch64) triple=aarch64-unknown-linux-musl; gcc=aarch64-linux-gnu-gcc; qemu="qemu-aarch64" ;;
        *) echo "unknown target $short" >&2; return 1 ;;
    esac
    local up; up=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    if [ "$short" = aarch64 ]; then
        rustup target list --installed | grep -qx "$triple" || apt_retry rustup target add "$triple"
        export "CARGO_TARGET_${up}_LINKER=$gcc"
        # ring's C code needs the cross C compiler too (arm_musl_setup sets its own).
        export "CC_${triple//-/_}=$gcc"
    fi
    export "CARGO_TARGET_${up}_RUNNER=$qemu"
    # qemu-user ignores the guest's RLIMIT_AS; tests that need it skip (and say so)
    # only when this is set or they find themselves running as qemu.
    export FOG_UNDER_QEMU=1
    # Tests that start a binary of the build themselves (agent/tests/cli.rs) run it
    # through the same emulator; cargo's runner wraps only the test executable.
    export FOG_TEST_RUNNER="$qemu"

    if [[ " $test_targets " == *" $short "* ]]; then
        echo "== $triple: unit tests of fog-proto, fog-rt and fog-agent under ${qemu%% *}"
        # One test at a time: a test that forks (command tasks) while other test threads
        # run can leave the child stuck on a lock qemu-user's own threads held at the
        # fork (seen here: a child of `missing_program_is_a_clear_error` waiting on a
        # futex forever). Serial costs ~10 % (aarch64: 51 s parallel, 57 s serial).
        "${cargo[@]}" test --locked --target "$triple" -p fog-proto -p fog-rt -p fog-agent --lib --bins --tests -- --test-threads=1
    else
        echo "== $triple: unit tests left to TEST_TARGETS ($test_targets)"
    fi

    echo "== $triple: fog-agent as packaged (profile agent)"
    "${cargo[@]}" build --locked --profile agent --target "$triple" -p fog-agent
    local bin=$target_dir/$triple/agent/fog-agent

    echo "== $triple: fog-agent metrics --once under ${qemu%% *}"
    $qemu "$bin" metrics --once > "$target_dir/metrics-$short.json"
    python3 - "$target_dir/metrics-$short.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["memory"]["total_bytes"] > 0, "no memory figure"
assert r["uptime_secs"] > 0, "no uptime"
assert isinstance(r["cpu"]["per_core_pct"], list)
print(f"   reading parses: {len(r['cpu']['per_core_pct'])} cores, {len(r['disks'])} disks, {len(r['networks'])} interfaces")
PY
    $qemu "$bin" --version
    local size linkage; size=$(stat -c %s "$bin")
    linkage=$(readelf -d "$bin" | grep -q NEEDED && echo dynamic || echo static)
    sizes+=("$(printf '%-34s %8d bytes (%.2f MiB, %s)' "$triple" "$size" "$(awk "BEGIN{print $size/1048576}")" "$linkage")")
}

sizes=()
for t in $targets; do check_target "$t"; done
echo
echo "stripped release fog-agent:"
printf '  %s\n' "${sizes[@]}"
