#!/usr/bin/env bash
# The load tester's smoke test (about 10 s of load): starts a fleet of its own from the
# debug binaries (private database and broker namespace, stopped and removed at the end),
# sends chain4 webhooks at 5/s for 10 s, and fails unless every accepted run completed
# and the JSON and HTML reports were written and read back.
#
# Assumes PostgreSQL and RabbitMQ are up (deploy/local/services.sh) and the workspace's
# debug binaries are built (cargo build --workspace --bins); CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
for bin in weft-loadtest weft-gateway weft-scheduler weft-worker; do
    if [[ ! -x "$BIN_DIR/$bin" ]]; then
        echo "loadtest-smoke: $BIN_DIR/$bin is missing: build first (cargo build --workspace --bins)" >&2
        exit 1
    fi
done

OUT="$(mktemp -d "${TMPDIR:-/tmp}/weft-loadtest-smoke.XXXXXX")"
status=0
"$BIN_DIR/weft-loadtest" run --spawn --smoke \
    --out "$OUT/report.json" --html "$OUT/report.html" --logs "$OUT/logs" || status=$?
if ((status != 0)); then
    echo "loadtest-smoke: FAILED (exit $status); reports and fleet logs kept in $OUT" >&2
    for log in "$OUT"/logs/*.log; do
        [[ -f "$log" ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
    exit "$status"
fi
rm -rf "$OUT"
echo "loadtest-smoke: passed"
