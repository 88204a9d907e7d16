#!/usr/bin/env bash
# A short fuzzing run of each parser of user input (fuzz/, cargo-fuzz with libFuzzer):
# the scenario definition parser and the connector manifest parser, each for
# WEFT_FUZZ_SECONDS (default 30). A crash, a panic, a timeout or running out of memory
# fails the run and leaves the input in fuzz/artifacts/<target>/.
#
#   deploy/local/fuzz.sh              both targets
#   deploy/local/fuzz.sh scenario     one target
#
# libFuzzer's instrumentation needs nightly rustc flags. The stable toolchain accepts
# them with RUSTC_BOOTSTRAP=1, without sanitizers (`--sanitizer none`): a panic still
# fails the run, memory errors in unsafe code would go unseen (the project forbids
# unsafe code). cargo-fuzz is installed from crates.io when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_PER_TARGET="${WEFT_FUZZ_SECONDS:-30}"
CARGO_FUZZ_VERSION="0.13.2"
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(scenario manifest)

log() { printf 'fuzz: %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

# Its own target directory: the fuzz build's flags differ from the workspace's, and
# sharing would rebuild everything each time one or the other runs.
export CARGO_TARGET_DIR="$ROOT/target/fuzz"
export RUSTC_BOOTSTRAP=1
CORPUS="$ROOT/target/fuzz-corpus"

# Inputs to start from, per target.
declare -A SEEDS=(
    [scenario]="$ROOT/fuzz/seeds/scenario"
    [manifest]="$ROOT/domain/connectors"
)

cd "$ROOT/fuzz"
for target in "${TARGETS[@]}"; do
    [[ -n "${SEEDS[$target]:-}" ]] || { printf 'fuzz: ERROR: unknown target %s\n' "$target" >&2; exit 2; }
    mkdir -p "$CORPUS/$target"
    log "$target: ${SECONDS_PER_TARGET}s"
    # -timeout: one input running over 10 s is a hang; -rss_limit_mb: memory is bounded.
    cargo fuzz run --sanitizer none --release "$target" "$CORPUS/$target" "${SEEDS[$target]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
log "no crash in ${TARGETS[*]}"
