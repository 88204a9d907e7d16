#!/usr/bin/env bash
# The fault-injection run (issue 8): a fleet of two schedulers and two workers under a
# steady stream of webhooks while a worker and a scheduler are killed and RabbitMQ and
# PostgreSQL are restarted; then checks that nothing accepted was lost, stuck or recorded
# twice, and prints how many upstream calls repeated and how long each recovery took.
#
# The broker and database it restarts are private: deploy/local/fault-services.sh starts a
# RabbitMQ node (127.0.0.1:5673) and a PostgreSQL cluster (127.0.0.1:5433) for this run
# only and removes them when it ends, however it ends. The shared services and tests
# running beside it are not touched. Runs as root (the last stage of deploy/local/test.sh).
#
#   deploy/local/faults.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

FAULT_SERVICES="$ROOT/deploy/local/fault-services.sh"

# Installs PostgreSQL and RabbitMQ when missing; the private ones use the same packages.
bash deploy/local/services.sh

command -v cargo-nextest >/dev/null 2>&1 \
    || { echo "faults: ERROR: cargo-nextest is not installed (cargo install cargo-nextest --locked)" >&2; exit 1; }

# Built first, so that the private services do not wait for the compiler.
echo "faults: building the fault-injection test"
cargo nextest run --locked -p weft-scheduler --test faults --run-ignored only --no-run

# Set before starting, so that a start failing halfway is cleaned up too.
trap 'bash "$FAULT_SERVICES" stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash "$FAULT_SERVICES" start
eval "$(bash "$FAULT_SERVICES" env)"

echo "faults: running the fault-injection test against the private services"
cargo nextest run --locked -p weft-scheduler --test faults --run-ignored only --no-capture
echo "faults: passed; ${SECONDS} s in all"
