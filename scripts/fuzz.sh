#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for SECONDS each (default 60), starting from the seeds
# in git (fuzz/seeds/<target>/) and the corpus grown by earlier runs, which is cached
# under target/fuzz-corpus/ (not in git). Inputs in fuzz/regressions/<target>/ (past
# crashes, kept after their fix) are replayed first and must pass.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags). Builds the targets the way
# `cargo fuzz build -O` does (the same rustc flags, below) without needing cargo-fuzz
# installed: installing it from source took 3 of CI's minutes. `cargo fuzz run` works
# on the same fuzz/ crate by hand. Prints, per target, the executions, executions per
# second and corpus size; exits non-zero on any crash, leaving the input in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}; shift || true
case $seconds in ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
root=$PWD
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain and found none (rustup toolchain list);" \
        "install it with: rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi
cd fuzz
# cargo-fuzz's flags for `build -O` with AddressSanitizer (its src/project.rs, 0.13):
# libFuzzer's coverage counters, comparison tracing, stack depth, `cfg(fuzzing)`, no
# branch folding, one codegen unit (the sancov passes stop ThinLTO from importing
# across units) and line tables for the crash reports. --target keeps the flags off
# build scripts and proc macros.
host=$(rustc +nightly -vV | awk '/^host:/ {print $2}')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Ccodegen-units=1 \
-Zsanitizer=address"
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0
export CARGO_TARGET_DIR="$root/fuzz/target"
bin_dir=$CARGO_TARGET_DIR/$host/release
# The targets: every [[bin]] of fuzz/Cargo.toml.
all=$(awk '/^\[\[bin\]\]/ {b=1; next} b && /^name *=/ {gsub(/[" ]/, "", $0); sub(/^name=/, ""); print; b=0}' Cargo.toml)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets <<<"$all"
[ -n "${targets[0]:-}" ] || { echo "fuzz: no fuzz targets in fuzz/Cargo.toml" >&2; exit 1; }
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$all" || { echo "fuzz: no target '$t' (fuzz/Cargo.toml has: $(echo $all))" >&2; exit 2; }
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Build first (the targets named), so a compile error is reported as one.
bins=(); for t in "${targets[@]}"; do bins+=(--bin "$t"); done
if ! cargo +nightly build --release --config 'profile.release.debug="line-tables-only"' --target "$host" "${bins[@]}" >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz: building the fuzz targets failed" >&2
    exit 1
fi
for t in "${targets[@]}"; do
    corpus="$root/target/fuzz-corpus/$t"
    mkdir -p "$corpus"
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        kept=(regressions/"$t"/*)
        if ! "$bin_dir/$t" -runs=0 "${kept[@]}" >"$log" 2>&1; then
            tail -40 "$log" >&2
            echo "fuzz: $t fails on a kept regression input (fuzz/regressions/$t)" >&2
            exit 1
        fi
        echo "fuzz: $t passes its ${#kept[@]} regression input(s) in fuzz/regressions/$t/"
    fi
    # -timeout: an input running 10 s counts as a failure (a hang), not a wait.
    mkdir -p "artifacts/$t"
    if ! "$bin_dir/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -timeout=10 \
        -print_final_stats=1 -max_len=65536 "$corpus" "seeds/$t" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t crashed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
    if [ -z "$runs" ] || [ -z "$rate" ]; then
        tail -20 "$log" >&2
        echo "fuzz: $t ran but libFuzzer printed no final stats" >&2
        exit 1
    fi
    size=$(find "$corpus" -type f | wc -l)
    printf 'fuzz: %-14s %10s executions in %s s, %8s exec/s, corpus %s inputs\n' "$t" "$runs" "$seconds" "$rate" "$size"
done
