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
root=$PWD
export PATH="$root/target/tools/bin:$PATH"
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz: needs the nightly toolchain (rustup toolchain list)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --root "$root/target/tools" >/dev/null 2>&1 \
        || cargo install cargo-fuzz --locked --root "$root/target/tools"
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
cd fuzz
cargo +nightly fuzz build -O "${targets[@]/#/}" >/dev/null 2>&1 || cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    corpus="$root/target/fuzz-corpus/$t"
    mkdir -p "$corpus"
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        cargo +nightly fuzz run -O "$t" regressions/$t/* -- -runs=0 >/dev/null 2>&1 \
            || { echo "fuzz: $t fails on a kept regression input (fuzz/regressions/$t)" >&2; exit 1; }
    fi
    log=$(mktemp)
    if ! cargo +nightly fuzz run -O "$t" "$corpus" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t crashed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
    size=$(find "$corpus" -type f | wc -l)
    printf 'fuzz: %-14s %10s executions in %s s, %8s exec/s, corpus %s inputs\n' "$t" "$runs" "$seconds" "$rate" "$size"
    rm -f "$log"
done
