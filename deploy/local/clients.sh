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

# shellcheck source=deploy/local/lib/fleet.sh
source "$ROOT/deploy/local/lib/fleet.sh"
fleet_init clients weft_clients weft_cl

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
fleet_binaries weft-gateway weft-scheduler

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

fleet_migrate
fleet_start gateway scheduler
fleet_workspace
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
