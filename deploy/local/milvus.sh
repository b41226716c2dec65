#!/usr/bin/env bash
# Milvus Lite's own gRPC server on 127.0.0.1, for several processes (workers, the gallery loader)
# that must share one gallery: a Milvus Lite *file* can be opened by one process only.
#
#   deploy/local/milvus.sh start    start `milvus-lite server` and wait until it answers
#                                   the Milvus protocol; one already answering is reused
#   deploy/local/milvus.sh stop     stop the server this script started (SIGTERM, then SIGKILL)
#   deploy/local/milvus.sh status   exit 0 when a server answers on the port, 3 when not
#
# Settings (environment):
#   MILVUS_PORT            gRPC port on 127.0.0.1                (default 19530)
#   MILVUS_DATA_DIR        server data directory                 (default .run/milvus)
#   MILVUS_START_TIMEOUT   seconds to wait for readiness         (default 60)
#   MILVUS_PYTHON          Python with pymilvus and milvus-lite  (default .venv/bin/python)
#   MILVUS_OPENBLAS_THREADS  OpenBLAS threads of the server       (default 1: see start)
# Clients connect with URI http://127.0.0.1:$MILVUS_PORT (e.g. LANDMARK_MILVUS_URI).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MILVUS_HOST=127.0.0.1
MILVUS_PORT="${MILVUS_PORT:-19530}"
MILVUS_DATA_DIR="$(realpath -m "${MILVUS_DATA_DIR:-$REPO_ROOT/.run/milvus}")"
MILVUS_START_TIMEOUT="${MILVUS_START_TIMEOUT:-60}"
MILVUS_PYTHON="${MILVUS_PYTHON:-$REPO_ROOT/.venv/bin/python}"
RUN_DIR="$REPO_ROOT/.run"
PID_FILE="$RUN_DIR/milvus-$MILVUS_PORT.pid"
LOG_FILE="$RUN_DIR/logs/milvus-$MILVUS_PORT.log"
URI="http://$MILVUS_HOST:$MILVUS_PORT"

say() { printf 'milvus: %s\n' "$*"; }
die() { printf 'milvus: error: %s\n' "$*" >&2; exit 1; }

[[ -x "$MILVUS_PYTHON" ]] || die "no Python at $MILVUS_PYTHON; run 'make venv' or set MILVUS_PYTHON"

# A real Milvus request (get_server_version), not just an open port.
ready() {
    "$MILVUS_PYTHON" - "$URI" >/dev/null 2>&1 <<'PY'
import sys
from pymilvus import MilvusClient
client = MilvusClient(uri=sys.argv[1], timeout=3)
client.get_server_version()
client.close()
PY
}

port_open() { (exec 3<>"/dev/tcp/$MILVUS_HOST/$MILVUS_PORT") 2>/dev/null; }

our_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--data-dir $MILVUS_DATA_DIR" || return 1
    echo "$pid"
}

cmd_start() {
    local pid waited=0
    mkdir -p "$RUN_DIR/logs" "$MILVUS_DATA_DIR"
    if pid="$(our_pid)" || port_open; then
        local tries=0
        until ready; do
            ((tries < MILVUS_START_TIMEOUT)) || die "port $MILVUS_PORT is taken by something that does not answer the Milvus protocol"
            sleep 1
            tries=$((tries + 1))
        done
        say "already running at $URI"
        return 0
    fi
    rm -f "$PID_FILE"
    say "starting on $URI (data: ${MILVUS_DATA_DIR#"$REPO_ROOT"/}, log: ${LOG_FILE#"$REPO_ROOT"/})"
    # Milvus Lite computes distances with numpy; OpenBLAS's default of a thread a core spins
    # after every call and was most of the server's CPU (bench/bench_search.py: 0.92 -> 0.37 ms
    # of server CPU a query at 300 references, same wall time).
    OPENBLAS_NUM_THREADS="${MILVUS_OPENBLAS_THREADS:-1}" \
        setsid "$(dirname "$MILVUS_PYTHON")/milvus-lite" server --data-dir "$MILVUS_DATA_DIR" \
        --host "$MILVUS_HOST" --port "$MILVUS_PORT" >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    until ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "milvus-lite server exited during start-up"
        fi
        ((waited < MILVUS_START_TIMEOUT * 2)) || { cmd_stop >/dev/null 2>&1 || true; die "$URI did not answer within ${MILVUS_START_TIMEOUT}s"; }
        sleep 0.5
        waited=$((waited + 1))
    done
    say "ready (pid $pid) at $URI"
}

cmd_stop() {
    local pid waited=0
    if ! pid="$(our_pid)"; then
        rm -f "$PID_FILE"
        say "not started by this script (or not running)"
        return 0
    fi
    say "stopping pid $pid"
    # SIGTERM (a background job of a script ignores SIGINT) lets the server close its data cleanly.
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 150)); then
            say "still running after 15s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_status() {
    if ready; then say "running at $URI"; return 0; fi
    say "not running"
    return 3
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
