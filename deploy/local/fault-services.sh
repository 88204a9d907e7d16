#!/usr/bin/env bash
# A private RabbitMQ node and a private PostgreSQL cluster for the fault-injection run
# (deploy/local/faults.sh, issue 8), which stops and restarts them under load, and for the
# TLS run (deploy/local/tls.sh), which gives them certificates. The machine's shared
# services (127.0.0.1:5672 and :5432) and the tests using them are never touched. Both
# live in one throwaway directory: `start` creates them fresh, `stop` removes them. One
# run per directory, node name and ports at a time.
#
#   fault-services.sh start          stop what an earlier (killed) run left, start both fresh
#   fault-services.sh stop           stop both and remove their directory
#   fault-services.sh env            print the export lines the fault test reads
#   fault-services.sh broker-stop    stop RabbitMQ on the node (rabbitmqctl stop_app)
#   fault-services.sh broker-start   start it again (start_app); returns once it serves
#   fault-services.sh db-restart     restart PostgreSQL (fast shutdown); returns once it serves
#   fault-services.sh blip           cut every client connection to both (a network blip)
#
# Settings: WEFT_FAULTS_DIR (default ${TMPDIR:-/tmp}/weft-faults; users rabbitmq and
# postgres must reach it), WEFT_FAULTS_AMQP_PORT (5673; Erlang distribution on it + 20000),
# WEFT_FAULTS_PG_PORT (5433), WEFT_FAULTS_NODE (weft-faults: the RabbitMQ node's name),
# WEFT_FAULTS_TLS_DIR (unset; a directory holding ca.pem, server.pem and server.key: both
# servers then take TLS connections only, RabbitMQ amqps on the AMQP port). Run as root:
# RabbitMQ runs as user rabbitmq through Debian's rabbitmq-server wrapper, PostgreSQL as
# user postgres.
set -euo pipefail

DIR="${WEFT_FAULTS_DIR:-${TMPDIR:-/tmp}/weft-faults}"
AMQP_PORT="${WEFT_FAULTS_AMQP_PORT:-5673}"
DIST_PORT=$((AMQP_PORT + 20000))
PG_PORT="${WEFT_FAULTS_PG_PORT:-5433}"
TLS_DIR="${WEFT_FAULTS_TLS_DIR:-}"
# Only a directory holding this file is ever removed.
MARKER="$DIR/.weft-fault-services"

NODE="${WEFT_FAULTS_NODE:-weft-faults}@localhost"
RABBIT_DIR="$DIR/rabbitmq"
RABBIT_PID_FILE="$RABBIT_DIR/rabbitmq.pid"
RABBIT_LOG_DIR="$RABBIT_DIR/log"
RABBIT_STARTUP_LOG="$RABBIT_LOG_DIR/startup.log"
# How long the node may take to boot or to stop.
RABBIT_TIMEOUT=90
# The shared node ran out of file descriptors at 1,024.
WANTED_FILE_DESCRIPTORS=65536

PG_DIR="$DIR/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/postgres.log"
PG_TIMEOUT=60

log() { printf 'fault-services: %s\n' "$*"; }
die() { printf 'fault-services: ERROR: %s\n' "$*" >&2; exit 1; }

require_root() {
    [[ "$(id -u)" -eq 0 ]] \
        || die "run as root (sudo bash $0 $1): RabbitMQ runs as user rabbitmq and PostgreSQL as user postgres"
    if ! command -v rabbitmq-server >/dev/null 2>&1 || ! command -v rabbitmqctl >/dev/null 2>&1; then
        die "RabbitMQ is not installed (bash deploy/local/services.sh installs it)"
    fi
    if [[ -n "$TLS_DIR" ]]; then
        local file
        for file in ca.pem server.pem server.key; do
            [[ -r "$TLS_DIR/$file" ]] || die "WEFT_FAULTS_TLS_DIR: no readable $TLS_DIR/$file"
        done
    fi
}

# Copies the CA, certificate and key where `owner` (the server's user) alone reads the key.
install_tls() {
    local dir="$1" owner="$2"
    install -d -o "$owner" -m 0700 "$dir"
    install -o "$owner" -m 0644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$dir/"
    install -o "$owner" -m 0600 "$TLS_DIR/server.key" "$dir/"
}

port_in_use() {
    [[ -n "$(ss -ltnH "sport = :$1")" ]]
}

require_free_port() {
    local port="$1" setting="$2"
    if port_in_use "$port"; then
        die "port $port is taken ($(ss -ltnpH "sport = :$port" | awk '{print $NF}' | head -n1)): set $setting to a free port"
    fi
}

# Removes the private directory, refusing any directory this script did not make.
remove_dir() {
    [[ -e "$DIR" ]] || return 0
    [[ -f "$MARKER" ]] || die "refusing to remove $DIR: it has no $(basename "$MARKER"), so this script did not make it"
    rm -rf "$DIR"
}

# --- RabbitMQ -----------------------------------------------------------------

ctl() {
    timeout "$RABBIT_TIMEOUT" rabbitmqctl -q -n "$NODE" "$@"
}

rabbit_pid() {
    local pid
    [[ -s "$RABBIT_PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$RABBIT_PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

file_descriptor_limit() {
    local hard
    hard="$(ulimit -Hn)"
    if [[ "$hard" == unlimited ]] || ((hard > WANTED_FILE_DESCRIPTORS)); then
        echo "$WANTED_FILE_DESCRIPTORS"
    else
        echo "$hard"
    fi
}

rabbit_configure() {
    mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_LOG_DIR"
    # No plugins: management and prometheus would take the shared node's HTTP ports.
    echo '[].' >"$RABBIT_DIR/enabled_plugins"
    local listener="NODE_PORT=$AMQP_PORT"
    if [[ -n "$TLS_DIR" ]]; then
        install_tls "$RABBIT_DIR/tls" rabbitmq
        # No plain listener at all: NODE_PORT would open one.
        listener=""
        cat >"$RABBIT_DIR/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.1 = 127.0.0.1:$AMQP_PORT
ssl_options.cacertfile = $RABBIT_DIR/tls/ca.pem
ssl_options.certfile = $RABBIT_DIR/tls/server.pem
ssl_options.keyfile = $RABBIT_DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
    else
        echo "listeners.tcp.1 = 127.0.0.1:$AMQP_PORT" >"$RABBIT_DIR/rabbitmq.conf"
    fi
    # Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node. The server
    # script sources it as user rabbitmq just before starting Erlang, after su's
    # pam_limits has put the soft file-descriptor limit back to 1,024.
    cat >"$RABBIT_DIR/rabbitmq-env.conf" <<EOF
ulimit -n $(file_descriptor_limit)
NODENAME=$NODE
NODE_IP_ADDRESS=127.0.0.1
$listener
DIST_PORT=$DIST_PORT
MNESIA_BASE=$RABBIT_DIR/mnesia
LOG_BASE=$RABBIT_LOG_DIR
PID_FILE=$RABBIT_PID_FILE
ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf
ADVANCED_CONFIG_FILE=$RABBIT_DIR/advanced.config
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    chown -R rabbitmq:rabbitmq "$RABBIT_DIR"
    runuser -u rabbitmq -- test -w "$RABBIT_DIR/mnesia" \
        || die "user rabbitmq cannot write $RABBIT_DIR: set WEFT_FAULTS_DIR to a directory it can reach (e.g. under /tmp)"
}

# Starts the node and waits until it serves.
rabbit_start() {
    local deadline pid
    # Debian's wrapper drops to user rabbitmq and keeps the environment.
    RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/rabbitmq-env.conf" rabbitmq-server -detached \
        >>"$RABBIT_STARTUP_LOG" 2>&1 </dev/null \
        || die "rabbitmq-server -detached failed for $NODE; see $RABBIT_STARTUP_LOG and $RABBIT_LOG_DIR"
    deadline=$((SECONDS + RABBIT_TIMEOUT))
    until ctl await_startup >/dev/null 2>&1; do
        if [[ -s "$RABBIT_PID_FILE" ]] && ! rabbit_pid >/dev/null; then
            die "RabbitMQ node $NODE exited while starting; see $RABBIT_LOG_DIR"
        fi
        ((SECONDS < deadline)) \
            || die "RabbitMQ node $NODE did not start in ${RABBIT_TIMEOUT}s; see $RABBIT_LOG_DIR"
        sleep 1
    done
    pid="$(rabbit_pid)" || die "RabbitMQ node $NODE serves but $RABBIT_PID_FILE names no live process; see $RABBIT_LOG_DIR"
    log "RabbitMQ $NODE serves $(amqp_scheme)://127.0.0.1:$AMQP_PORT (pid $pid, $(awk '/^Max open files/ {print $4}' "/proc/$pid/limits") file descriptors)"
}

amqp_scheme() {
    if [[ -n "$TLS_DIR" ]]; then echo amqps; else echo amqp; fi
}

# Stops the whole node, killing it when it does not stop in time.
rabbit_stop() {
    local pid
    if pid="$(rabbit_pid)"; then
        ctl stop "$RABBIT_PID_FILE" >/dev/null 2>&1 || true
        if kill -0 "$pid" 2>/dev/null; then
            log "RabbitMQ $NODE did not stop: killing pid $pid"
            kill -KILL "$pid"
        fi
    elif port_in_use "$DIST_PORT" && epmd -names 2>/dev/null | grep -q "^name ${NODE%@*} "; then
        # Running without its pid file (its directory was removed under it).
        ctl stop >/dev/null 2>&1 || die "RabbitMQ node $NODE runs without a pid file and did not stop: stop it by hand"
    fi
}

# The fault: RabbitMQ stops (every connection closes) while its Erlang node stays up, as
# the fault run has always measured it; a whole node's stop and boot takes about 15 s here,
# half the time the test's webhook senders keep retrying.
rabbit_stop_app() {
    ctl stop_app >"$RABBIT_LOG_DIR/stop_app.log" 2>&1 \
        || die "rabbitmqctl -n $NODE stop_app failed; see $RABBIT_LOG_DIR/stop_app.log and $RABBIT_LOG_DIR"
}

rabbit_start_app() {
    { ctl start_app && ctl await_startup; } >"$RABBIT_LOG_DIR/start_app.log" 2>&1 \
        || die "rabbitmqctl -n $NODE start_app failed; see $RABBIT_LOG_DIR/start_app.log and $RABBIT_LOG_DIR"
}

# --- Both -----------------------------------------------------------------------

# The fault: a network blip. Every client connection to the broker and the database is
# cut at once while both servers stay up; clients must notice and reconnect by themselves.
blip() {
    ctl close_all_connections "fault injection: network blip" >"$RABBIT_LOG_DIR/blip.log" 2>&1 \
        || die "rabbitmqctl -n $NODE close_all_connections failed; see $RABBIT_LOG_DIR/blip.log"
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt -c \
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" >/dev/null \
        || die "could not cut the connections of PostgreSQL on port $PG_PORT; see $PG_LOG"
}

# --- PostgreSQL ---------------------------------------------------------------

pg_bin() {
    local bin
    bin="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)"
    [[ -x "$bin/initdb" && -x "$bin/pg_ctl" ]] \
        || die "no PostgreSQL server binaries under /usr/lib/postgresql (bash deploy/local/services.sh installs them)"
    echo "$bin"
}

# Runs a PostgreSQL program as user postgres, from a directory it may enter.
as_postgres() {
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
}

pg_ctl_run() {
    as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DATA" "$@"
}

pg_start() {
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
    runuser -u postgres -- test -w "$PG_DIR" \
        || die "user postgres cannot write $PG_DIR: set WEFT_FAULTS_DIR to a directory it can reach (e.g. under /tmp)"
    as_postgres "$(pg_bin)/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
        || die "initdb of $PG_DATA failed; see $PG_DIR/initdb.log"
    # In the cluster's own configuration, so that every start and restart uses it.
    cat >>"$PG_DATA/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
EOF
    if [[ -n "$TLS_DIR" ]]; then
        install_tls "$PG_DIR/tls" postgres
        cat >>"$PG_DATA/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = '$PG_DIR/tls/server.pem'
ssl_key_file = '$PG_DIR/tls/server.key'
EOF
        # TCP connections without TLS match no line, so the server refuses them.
        cat >"$PG_DATA/pg_hba.conf" <<EOF
local all all trust
hostssl all all 127.0.0.1/32 trust
EOF
    fi
    pg_ctl_run -l "$PG_LOG" -w -t "$PG_TIMEOUT" start >/dev/null \
        || die "PostgreSQL in $PG_DATA did not start; see $PG_LOG"
    log "PostgreSQL serves postgres://postgres@127.0.0.1:$PG_PORT${TLS_DIR:+ over TLS only} (data in $PG_DATA)"
}

pg_restart() {
    pg_ctl_run -l "$PG_LOG" -m fast -w -t "$PG_TIMEOUT" restart >/dev/null \
        || die "PostgreSQL in $PG_DATA did not restart; see $PG_LOG"
}

pg_stop() {
    [[ -f "$PG_DATA/postmaster.pid" ]] || return 0
    # Immediate: the data is thrown away next.
    if ! pg_ctl_run -m immediate -w -t "$PG_TIMEOUT" stop >/dev/null 2>&1; then
        local pid
        pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            log "PostgreSQL in $PG_DATA did not stop: killing pid $pid"
            kill -KILL "$pid"
        fi
    fi
}

# --- commands -----------------------------------------------------------------

stop_all() {
    rabbit_stop
    pg_stop
    remove_dir
}

start_all() {
    stop_all
    require_free_port "$AMQP_PORT" WEFT_FAULTS_AMQP_PORT
    require_free_port "$DIST_PORT" "WEFT_FAULTS_AMQP_PORT (Erlang distribution uses it + 20000)"
    require_free_port "$PG_PORT" WEFT_FAULTS_PG_PORT
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    touch "$MARKER"
    pg_start
    rabbit_configure
    rabbit_start
}

print_env() {
    local script
    printf -v script 'bash %q' "$(realpath "${BASH_SOURCE[0]}")"
    # Carried along so that the test's broker-stop, broker-start and db-restart find them.
    printf 'export WEFT_FAULTS_DIR=%q\n' "$DIR"
    printf 'export WEFT_FAULTS_AMQP_PORT=%q\n' "$AMQP_PORT"
    printf 'export WEFT_FAULTS_PG_PORT=%q\n' "$PG_PORT"
    printf 'export WEFT_TEST_DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    printf 'export WEFT_TEST_AMQP_URL=%q\n' "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
    printf 'export WEFT_FAULT_BROKER_STOP=%q\n' "$script broker-stop"
    printf 'export WEFT_FAULT_BROKER_START=%q\n' "$script broker-start"
    printf 'export WEFT_FAULT_DB_RESTART=%q\n' "$script db-restart"
    printf 'export WEFT_FAULT_BLIP=%q\n' "$script blip"
    printf 'export WEFT_FAULT_RABBITMQCTL=%q\n' "rabbitmqctl -n $NODE"
}

usage() {
    echo "usage: $0 start|stop|env|broker-stop|broker-start|db-restart|blip" >&2
    exit 2
}

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        env) print_env; return ;;
        start | stop | broker-stop | broker-start | db-restart | blip) require_root "$1" ;;
        *) usage ;;
    esac
    case "$1" in
        start) start_all ;;
        stop) stop_all; log "stopped; $DIR removed" ;;
        broker-stop) rabbit_stop_app ;;
        broker-start) rabbit_start_app ;;
        db-restart) pg_restart ;;
        blip) blip ;;
    esac
}

main "$@"
