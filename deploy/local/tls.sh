#!/usr/bin/env bash
# The TLS run (issue 14): PostgreSQL's sslmode and amqps:// against real servers. It makes
# a throwaway CA, a certificate it signs for `localhost` and a second, unrelated CA, then
# has deploy/local/fault-services.sh start a private PostgreSQL cluster (127.0.0.1:5443)
# that takes TLS connections only and a private RabbitMQ node (127.0.0.1:5674) with only
# a TLS listener, runs the ignored tests of runtime/tests/tls.rs against them, and stops
# and removes everything however it ends. The shared services are not touched. Runs as
# root (a stage of deploy/local/test.sh).
#
#   deploy/local/tls.sh
#
# Settings: WEFT_TLS_DIR (default ${TMPDIR:-/tmp}/weft-tls), WEFT_TLS_PG_PORT (5443),
# WEFT_TLS_AMQP_PORT (5674; Erlang distribution on it + 20000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SERVICES="$ROOT/deploy/local/fault-services.sh"

log() { printf 'tls: %s\n' "$*"; }
die() { printf 'tls: ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] \
    || die "run as root (sudo bash $0): the private servers run as users rabbitmq and postgres"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install openssl)"

export WEFT_FAULTS_DIR="${WEFT_TLS_DIR:-${TMPDIR:-/tmp}/weft-tls}"
export WEFT_FAULTS_PG_PORT="${WEFT_TLS_PG_PORT:-5443}"
export WEFT_FAULTS_AMQP_PORT="${WEFT_TLS_AMQP_PORT:-5674}"
# Its own node, so that a fault run may go on beside it.
export WEFT_FAULTS_NODE=weft-tls

if command -v cargo-nextest >/dev/null 2>&1; then
    tests() { cargo nextest run --locked -p weft-runtime --test tls --run-ignored only "$@"; }
else
    tests() { cargo test --locked -p weft-runtime --test tls "$@" -- --ignored; }
fi

# Built first, so that the servers do not wait for the compiler.
log "building the TLS tests"
tests --no-run

# Outside the servers' directory, which their start empties.
CERTS="$(mktemp -d "${TMPDIR:-/tmp}/weft-tls-certs.XXXXXX")"
export WEFT_FAULTS_TLS_DIR="$CERTS"
# Set before starting, so that a start failing halfway is cleaned up too.
trap 'bash "$SERVICES" stop; rm -rf "$CERTS"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# openssl, its chatter kept in a log the error points at.
ssl() {
    openssl "$@" 2>>"$CERTS/openssl.log" \
        || die "openssl $1 could not make the test certificates; see $CERTS/openssl.log"
}

# A self-signed CA certificate and its key: `ca_pair NAME "CN"`.
ca_pair() {
    ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$CERTS/$1.key" -out "$CERTS/$1.pem"
}

ca_pair ca "Weft TLS test CA"
ca_pair other-ca "Weft TLS test, unrelated CA"
ssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout "$CERTS/server.key" -out "$CERTS/server.csr"
# For the name `localhost` only, not its address: the tests connect by 127.0.0.1 to see
# verify-full refuse a host the certificate was not issued for.
printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$CERTS/server.ext"
ssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 1 -extfile "$CERTS/server.ext" \
    -out "$CERTS/server.pem"
log "made a throwaway CA, a certificate it signed for localhost and an unrelated CA"
bash "$SERVICES" start

export WEFT_TLS_PG_PORT="$WEFT_FAULTS_PG_PORT"
export WEFT_TLS_AMQP_PORT="$WEFT_FAULTS_AMQP_PORT"
export WEFT_TLS_CA_FILE="$CERTS/ca.pem"
export WEFT_TLS_OTHER_CA_FILE="$CERTS/other-ca.pem"

log "running the TLS tests against the private servers"
tests
log "passed; ${SECONDS} s in all"
