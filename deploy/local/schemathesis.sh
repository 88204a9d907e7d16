#!/usr/bin/env bash
# Property-based API testing with Schemathesis (from PyPI) against the OpenAPI document the
# gateway serves at /api/v1/openapi.json: every operation is called with generated valid
# and invalid input, and two checks must hold for every response:
#   not_a_server_error           no 5xx, whatever is sent
#   response_schema_conformance  the response matches the document
#
# It starts what it needs and stops it on exit: PostgreSQL and RabbitMQ (services.sh), a
# database `weft_schemathesis` (recreated, migrated with `weft-gateway migrate`), a gateway
# and a worker (directly executed actions wait for one) in a broker namespace of their
# own, and a workspace created through the admin API for the API key.
#
#   deploy/local/schemathesis.sh
#
# Environment (all optional):
#   WEFT_BIN_DIR                 where weft-gateway and weft-worker are (target/debug;
#                                built with `cargo build --bins` when missing)
#   WEFT_SCHEMATHESIS_EXAMPLES   test cases per operation and phase (default 50; about 30 s)
#   WEFT_SCHEMATHESIS_SEED       the generator's seed (default fixed: runs repeat)
#   WEFT_SCHEMATHESIS_VENV       the virtualenv (default ~/.cache/weft/schemathesis-<version>)
#   WEFT_SCHEMATHESIS_ARGS       more arguments for `schemathesis run`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/weft"
VENV="${WEFT_SCHEMATHESIS_VENV:-$CACHE/schemathesis-$SCHEMATHESIS_VERSION}"
BIN_DIR="${WEFT_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
EXAMPLES="${WEFT_SCHEMATHESIS_EXAMPLES:-50}"
SEED="${WEFT_SCHEMATHESIS_SEED:-20261122}"
DATABASE="weft_schemathesis"
PG="postgres://postgres@127.0.0.1:5432"
NAMESPACE="weft_st_$(date +%s)_$$"
READY_TIMEOUT=60

log() { printf 'schemathesis: %s\n' "$*"; }
die() { printf 'schemathesis: ERROR: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weft-schemathesis.XXXXXX")"
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # The namespace's quorum queues would outlive the run; exchanges are cheap and stay.
    if command -v rabbitmqctl >/dev/null 2>&1; then
        rabbitmqctl -q list_queues name 2>/dev/null | grep "^$NAMESPACE\." | while read -r queue; do
            rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
        done
    fi
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ $status -ne 0 && -f "$WORK/gateway.log" ]]; then
        log "last lines of the gateway's log ($WORK/gateway.log):"
        tail -n 20 "$WORK/gateway.log" >&2 || true
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_ready NAME URL: until URL answers 200, or fail naming NAME.
wait_ready() {
    local name="$1" url="$2" waited=0
    until curl -fs -o /dev/null "$url"; do
        (( waited < READY_TIMEOUT )) || die "$name is not ready at $url after ${READY_TIMEOUT}s (log: $WORK/$name.log)"
        sleep 1
        waited=$((waited + 1))
    done
}

# --- what it needs --------------------------------------------------------------
bash deploy/local/services.sh

if [[ ! -x "$BIN_DIR/weft-gateway" || ! -x "$BIN_DIR/weft-worker" ]]; then
    log "building weft-gateway and weft-worker"
    cargo build --locked --bins -p weft-gateway -p weft-worker
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
fi

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null
psql "$PG/postgres" -qc "CREATE DATABASE $DATABASE" >/dev/null

API_PORT="$(free_port)"
GATEWAY_OPS="$(free_port)"
WORKER_OPS="$(free_port)"
ADMIN_TOKEN="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
export WEFT_DATABASE_URL="$PG/$DATABASE"
export WEFT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export WEFT_NAMESPACE="$NAMESPACE"
WEFT_MASTER_KEYS="st:$(head -c 32 /dev/urandom | base64)"
export WEFT_MASTER_KEYS
export WEFT_ADMIN_TOKEN="$ADMIN_TOKEN"
export WEFT_AUTO_MIGRATE=false
export WEFT_SHUTDOWN_TIMEOUT=5s
export RUST_LOG="${RUST_LOG:-warn}"

log "migrating $DATABASE"
"$BIN_DIR/weft-gateway" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "migration failed"; }

WEFT_HTTP_ADDR="127.0.0.1:$API_PORT" WEFT_METRICS_ADDR="127.0.0.1:$GATEWAY_OPS" \
    "$BIN_DIR/weft-gateway" >"$WORK/gateway.log" 2>&1 &
PIDS+=("$!")
WEFT_METRICS_ADDR="127.0.0.1:$WORKER_OPS" "$BIN_DIR/weft-worker" >"$WORK/worker.log" 2>&1 &
PIDS+=("$!")
wait_ready gateway "http://127.0.0.1:$GATEWAY_OPS/readyz"
wait_ready worker "http://127.0.0.1:$WORKER_OPS/readyz"

API="http://127.0.0.1:$API_PORT"
API_KEY="$(curl -fsS -X POST "$API/api/v1/admin/workspaces" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d '{"name": "schemathesis"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')" ||
    die "could not create a workspace through the admin API"

# --- the run --------------------------------------------------------------------
log "running against $API/api/v1/openapi.json ($EXAMPLES examples per operation, seed $SEED)"
# Schemathesis keeps a cache of what failed in the working directory: not in the repository.
cd "$WORK"
run_schemathesis() {
    # shellcheck disable=SC2086  # WEFT_SCHEMATHESIS_ARGS is a list of arguments
    "$VENV/bin/schemathesis" run "$API/api/v1/openapi.json" \
        --header "Authorization: Bearer $API_KEY" \
        --checks not_a_server_error,response_schema_conformance \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --workers 2 \
        --request-timeout 40 \
        --report junit --report-dir "$WORK/report" \
        --warnings off \
        ${WEFT_SCHEMATHESIS_ARGS:-} 2>&1 | tee "$WORK/schemathesis.out"
}

# CPython 3.11's ast module sometimes fails ("AST constructor recursion depth mismatch")
# while Hypothesis describes one of its own lambdas: a bug of the interpreter inside the
# tool, reported as an error of the operation it was generating cases for, not a finding
# about the API. It depends on the stack depth at that moment, so on a loaded machine it
# can strike twice in a row (seen in a CI run). Such a run is made again, at most twice
# more; any other failure stands.
attempt=1
until run_schemathesis; do
    grep -q "AST constructor recursion depth mismatch" "$WORK/schemathesis.out" || exit 1
    (( attempt < 3 )) || die "CPython 3.11's AST recursion bug inside Hypothesis struck $attempt runs in a row"
    attempt=$((attempt + 1))
    log "the run hit CPython 3.11's AST recursion bug inside Hypothesis (not a finding about the API): run $attempt of 3"
done
