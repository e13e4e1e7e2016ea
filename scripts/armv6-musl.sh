#!/usr/bin/env bash
# A static ARMv6 toolchain for fog-agent (Raspberry Pi 1, Zero, Zero W, and every later
# 32-bit Pi): rustup has no standard library for any 32-bit ARM musl target here (its
# server answers 404), so the standard library is built from rust-src with nightly's
# -Z build-std, against Debian's own armel musl (musl-dev:armel, ARMv5TE soft-float
# code, which an ARMv6 runs), linked by Debian's armel cross gcc. Soft-float is the
# EABI the musl build has; a static binary does not care which float ABI the board's
# userland uses, so it runs on Raspberry Pi OS armhf as on Debian armel.
#
#   source scripts/armv6-musl.sh     # sets ARMV6_TRIPLE, ARMV6_CARGO and the env below
#
# Makes (once) target/armv6-musl/: the musl sysroot, a gcc specs file pointing at it,
# and the wrapper arm-musl-gcc used as CC and linker. Exports the cargo variables for
# the target. Installs gcc-arm-linux-gnueabi and nightly's rust-src when missing (as
# root).

ARMV6_TRIPLE=arm-unknown-linux-musleabi
# qemu's ARM1176 (the Pi 1/Zero core) traps any instruction an ARMv6 lacks.
ARMV6_RUNNER="qemu-arm -cpu arm1176"
armv6_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}/armv6-musl")
armv6_deb_url=http://deb.debian.org/debian/pool/main/m/musl/musl-dev_1.2.3-1_armel.deb
armv6_deb_sha256=749e86bed4d1396065f8a1ea64a0b9f140065f984a400a96b2b4469681fe8054

armv6_setup() {
    if ! command -v arm-linux-gnueabi-gcc >/dev/null; then
        echo "armv6-musl: installing gcc-arm-linux-gnueabi" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-arm-linux-gnueabi >/dev/null
    fi
    rustup +nightly component list --installed 2>/dev/null | grep -qx rust-src \
        || rustup +nightly component add rust-src >&2
    local sysroot=$armv6_dir/sysroot lib
    lib=$sysroot/usr/lib/arm-linux-musleabi
    if [ ! -f "$armv6_dir/.complete" ] || [ "$(cat "$armv6_dir/.complete")" != "$armv6_deb_sha256" ]; then
        rm -rf "$armv6_dir" && mkdir -p "$armv6_dir"
        curl -sSf --retry 5 -o "$armv6_dir/musl-dev.deb" "$armv6_deb_url"
        echo "$armv6_deb_sha256  $armv6_dir/musl-dev.deb" | sha256sum -c --quiet - \
            || { echo "armv6-musl: $armv6_deb_url does not match its checksum" >&2; return 1; }
        dpkg-deb -x "$armv6_dir/musl-dev.deb" "$sysroot"
        # Debian's musl-gcc specs, pointed at this sysroot instead of /usr.
        sed "s|/usr/lib/arm-linux-musleabi|$lib|g; s|/usr/include/arm-linux-musleabi|$sysroot/usr/include/arm-linux-musleabi|g" \
            "$lib/musl-gcc.specs" > "$armv6_dir/musl.specs"
        # Rust's unwind crate links -lunwind on musl; libgcc's unwinder (ARM EHABI) is
        # the one this toolchain has.
        cp "$(dirname "$(arm-linux-gnueabi-gcc -print-libgcc-file-name)")/libgcc_eh.a" "$lib/libunwind.a"
        printf '#!/bin/sh\nexec arm-linux-gnueabi-gcc -march=armv6 -mfloat-abi=soft -specs=%s "$@"\n' \
            "$armv6_dir/musl.specs" > "$armv6_dir/arm-musl-gcc"
        chmod +x "$armv6_dir/arm-musl-gcc"
        echo "$armv6_deb_sha256" > "$armv6_dir/.complete"
    fi
    export CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABI_LINKER=$armv6_dir/arm-musl-gcc
    export CC_arm_unknown_linux_musleabi=$armv6_dir/arm-musl-gcc
    # The C runtime is the sysroot's, through the specs, not rustc's own (it has none).
    # musl 1.2's 64-bit time_t (the libc crate's musl v1.2 layout, also for std, which
    # build-std compiles with these flags): the default 32-bit layout goes through
    # musl 1.2.3's time32 compatibility symbols, whose wait4 never fills in the child's
    # rusage (it converts only when wait4 returns 0, never on success): task CPU time
    # and peak RSS read 0 (caught by the exec tests under qemu). And a Pi deployed now
    # may well run past 2038.
    export CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABI_RUSTFLAGS="-C link-self-contained=no --cfg libc_unstable_musl_v1_2"
}

# cargo for the target: nightly, with the standard library built from source.
ARMV6_CARGO=(cargo +nightly -Z build-std=std,panic_unwind)
