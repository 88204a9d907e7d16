#!/usr/bin/env bash
# Runs every test of the project: starts PostgreSQL and RabbitMQ when they are down,
# then the unit and integration tests (against the real services) and the deployment
# checks. This is the README's test command and what CI runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

bash deploy/local/services.sh

# First, because it also installs promtool, which the metrics tests use.
echo "test: deployment checks"
bash deploy/check.sh

echo "test: cargo fmt --check"
cargo fmt --all --check

echo "test: building the workspace and its tests"
cargo build --workspace --all-targets --locked

if command -v cargo-nextest >/dev/null 2>&1; then
    echo "test: cargo nextest run"
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "test: cargo test (cargo-nextest is not installed)"
    cargo test --workspace --locked --no-fail-fast
fi

# After the tests, on binaries the build above made: each of these starts its own gateway
# (and workers) against the local services.
echo "test: schemathesis against the served OpenAPI document"
WEFT_BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug" bash deploy/local/schemathesis.sh

echo "test: load tester smoke run (a short chain4 against a fleet it starts)"
bash deploy/local/loadtest-smoke.sh
