#!/usr/bin/env bash
# Static 32-bit ARM toolchains for fog-agent: rustup has no standard library for any
# 32-bit ARM musl target here (its server answers 404), so the standard library is built
# from rust-src with nightly's -Z build-std, against Debian's own musl for the matching
# Debian architecture, linked by Debian's cross gcc for it:
#
#   armv6  arm-unknown-linux-musleabi      Debian armel's musl (ARMv5TE soft-float code,
#          which an ARMv6 runs) and gcc-arm-linux-gnueabi, -march=armv6: the Pi 1,
#          Zero, Zero W and every later 32-bit Pi (the armhf package). Soft-float is
#          the EABI that musl build has; a static binary does not care which float ABI
#          the board's userland uses, so it runs on Raspberry Pi OS armhf as on Debian
#          armel. Tested under qemu's ARM1176 (the Pi 1/Zero core).
#   armv7  armv7-unknown-linux-musleabihf  Debian armhf's musl (ARMv7-A, VFPv3-D16,
#          Thumb-2, hard-float: Debian armhf's baseline) and gcc-arm-linux-gnueabihf:
#          Pi 2 and later, BeagleBone, most 32-bit ARM boards (the static tarball).
#          Tested under qemu's Cortex-A7 (the Pi 2 core).
#
#   . scripts/arm-musl.sh
#   arm_musl_setup armv7   # sets ARM_MUSL_TRIPLE, ARM_MUSL_RUNNER, ARM_MUSL_CARGO and the
#                          # cargo variables for the target
#
# Makes (once per target) target/<short>-musl/: the musl sysroot, a gcc specs file
# pointing at it, and the wrapper arm-musl-gcc used as CC and linker. Installs the cross
# gcc and nightly's rust-src when missing (as root).

# cargo for these targets: nightly, with the standard library built from source.
ARM_MUSL_CARGO=(cargo +nightly -Z build-std=std,panic_unwind)

arm_musl_setup() {
    local short=$1 deb_url deb_sha256 gcc gcc_pkg multiarch cflags
    case $short in
        armv6)
            ARM_MUSL_TRIPLE=arm-unknown-linux-musleabi
            ARM_MUSL_RUNNER="qemu-arm -cpu arm1176"
            deb_url=http://deb.debian.org/debian/pool/main/m/musl/musl-dev_1.2.3-1_armel.deb
            deb_sha256=749e86bed4d1396065f8a1ea64a0b9f140065f984a400a96b2b4469681fe8054
            gcc=arm-linux-gnueabi-gcc gcc_pkg=gcc-arm-linux-gnueabi multiarch=arm-linux-musleabi
            cflags="-march=armv6 -mfloat-abi=soft" ;;
        armv7)
            ARM_MUSL_TRIPLE=armv7-unknown-linux-musleabihf
            ARM_MUSL_RUNNER="qemu-arm -cpu cortex-a7"
            deb_url=http://deb.debian.org/debian/pool/main/m/musl/musl-dev_1.2.3-1_armhf.deb
            deb_sha256=3a9dbb8ae66716f117dce87558fb47a161db0eebf0700cc6bf84ef6871ce7d38
            gcc=arm-linux-gnueabihf-gcc gcc_pkg=gcc-arm-linux-gnueabihf multiarch=arm-linux-musleabihf
            cflags="-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard" ;;
        *) echo "arm-musl: unknown target $short (armv6 or armv7)" >&2; return 1 ;;
    esac
    if ! command -v "$gcc" >/dev/null; then
        echo "arm-musl: installing $gcc_pkg" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$gcc_pkg" >/dev/null
    fi
    rustup +nightly component list --installed 2>/dev/null | grep -qx rust-src \
        || rustup +nightly component add rust-src >&2
    local dir sysroot lib
    dir=$(realpath -m "${CARGO_TARGET_DIR:-target}/$short-musl")
    sysroot=$dir/sysroot
    lib=$sysroot/usr/lib/$multiarch
    if [ ! -f "$dir/.complete" ] || [ "$(cat "$dir/.complete")" != "$deb_sha256" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        curl -sSf --retry 5 -o "$dir/musl-dev.deb" "$deb_url"
        echo "$deb_sha256  $dir/musl-dev.deb" | sha256sum -c --quiet - \
            || { echo "arm-musl: $deb_url does not match its checksum" >&2; return 1; }
        dpkg-deb -x "$dir/musl-dev.deb" "$sysroot"
        # Debian's musl-gcc specs, pointed at this sysroot instead of /usr.
        sed "s|/usr/lib/$multiarch|$lib|g; s|/usr/include/$multiarch|$sysroot/usr/include/$multiarch|g" \
            "$lib/musl-gcc.specs" > "$dir/musl.specs"
        # Rust's unwind crate links -lunwind on musl; libgcc's unwinder (ARM EHABI) is
        # the one this toolchain has.
        cp "$(dirname "$("$gcc" -print-libgcc-file-name)")/libgcc_eh.a" "$lib/libunwind.a"
        printf '#!/bin/sh\nexec %s %s -specs=%s "$@"\n' "$gcc" "$cflags" "$dir/musl.specs" > "$dir/arm-musl-gcc"
        chmod +x "$dir/arm-musl-gcc"
        echo "$deb_sha256" > "$dir/.complete"
    fi
    local up=${ARM_MUSL_TRIPLE//-/_}
    up=${up^^}
    export "CARGO_TARGET_${up}_LINKER=$dir/arm-musl-gcc"
    export "CC_${ARM_MUSL_TRIPLE//-/_}=$dir/arm-musl-gcc"
    # The C runtime is the sysroot's, through the specs, not rustc's own (it has none).
    # musl 1.2's 64-bit time_t (the libc crate's musl v1.2 layout, also for std, which
    # build-std compiles with these flags): the default 32-bit layout goes through
    # musl 1.2.3's time32 compatibility symbols, whose wait4 never fills in the child's
    # rusage (it converts only when wait4 returns 0, never on success): task CPU time
    # and peak RSS read 0 (caught by the exec tests under qemu). And a Pi deployed now
    # may well run past 2038.
    export "CARGO_TARGET_${up}_RUSTFLAGS=-C link-self-contained=no --cfg libc_unstable_musl_v1_2"
}

# The short name (armv6, armv7) of a triple this file builds, or nothing.
arm_musl_short_of() {
    case $1 in
        arm-unknown-linux-musleabi) echo armv6 ;;
        armv7-unknown-linux-musleabihf) echo armv7 ;;
    esac
}
