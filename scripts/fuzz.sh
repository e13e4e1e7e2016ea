#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for SECONDS each (default 60), starting from the seeds
# in git (fuzz/seeds/<target>/) and the corpus grown by earlier runs, which is cached
# under target/fuzz-corpus/ (not in git). Inputs in fuzz/regressions/<target>/ (past
# crashes, kept after their fix) are replayed first and must pass.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz, which this
# script installs into target/tools/ if it is not on PATH. Prints, per target, the
# executions, executions per second and corpus size; exits non-zero on any crash,
# leaving the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}; shift || true
case $seconds in ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
root=$PWD
export PATH="$root/target/tools/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain and found none (rustup toolchain list);" \
        "install it with: rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz into target/tools/" >&2
    cargo install cargo-fuzz --locked --root "$root/target/tools" >/dev/null 2>&1 \
        || cargo install cargo-fuzz --locked --root "$root/target/tools"
fi
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz targets found (cargo fuzz list)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Build first (all targets, or the ones named), so a compile error is reported as one.
build=()
[ $# -gt 0 ] && build=("${targets[@]}") || build=("")
for t in "${build[@]}"; do
    if ! cargo +nightly fuzz build -O $t >"$log" 2>&1; then
        tail -60 "$log" >&2
        echo "fuzz: building ${t:-the fuzz targets} failed" >&2
        exit 1
    fi
done
for t in "${targets[@]}"; do
    corpus="$root/target/fuzz-corpus/$t"
    mkdir -p "$corpus"
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        kept=(regressions/"$t"/*)
        if ! cargo +nightly fuzz run -O "$t" "${kept[@]}" -- -runs=0 >"$log" 2>&1; then
            tail -40 "$log" >&2
            echo "fuzz: $t fails on a kept regression input (fuzz/regressions/$t)" >&2
            exit 1
        fi
        echo "fuzz: $t passes its ${#kept[@]} regression input(s) in fuzz/regressions/$t/"
    fi
    # -timeout: an input running 10 s counts as a failure (a hang), not a wait.
    if ! cargo +nightly fuzz run -O "$t" "$corpus" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -max_len=65536 >"$log" 2>&1; then
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
