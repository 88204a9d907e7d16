#!/usr/bin/env bash
# Stop the local Weft fleet started by deploy/local/up.sh: SIGTERM (the services drain
# for up to WEFT_SHUTDOWN_TIMEOUT, 30s by default), SIGKILL after 35s, pid files removed.
# PostgreSQL and RabbitMQ are left running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PID_DIR=".weft/pids"
KILL_AFTER="${WEFT_KILL_AFTER:-35}"

log() { printf 'down: %s\n' "$*"; }

# is_weft_pid PID: the process exists and is one of our binaries (not a reused pid).
is_weft_pid() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'weft-'
}

shopt -s nullglob
pidfiles=("$PID_DIR"/*.pid)
if ((${#pidfiles[@]} == 0)); then
    log "nothing to stop (no pid files in $PID_DIR)"
    exit 0
fi

declare -A stopping=()
for pidfile in "${pidfiles[@]}"; do
    name="$(basename "$pidfile" .pid)"
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if is_weft_pid "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        stopping[$name]="$pid"
        log "sent SIGTERM to $name (pid $pid)"
    else
        log "$name was not running"
        rm -f "$pidfile"
    fi
done

deadline=$((SECONDS + KILL_AFTER))
while ((${#stopping[@]} > 0)); do
    for name in "${!stopping[@]}"; do
        if ! kill -0 "${stopping[$name]}" 2>/dev/null; then
            log "$name stopped"
            rm -f "$PID_DIR/$name.pid"
            unset "stopping[$name]"
        fi
    done
    ((${#stopping[@]} > 0)) || break
    if ((SECONDS >= deadline)); then
        for name in "${!stopping[@]}"; do
            log "$name (pid ${stopping[$name]}) still running after ${KILL_AFTER}s: SIGKILL"
            kill -KILL "${stopping[$name]}" 2>/dev/null || true
            rm -f "$PID_DIR/$name.pid"
        done
        break
    fi
    sleep 0.5
done
log "done"
