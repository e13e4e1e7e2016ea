#!/usr/bin/env bash
# Debian packages: fog-agent for amd64, arm64 and armhf, fog-coordinator for amd64 and
# arm64, into target/debian/, then lintian on each (an error fails the script).
#
#   scripts/package.sh                     # everything
#   ARCHS="amd64" scripts/package.sh       # some architectures
#   PACKAGES="fog-agent" scripts/package.sh
#   VERSION=0.1.0+1 scripts/package.sh     # another version (the boot test's upgrade)
#   LINTIAN=0 RESOLVE_CHECK=0 scripts/package.sh   # skip lintian, the name-resolution check
#
# With fog-agent, every static agent also goes into a tarball for systems without dpkg
# (Alpine, Buildroot, Yocto, a board's vendor image), target/debian/
# fog-agent-<version>-<triple>.tar.gz: amd64 gives x86_64, arm64 aarch64, and armhf both
# the ARMv6 binary of the package and an ARMv7 hard-float one (armv7 boards run either;
# docs/install.md).
#
# Which binary goes into which package, and why (docs/install.md, "Packages"):
#   fog-agent amd64        x86_64-unknown-linux-musl      static
#   fog-agent arm64        aarch64-unknown-linux-musl     static
#   fog-agent armhf        arm-unknown-linux-musleabi     static ARMv6 (every 32-bit Pi,
#                          the Pi 1 and Zero too: scripts/arm-musl.sh)
#   (tarball only)         armv7-unknown-linux-musleabihf static ARMv7 hard-float
#   fog-coordinator amd64  x86_64-unknown-linux-gnu       glibc
#   fog-coordinator arm64  aarch64-unknown-linux-musl     static
# A glibc binary's Depends come from its ELF version needs (libc6 (>= 2.N)); a static
# one depends on nothing but init-system-helpers (its maintainer scripts), and the agent
# on procps (/bin/kill for systemctl reload).
#
# Each agent binary is checked to reach a broker given by host name, through /etc/hosts
# and DNS (scripts/name-resolution.sh; ARM ones under qemu-user).
# Needs rustup's standard libraries for the targets (added here when missing), musl-tools
# and the Debian cross compilers for ring's C code (installed here when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${ARCHS:-"amd64 arm64 armhf"}
packages=${PACKAGES:-"fog-agent fog-coordinator"}
version=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
out=${CARGO_TARGET_DIR:-target}/debian
target_dir=${CARGO_TARGET_DIR:-target}
here=packaging/deb

die() { echo "package: $*" >&2; exit 1; }
# shellcheck source=scripts/arm-musl.sh
. scripts/arm-musl.sh

triple_of() { # package arch
    case "$1/$2" in
        fog-agent/amd64) echo x86_64-unknown-linux-musl ;;
        fog-agent/arm64 | fog-coordinator/arm64) echo aarch64-unknown-linux-musl ;;
        fog-agent/armhf) echo arm-unknown-linux-musleabi ;;
        fog-coordinator/amd64) echo x86_64-unknown-linux-gnu ;;
        *) return 1 ;;
    esac
}

cross_gcc_of() { # triple -> C compiler (and linker) for ring's C code
    case "$1" in
        x86_64-unknown-linux-musl) echo musl-gcc ;;
        aarch64-*) echo aarch64-linux-gnu-gcc ;;
        arm-unknown-linux-musleabi) echo arm-linux-gnueabi-gcc ;;
        armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf-gcc ;;
        *) echo cc ;;
    esac
}

runner_of() { # triple -> how to run its binaries here
    case "$1" in
        x86_64-*) ;;
        aarch64-*) echo qemu-aarch64 -L /usr/aarch64-linux-gnu ;;
        arm-unknown-linux-musleabi) echo "qemu-arm -cpu arm1176" ;;
        armv7-unknown-linux-musleabihf) echo "qemu-arm -cpu cortex-a7" ;;
    esac
}

install_tools() {
    local need=() t
    for t in "$@"; do
        case $t in
            musl-gcc) command -v musl-gcc >/dev/null || need+=(musl-tools) ;;
            aarch64-linux-gnu-gcc) command -v "$t" >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
            arm-linux-gnueabihf-gcc) command -v "$t" >/dev/null || need+=(gcc-arm-linux-gnueabihf) ;;
            arm-linux-gnueabi-gcc) command -v "$t" >/dev/null || need+=(gcc-arm-linux-gnueabi) ;;
        esac
    done
    command -v lintian >/dev/null || need+=(lintian)
    command -v help2man >/dev/null || need+=(help2man)
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    if [ ${#need[@]} -gt 0 ]; then
        echo "package: installing ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

build() { # package triple -> path of the stripped binary
    local pkg=$1 triple=$2 gcc up profile=release arm
    # The agent's own profile: the smallest code (Cargo.toml, [profile.agent]).
    [ "$pkg" = fog-agent ] && profile=agent
    arm=$(arm_musl_short_of "$triple")
    if [ -n "$arm" ]; then
        # No prebuilt standard library: nightly builds it (scripts/arm-musl.sh).
        arm_musl_setup "$arm" >&2
        "${ARM_MUSL_CARGO[@]}" build --profile "$profile" --locked --target "$triple" -p "$pkg" >&2
        echo "$target_dir/$triple/$profile/$pkg"
        return
    fi
    gcc=$(cross_gcc_of "$triple")
    up=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    if [ "$triple" != x86_64-unknown-linux-gnu ]; then
        rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2
        export "CC_${triple//-/_}=$gcc"
    fi
    # The linker: the host's cc links x86_64 (for musl, rustc links its own
    # self-contained musl statically; musl-gcc as the linker would make a binary that
    # needs /lib/ld-musl-x86_64.so.1); ARM needs the cross gcc.
    case $triple in x86_64-*) ;; *) export "CARGO_TARGET_${up}_LINKER=$gcc" ;; esac
    if [ "$triple" = x86_64-unknown-linux-musl ]; then
        # The static-pie agent's relative relocations packed as RELR (GNU ld >= 2.38;
        # rustc's musl 1.2.5 applies them at start): 116 KiB smaller, 148 KiB less RSS
        # (docs/performance.md, "RELR relocations"). The other static builds are not
        # PIE and have no relative relocations to pack.
        export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs"
    fi
    # Built alone: beside another package Cargo unifies features into a larger binary.
    cargo build --profile "$profile" --locked --target "$triple" -p "$pkg" >&2
    if [ "$triple" = x86_64-unknown-linux-musl ] && ! readelf -d "$target_dir/$triple/$profile/$pkg" | grep -q '(RELR)'; then
        die "$pkg for $triple was linked without RELR relocations (is GNU ld older than 2.38?)"
    fi
    echo "$target_dir/$triple/$profile/$pkg"
}

# Depends of a binary: libc6 (>= highest GLIBC_ version needed) and libgcc-s1 when it
# links those; nothing for a static binary. Any other shared library is a mistake here.
depends_of() {
    # init-system-helpers: deb-systemd-helper and deb-systemd-invoke in the maintainer
    # scripts (essential, so lintian wants a version).
    local bin=$1 needed glibc deps=("init-system-helpers (>= 1.52)")
    # The agent's ExecReload= is /bin/kill (procps; a minimal Debian lacks it).
    [[ $(basename "$bin") == fog-agent ]] && deps+=(procps)
    needed=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
    for lib in $needed; do
        case $lib in
            libc.so.6 | libm.so.6 | ld-linux*.so.* | libdl.so.2 | libpthread.so.0 | librt.so.1) ;;
            libgcc_s.so.1) deps+=(libgcc-s1) ;;
            *) die "$bin needs $lib, which no Depends covers" ;;
        esac
    done
    if [ -n "$needed" ]; then
        glibc=$(readelf -V --wide "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
        [ -n "$glibc" ] || die "$bin links libc.so.6 but needs no GLIBC_ version"
        deps+=("libc6 (>= $glibc)")
    fi
    (IFS=,; echo "${deps[*]}" | sed 's/,/, /g')
}

summary_of() {
    case $1 in
        fog-agent) echo "fog node agent: readings, liveness and tasks over MQTT" ;;
        fog-coordinator) echo "fog coordinator: fleet registry and task placement over MQTT" ;;
    esac
}

# The manual page, from the binary's own --help (help2man), so it cannot drift from
# what the binary accepts. An ARM binary answers under qemu-user, through a wrapper
# named like the binary (help2man names the page after the program it runs).
manpage() { # package binary triple -> troff on stdout
    local pkg=$1 bin=$2 runner dir
    runner=$(runner_of "$3")
    dir=$(mktemp -d)
    printf '#!/bin/sh\nexec %s %q "$@"\n' "$runner" "$(realpath "$bin")" > "$dir/$pkg"
    chmod +x "$dir/$pkg"
    printf '[SEE ALSO]\nThe guides in /usr/share/doc/%s: install.md, operations.md,\nconfiguration.md, security.md.\n' \
        "$pkg" > "$dir/see-also"
    help2man --no-info --section=1 --name="$(summary_of "$pkg")" --version-string="$version" \
        --include="$dir/see-also" "$dir/$pkg"
    rm -rf "$dir"
}

stage() { # package arch binary triple
    local pkg=$1 arch=$2 bin=$3 triple=$4 short=${1#fog-} root deb
    root=$out/stage/${pkg}_$arch
    rm -rf "$root"
    install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/fog" \
        "$root/usr/share/doc/$pkg"
    install -m 0755 "$bin" "$root/usr/bin/$pkg"
    install -m 0644 "systemd/$pkg.service" "$root/lib/systemd/system/"
    install -m 0644 "$short/default.toml" "$root/etc/fog/$short.toml"
    [ "$pkg" = fog-agent ] && install -d -m 0755 "$root/etc/fog/trusted-keys"
    # Docs: the README and the operator's guides; the Debian changelog and copyright.
    install -m 0644 README.md docs/install.md docs/operations.md docs/configuration.md \
        docs/security.md "$root/usr/share/doc/$pkg/"
    install -m 0644 "$here/copyright" "$root/usr/share/doc/$pkg/copyright"
    install -d "$root/usr/share/man/man1"
    manpage "$pkg" "$bin" "$triple" | gzip -9n > "$root/usr/share/man/man1/$pkg.1.gz"
    chmod 0644 "$root/usr/share/man/man1/$pkg.1.gz"
    [ -s "$root/usr/share/man/man1/$pkg.1.gz" ] || die "no manual page for $pkg"
    # A static binary is the point of the musl builds (no libc to match on the node);
    # lintian flags one that is not static-pie (aarch64) as an error unless told.
    if ! readelf -d "$bin" | grep -q NEEDED && ! readelf -h "$bin" | grep -q 'DYN'; then
        install -d "$root/usr/share/lintian/overrides"
        echo "$pkg: statically-linked-binary [usr/bin/$pkg]" > "$root/usr/share/lintian/overrides/$pkg"
        chmod 0644 "$root/usr/share/lintian/overrides/$pkg"
    fi
    {
        if [ "$version" != "$(sed -n '1s/.*(\(.*\)).*/\1/p' "$here/changelog.in")" ]; then
            printf '%s (%s) bookworm; urgency=medium\n\n  * Built from %s.\n\n -- fog developers <fog@example.invalid>  %s\n\n' \
                "$pkg" "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo source)" "$(date -R -u)"
        fi
        sed "s/@PKG@/$pkg/g" "$here/changelog.in"
    } | gzip -9n > "$root/usr/share/doc/$pkg/changelog.gz"
    chmod 0644 "$root/usr/share/doc/$pkg/changelog.gz"

    local state=$pkg subst
    subst="s|@PKG@|$pkg|g; s|@UNIT@|$pkg.service|g; s|@STATE@|$state|g"
    for s in postinst prerm postrm; do
        sed "$subst" "$here/$s.in" > "$root/DEBIAN/$s"
        chmod 0755 "$root/DEBIAN/$s"
    done
    echo "/etc/fog/$short.toml" > "$root/DEBIAN/conffiles"
    local size summary
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    summary=$(summary_of "$pkg")
    awk -v pkg="$pkg" -v ver="$version" -v arch="$arch" -v size="$size" \
        -v deps="$(depends_of "$bin")" -v summary="$summary" -v descfile="$here/$pkg.description" '
        /@DESCRIPTION@/ { while ((getline l < descfile) > 0) print l; next }
        { gsub("@PKG@", pkg); gsub("@VERSION@", ver); gsub("@ARCH@", arch); gsub("@SIZE@", size)
          gsub("@DEPENDS@", deps); gsub("@SUMMARY@", summary); print }' \
        "$here/control.in" > "$root/DEBIAN/control"
    (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
        > "$root/DEBIAN/md5sums"
    deb=$out/${pkg}_${version}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    echo "$deb"
}

# A static agent for systems without dpkg: the binary, its unit, the default config and
# the guides, in fog-agent-<version>-<triple>/, as a reproducible tarball.
tarball() { # triple binary -> path of the tarball
    local triple=$1 bin=$2 name dir
    name=fog-agent-$version-$triple
    dir=$out/stage/$name
    rm -rf "$dir"
    install -d "$dir"
    install -m 0755 "$bin" "$dir/fog-agent"
    install -m 0644 systemd/fog-agent.service "$dir/"
    install -m 0644 agent/default.toml "$dir/agent.toml"
    install -m 0644 README.md docs/install.md docs/configuration.md docs/security.md "$dir/"
    install -m 0644 "$here/copyright" "$dir/copyright"
    tar -C "$out/stage" --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@${SOURCE_DATE_EPOCH:-0}" -cf - "$name" | gzip -9n > "$out/$name.tar.gz"
    echo "$out/$name.tar.gz"
}

# A musl build must be static: no interpreter, no libraries.
check_static() { # binary
    local bin=$1
    if readelf -d "$bin" | grep -q NEEDED || readelf -l "$bin" | grep -q 'program interpreter'; then
        die "$bin should be static but has an interpreter or needs libraries: $(readelf -d "$bin" | grep NEEDED; readelf -l "$bin" | grep interpreter)"
    fi
}

# A built agent must be static and reach a broker by host name.
check_agent() { # triple binary
    local triple=$1 bin=$2
    check_static "$bin"
    if [ "${RESOLVE_CHECK:-1}" != 0 ]; then
        echo "== fog-agent $triple: a broker by host name (scripts/name-resolution.sh)"
        # shellcheck disable=SC2046
        scripts/name-resolution.sh "$bin" $(runner_of "$triple")
    fi
}

mkdir -p "$out"
gccs=()
for arch in $archs; do for pkg in $packages; do
    t=$(triple_of "$pkg" "$arch") && gccs+=("$(cross_gcc_of "$t")")
    [ "$pkg/$arch" = fog-agent/armhf ] && gccs+=("$(cross_gcc_of armv7-unknown-linux-musleabihf)")
done; done
install_tools "${gccs[@]}"

built=()
tarballs=()
for arch in $archs; do
    for pkg in $packages; do
        triple=$(triple_of "$pkg" "$arch") || continue
        echo "== $pkg $arch ($triple)"
        bin=$(build "$pkg" "$triple")
        [[ $triple == *musl* ]] && check_static "$bin"
        if [ "$pkg" = fog-agent ]; then
            check_agent "$triple" "$bin"
            tarballs+=("$(tarball "$triple" "$bin")")
        fi
        built+=("$(stage "$pkg" "$arch" "$bin" "$triple")")
        if [ "$pkg/$arch" = fog-agent/armhf ]; then
            # The ARMv7 hard-float agent: a tarball beside the ARMv6 package.
            triple=armv7-unknown-linux-musleabihf
            echo "== fog-agent $triple (tarball only)"
            bin=$(build fog-agent "$triple")
            check_agent "$triple" "$bin"
            tarballs+=("$(tarball "$triple" "$bin")")
        fi
    done
done

if [ "${LINTIAN:-1}" != 0 ]; then
echo
echo "== lintian"
# Errors fail (lintian --fail-on error, its default); warnings are printed. The
# warnings left, and why: docs/install.md ("Packages").
status=0
for deb in "${built[@]}"; do
    lintian --tag-display-limit 0 "$deb" || status=1
done
[ "$status" = 0 ] || die "lintian reported errors"
fi
echo
for deb in "${built[@]}"; do
    printf '%-52s %8d bytes  Depends: %s\n' "$(basename "$deb")" "$(stat -c %s "$deb")" \
        "$(dpkg-deb -f "$deb" Depends)"
done
for t in "${tarballs[@]}"; do
    printf '%-52s %8d bytes  fog-agent %d bytes\n' "$(basename "$t")" "$(stat -c %s "$t")" \
        "$(tar -xzOf "$t" "$(basename "$t" .tar.gz)/fog-agent" | wc -c)"
done
# Checksums of everything built so far in target/debian/, for a release page.
(cd "$out" && shopt -s nullglob && files=(*.deb *.tar.gz) && sha256sum -- "${files[@]}" > SHA256SUMS)
