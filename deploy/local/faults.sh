#!/usr/bin/env bash
# The fault-injection run (issue 8): a fleet of two schedulers and two workers under a
# steady stream of webhooks while a worker and a scheduler are killed and RabbitMQ and
# PostgreSQL are restarted; then checks that nothing accepted was lost, stuck or recorded
# twice, and prints how many upstream calls repeated and how long each recovery took.
#
# It restarts the shared RabbitMQ and PostgreSQL, so it runs alone, after the other tests
# (CI: after deploy/local/test.sh), as root next to the local services (services.sh). The
# restart commands can be replaced through WEFT_FAULT_BROKER_STOP, WEFT_FAULT_BROKER_START
# and WEFT_FAULT_DB_RESTART (see scheduler/tests/faults.rs).
#
#   deploy/local/faults.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

bash deploy/local/services.sh

command -v cargo-nextest >/dev/null 2>&1 \
    || { echo "faults: ERROR: cargo-nextest is not installed (cargo install cargo-nextest --locked)" >&2; exit 1; }

echo "faults: running the fault-injection test alone"
cargo nextest run --locked -p weft-scheduler --test faults --run-ignored only --no-capture
