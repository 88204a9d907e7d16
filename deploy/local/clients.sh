#!/usr/bin/env bash
# The OpenAPI document the gateway serves at /api/v1/openapi.json works with the standard
# client generators, as integrators use them:
#   - openapi-python-client (PyPI) generates a Python client without a warning,
#   - openapi-typescript (npm) generates TypeScript types without a warning,
#   - deploy/local/client_smoke.py drives a scenario through the generated Python client:
#     create it, activate it, run it manually, read the run until it finished.
#
# It starts what it needs and stops it on exit: PostgreSQL and RabbitMQ (services.sh), a
# database `weft_clients` (recreated, migrated with `weft-gateway migrate`), a gateway and
# a scheduler (the scenario's nodes are transforms: no worker) in a broker namespace of
# their own, and a workspace created through the admin API for the API key.
#
#   deploy/local/clients.sh
#
# Environment (all optional):
#   WEFT_BIN_DIR             where weft-gateway and weft-scheduler are (target/debug; built
#                            with `cargo build --bins` when missing)
#   WEFT_CLIENTS_VENV        the virtualenv of openapi-python-client
#                            (default ~/.cache/weft/openapi-python-client-<version>)
#   WEFT_CLIENTS_NPM_PREFIX  where openapi-typescript is installed
#                            (default ~/.cache/weft/openapi-typescript-<version>)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PYTHON_CLIENT_VERSION="0.29.1"
TYPESCRIPT_VERSION="7.13.0"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/weft"
VENV="${WEFT_CLIENTS_VENV:-$CACHE/openapi-python-client-$PYTHON_CLIENT_VERSION}"
NPM_PREFIX="${WEFT_CLIENTS_NPM_PREFIX:-$CACHE/openapi-typescript-$TYPESCRIPT_VERSION}"
BIN_DIR="${WEFT_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
DATABASE="weft_clients"
PG="postgres://postgres@127.0.0.1:5432"
NAMESPACE="weft_cl_$(date +%s)_$$"
READY_TIMEOUT=60

log() { printf 'clients: %s\n' "$*"; }
die() { printf 'clients: ERROR: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weft-clients.XXXXXX")"
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
    if [[ $status -ne 0 ]]; then
        for name in gateway scheduler; do
            if [[ -f "$WORK/$name.log" ]]; then
                log "last lines of the $name's log ($WORK/$name.log):"
                tail -n 20 "$WORK/$name.log" >&2 || true
            fi
        done
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

# no_warnings TOOL OUTPUT_FILE: fails, showing the output, when the tool warned.
no_warnings() {
    local tool="$1" output="$2"
    if grep -qiE 'warn' "$output"; then
        cat "$output" >&2
        die "$tool warned about the document (output above)"
    fi
}

# --- what it needs --------------------------------------------------------------
bash deploy/local/services.sh

if [[ ! -x "$BIN_DIR/weft-gateway" || ! -x "$BIN_DIR/weft-scheduler" ]]; then
    log "building weft-gateway and weft-scheduler"
    cargo build --locked --bins -p weft-gateway -p weft-scheduler
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
fi

if [[ ! -x "$VENV/bin/openapi-python-client" ]]; then
    log "installing openapi-python-client $PYTHON_CLIENT_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "openapi-python-client==$PYTHON_CLIENT_VERSION"
fi

if [[ ! -x "$NPM_PREFIX/node_modules/.bin/openapi-typescript" ]]; then
    log "installing openapi-typescript $TYPESCRIPT_VERSION into $NPM_PREFIX"
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --silent "openapi-typescript@$TYPESCRIPT_VERSION"
fi

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null
psql "$PG/postgres" -qc "CREATE DATABASE $DATABASE" >/dev/null

API_PORT="$(free_port)"
GATEWAY_OPS="$(free_port)"
SCHEDULER_OPS="$(free_port)"
ADMIN_TOKEN="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
export WEFT_DATABASE_URL="$PG/$DATABASE"
export WEFT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export WEFT_NAMESPACE="$NAMESPACE"
WEFT_MASTER_KEYS="cl:$(head -c 32 /dev/urandom | base64)"
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
WEFT_METRICS_ADDR="127.0.0.1:$SCHEDULER_OPS" "$BIN_DIR/weft-scheduler" >"$WORK/scheduler.log" 2>&1 &
PIDS+=("$!")
wait_ready gateway "http://127.0.0.1:$GATEWAY_OPS/readyz"
wait_ready scheduler "http://127.0.0.1:$SCHEDULER_OPS/readyz"

API="http://127.0.0.1:$API_PORT"
API_KEY="$(curl -fsS -X POST "$API/api/v1/admin/workspaces" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d '{"name": "clients"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')" ||
    die "could not create a workspace through the admin API"
curl -fsS -o "$WORK/openapi.json" "$API/api/v1/openapi.json" || die "could not fetch the OpenAPI document"

# --- the generators -------------------------------------------------------------
# The generators write into the scratch directory, never into the repository.
cd "$WORK"

log "generating a Python client with openapi-python-client $PYTHON_CLIENT_VERSION"
# Without its default post-hooks, which format the generated code with ruff (not
# installed: the code is only imported here) and would warn that ruff is missing.
printf 'post_hooks: []\n' >"$WORK/python-client.yaml"
"$VENV/bin/openapi-python-client" generate --path "$WORK/openapi.json" \
    --config "$WORK/python-client.yaml" \
    --output-path "$WORK/weft_api_client" --meta none >"$WORK/python-client.out" 2>&1 || {
    cat "$WORK/python-client.out" >&2
    die "openapi-python-client failed"
}
no_warnings openapi-python-client "$WORK/python-client.out"

log "generating TypeScript types with openapi-typescript $TYPESCRIPT_VERSION"
"$NPM_PREFIX/node_modules/.bin/openapi-typescript" "$WORK/openapi.json" \
    --output "$WORK/weft-api.d.ts" >"$WORK/typescript.out" 2>&1 || {
    cat "$WORK/typescript.out" >&2
    die "openapi-typescript failed"
}
no_warnings openapi-typescript "$WORK/typescript.out"
[[ -s "$WORK/weft-api.d.ts" ]] || die "openapi-typescript wrote no types"

# --- the generated Python client, in use -----------------------------------------
log "driving a scenario through the generated Python client"
# The client's package is weft_api_client (`--meta none`); its dependencies (httpx,
# attrs, python-dateutil) are openapi-python-client's own, in the same virtualenv.
PYTHONPATH="$WORK" WEFT_API="$API" WEFT_API_KEY="$API_KEY" \
    "$VENV/bin/python" "$ROOT/deploy/local/client_smoke.py"
log "ok"
