#!/usr/bin/env bash
# Ensure the local services Weft needs are running on this machine:
#   PostgreSQL  127.0.0.1:5432, user postgres, trust authentication
#   RabbitMQ    127.0.0.1:5672, guest/guest
# Starts them if installed and stopped; installs them from Debian's packages if missing.
# Idempotent: when both already answer, it returns at once.
set -euo pipefail

WAIT_SECONDS="${WEFT_SERVICES_TIMEOUT:-60}"
# Ports are fixed by the project's defaults; overridable only to test this script.
PG_PORT="${WEFT_LOCAL_PG_PORT:-5432}"
AMQP_PORT="${WEFT_LOCAL_AMQP_PORT:-5672}"

log() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed: cannot start or install services"
    SUDO="sudo"
fi

# tcp_open HOST PORT: true when something accepts TCP connections there.
tcp_open() {
    # shellcheck disable=SC2016  # $0 and $1 expand in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

apt_install() {
    log "installing $* from Debian's packages"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_for NAME CHECK-FUNCTION HINT
wait_for() {
    local name="$1" check="$2" hint="$3" waited=0
    until "$check"; do
        if (( waited >= WAIT_SECONDS )); then
            die "$name is not accepting connections after ${WAIT_SECONDS}s. $hint"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$name is up"
}

# --- PostgreSQL ---------------------------------------------------------------

pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
    else
        tcp_open 127.0.0.1 "$PG_PORT"
    fi
}

pg_cluster_version() {
    # The first (oldest) installed cluster version, e.g. "15".
    if [[ -d /etc/postgresql ]]; then
        find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | head -n1
    fi
}

pg_start() {
    local version
    version="$(pg_cluster_version)"
    [[ -n "$version" ]] || die "PostgreSQL is installed but no cluster exists under /etc/postgresql (create one: pg_createcluster <version> main)"
    log "starting PostgreSQL cluster $version/main"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || die "pg_ctlcluster $version main start failed; see /var/log/postgresql/postgresql-$version-main.log"
}

# Trust authentication for user postgres over TCP on loopback, as the test suites and
# deploy/local/up.sh expect. Only touches the cluster when a password-less login fails.
pg_ensure_trust() {
    if psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
        return 0
    fi
    local version hba
    version="$(pg_cluster_version)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    [[ -n "$version" && -f "$hba" ]] || die "cannot log in as postgres on 127.0.0.1 and found no pg_hba.conf to fix"
    if ! $SUDO grep -qE '^host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        log "adding trust authentication for postgres@127.0.0.1 to $hba"
        local tmp
        tmp="$(mktemp)"
        {
            echo "# Added by deploy/local/services.sh: local development, trust on loopback."
            echo "host    all    postgres    127.0.0.1/32    trust"
            echo "host    all    postgres    ::1/128         trust"
            $SUDO cat "$hba"
        } >"$tmp"
        $SUDO cp "$tmp" "$hba"
        rm -f "$tmp"
    fi
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
    psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1 \
        || die "still cannot log in as postgres on 127.0.0.1 without a password; check $hba"
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL is running on 127.0.0.1:$PG_PORT"
    else
        if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ -z "$(pg_cluster_version)" ]]; then
            apt_install postgresql
        fi
        # The package's post-install may already have started it.
        pg_ready || pg_start
        wait_for PostgreSQL pg_ready "See /var/log/postgresql/."
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    pg_ensure_trust
}

# --- RabbitMQ -----------------------------------------------------------------

rabbit_ready() {
    tcp_open 127.0.0.1 "$AMQP_PORT"
}

ensure_rabbitmq() {
    if rabbit_ready; then
        log "RabbitMQ is running on 127.0.0.1:$AMQP_PORT"
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi
    if ! rabbit_ready; then
        log "starting RabbitMQ"
        # Debian's wrapper drops to the rabbitmq user when started as root.
        $SUDO rabbitmq-server -detached \
            || die "rabbitmq-server -detached failed; see /var/log/rabbitmq/"
    fi
    wait_for RabbitMQ rabbit_ready "See /var/log/rabbitmq/ (startup_log, startup_err, rabbit@*.log)."
}

ensure_postgres
ensure_rabbitmq
