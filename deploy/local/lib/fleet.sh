# shellcheck shell=bash
# A small fleet for the scripts that test the served API from outside (schemathesis.sh,
# clients.sh): a database of its own (recreated and migrated), a broker namespace of its
# own, the services it names, and a workspace with an API key. Everything stops and is
# removed on exit; on failure the services' last log lines are shown.
#
# Source it, then:
#   fleet_init NAME DATABASE NAMESPACE_PREFIX   sets WORK (scratch), the environment and the trap
#   fleet_binaries weft-gateway weft-worker …   checks (or builds) them in BIN_DIR
#   fleet_migrate                               recreates and migrates the database
#   fleet_start gateway|scheduler|worker …      starts them, returns once each is ready; sets API
#   fleet_workspace                             creates a workspace; sets API_KEY
# Settings: WEFT_BIN_DIR (default $CARGO_TARGET_DIR/debug or target/debug).

FLEET_PG="postgres://postgres@127.0.0.1:5432"
FLEET_READY_TIMEOUT=60
FLEET_PIDS=()
FLEET_SERVICES=()

log() { printf '%s: %s\n' "$FLEET_NAME" "$*"; }
die() { printf '%s: ERROR: %s\n' "$FLEET_NAME" "$*" >&2; exit 1; }

fleet_cleanup() {
    local status=$?
    for pid in "${FLEET_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${FLEET_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # The namespace's quorum queues would outlive the run; exchanges are cheap and stay.
    if command -v rabbitmqctl >/dev/null 2>&1; then
        rabbitmqctl -q list_queues name 2>/dev/null | grep "^$WEFT_NAMESPACE\." | while read -r queue; do
            rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
        done
    fi
    psql "$FLEET_PG/postgres" -qc "DROP DATABASE IF EXISTS $FLEET_DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ $status -ne 0 ]]; then
        for name in "${FLEET_SERVICES[@]}"; do
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

fleet_init() {
    FLEET_NAME="$1"
    FLEET_DATABASE="$2"
    BIN_DIR="${WEFT_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/weft-$FLEET_NAME.XXXXXX")"
    trap fleet_cleanup EXIT
    trap 'exit 130' INT TERM

    export WEFT_DATABASE_URL="$FLEET_PG/$FLEET_DATABASE"
    export WEFT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
    WEFT_NAMESPACE="$3_$(date +%s)_$$"
    export WEFT_NAMESPACE
    WEFT_MASTER_KEYS="$FLEET_NAME:$(head -c 32 /dev/urandom | base64)"
    export WEFT_MASTER_KEYS
    WEFT_ADMIN_TOKEN="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
    export WEFT_ADMIN_TOKEN
    export WEFT_AUTO_MIGRATE=false
    export WEFT_SHUTDOWN_TIMEOUT=5s
    export RUST_LOG="${RUST_LOG:-warn}"
}

fleet_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# fleet_wait_ready NAME URL: until URL answers 200, or fail naming NAME.
fleet_wait_ready() {
    local name="$1" url="$2" waited=0
    until curl -fs -o /dev/null "$url"; do
        (( waited < FLEET_READY_TIMEOUT )) || die "$name is not ready at $url after ${FLEET_READY_TIMEOUT}s (log: $WORK/$name.log)"
        sleep 1
        waited=$((waited + 1))
    done
}

fleet_binaries() {
    local binary missing=()
    for binary in "$@"; do
        [[ -x "$BIN_DIR/$binary" ]] || missing+=("$binary")
    done
    if (( ${#missing[@]} > 0 )); then
        log "building ${missing[*]}"
        local packages=()
        for binary in "${missing[@]}"; do packages+=(-p "$binary"); done
        cargo build --locked --bins "${packages[@]}"
        BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
    fi
}

fleet_migrate() {
    psql "$FLEET_PG/postgres" -qc "DROP DATABASE IF EXISTS $FLEET_DATABASE WITH (FORCE)" >/dev/null
    psql "$FLEET_PG/postgres" -qc "CREATE DATABASE $FLEET_DATABASE" >/dev/null
    log "migrating $FLEET_DATABASE"
    "$BIN_DIR/weft-gateway" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "migration failed"; }
}

fleet_start() {
    local name ops
    for name in "$@"; do
        ops="$(fleet_free_port)"
        if [[ "$name" == gateway ]]; then
            local api_port
            api_port="$(fleet_free_port)"
            API="http://127.0.0.1:$api_port"
            WEFT_HTTP_ADDR="127.0.0.1:$api_port" WEFT_METRICS_ADDR="127.0.0.1:$ops" \
                "$BIN_DIR/weft-gateway" >"$WORK/gateway.log" 2>&1 &
        else
            WEFT_METRICS_ADDR="127.0.0.1:$ops" "$BIN_DIR/weft-$name" >"$WORK/$name.log" 2>&1 &
        fi
        FLEET_PIDS+=("$!")
        FLEET_SERVICES+=("$name")
        fleet_wait_ready "$name" "http://127.0.0.1:$ops/readyz"
    done
}

fleet_workspace() {
    # shellcheck disable=SC2034  # read by the script that sources this file
    API_KEY="$(curl -fsS -X POST "$API/api/v1/admin/workspaces" \
        -H "Authorization: Bearer $WEFT_ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$FLEET_NAME\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')" ||
        die "could not create a workspace through the admin API"
}
