#!/usr/bin/env bash
# ARM cross-check without Docker: build fog-agent for aarch64 and armv7 with Debian's
# own Rust (rustc-web/cargo-web from bookworm-security), run the fog-proto and
# fog-agent unit tests under qemu-user, run `fog-agent metrics --once` under qemu and
# check that its output parses, and print each stripped binary's size.
#
#   scripts/cross-check.sh            # both targets
#   TARGETS=aarch64 scripts/cross-check.sh
#
# aarch64 uses Debian's prebuilt standard library (libstd-rust-web-dev:arm64); armv7
# builds the standard library from rust-web-src with -Zbuild-std (the armhf index of
# bookworm-security has been seen stuck mid-sync). Installs what it needs if missing
# (as root). Debian's toolchain is called by path: rustup's comes first on PATH and has
# no ARM standard library.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${TARGETS:-"aarch64 armv7"}

apt_retry() {
    for i in 1 2 3 4 5; do
        if "$@"; then return 0; fi
        echo "cross-check: '$*' failed (attempt $i); retrying" >&2
        sleep $((i * 5))
    done
    return 1
}

need=()
[ -x /usr/bin/cargo ] && /usr/bin/cargo --version 2>/dev/null | grep -q '1\.9[6-9]\|1\.[1-9][0-9][0-9]' || need+=(rustc-web cargo-web)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
case " $targets " in *" aarch64 "*)
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; }
    dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1 || need+=(libstd-rust-web-dev:arm64)
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
esac
case " $targets " in *" armv7 "*)
    dpkg -s rust-web-src >/dev/null 2>&1 || need+=(rust-web-src)
    command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
esac
if [ ${#need[@]} -gt 0 ]; then
    echo "cross-check: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_retry apt-get update -qq
    apt_retry apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

CARGO=/usr/bin/cargo
export RUSTC=/usr/bin/rustc
# Separate target dir: Debian's rustc must not share artefacts with rustup's.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_CROSS:-target/cross}
echo "cross-check: $($RUSTC --version)"

check_target() {
    local short=$1 triple gcc sysroot qemu extra=()
    case $short in
        aarch64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu-gcc; qemu=qemu-aarch64
                 # libstd-rust-web-dev:arm64 pulls in libc6:arm64 (/lib/aarch64-linux-gnu),
                 # newer than the cross libc in /usr/aarch64-linux-gnu. With `-L
                 # /usr/aarch64-linux-gnu` the old ld.so loads the new libc.so.6 and
                 # pthread_create spins forever (seen here; a C repro hangs the same way).
                 # Use the matching multiarch loader and libc when they are installed.
                 if [ -e /lib/ld-linux-aarch64.so.1 ]; then sysroot=/; else sysroot=/usr/aarch64-linux-gnu; fi ;;
        armv7) triple=armv7-unknown-linux-gnueabihf; gcc=arm-linux-gnueabihf-gcc; sysroot=/usr/arm-linux-gnueabihf; qemu=qemu-arm
               extra=(-Zbuild-std=std,panic_unwind); export RUSTC_BOOTSTRAP=1 ;;
        *) echo "unknown target $short" >&2; return 1 ;;
    esac
    local up; up=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${up}_LINKER=$gcc"
    export "CARGO_TARGET_${up}_RUNNER=$qemu -L $sysroot"
    # qemu-user ignores the guest's RLIMIT_AS; tests that need it skip (and say so)
    # only when this is set or they find themselves running as qemu.
    export FOG_UNDER_QEMU=1
    # Tests that start a binary of the build themselves (agent/tests/cli.rs) run it
    # through the same emulator; cargo's runner wraps only the test executable.
    export FOG_TEST_RUNNER="$qemu -L $sysroot"
    # ring's C code needs the cross C compiler too.
    export "CC_${triple//-/_}=$gcc"

    echo "== $triple: unit tests of fog-proto, fog-rt and fog-agent under $qemu"
    # One test at a time: a test that forks (command tasks) while other test threads
    # run can leave the child stuck on a lock qemu-user's own threads held at the
    # fork (seen here: a child of `missing_program_is_a_clear_error` waiting on a
    # futex forever). Serial costs ~10 % (aarch64: 51 s parallel, 57 s serial).
    $CARGO test --locked --target "$triple" "${extra[@]}" -p fog-proto -p fog-rt -p fog-agent --lib --bins --tests -- --test-threads=1

    echo "== $triple: release build of fog-agent"
    $CARGO build --locked --release --target "$triple" "${extra[@]}" -p fog-agent
    local bin=$CARGO_TARGET_DIR/$triple/release/fog-agent

    echo "== $triple: fog-agent metrics --once under $qemu"
    $qemu -L "$sysroot" "$bin" metrics --once > "$CARGO_TARGET_DIR/metrics-$short.json"
    python3 - "$CARGO_TARGET_DIR/metrics-$short.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["memory"]["total_bytes"] > 0, "no memory figure"
assert r["uptime_secs"] > 0, "no uptime"
assert isinstance(r["cpu"]["per_core_pct"], list)
print(f"   reading parses: {len(r['cpu']['per_core_pct'])} cores, {len(r['disks'])} disks, {len(r['networks'])} interfaces")
PY
    $qemu -L "$sysroot" "$bin" --version
    local size; size=$(stat -c %s "$bin")
    sizes+=("$(printf '%-34s %8d bytes (%.2f MiB)' "$triple" "$size" "$(awk "BEGIN{print $size/1048576}")")")
    unset RUSTC_BOOTSTRAP
}

sizes=()
for t in $targets; do check_target "$t"; done
echo
echo "stripped release fog-agent:"
printf '  %s\n' "${sizes[@]}"
