#!/usr/bin/env bash
# Prometheus for the local stack: Debian's `prometheus` package, run as our own process with
# deploy/prometheus/prometheus.yml on 127.0.0.1 (not the Debian service on :9090).
#
#   deploy/local/prometheus.sh start   install the package if missing (apt-get, as root), check the
#                                      config with promtool, start, wait for /-/ready; an instance
#                                      already answering on the port is reused
#   deploy/local/prometheus.sh stop    stop the instance this script started (SIGTERM, then SIGKILL)
#   deploy/local/prometheus.sh status  exit 0 when Prometheus answers /-/ready on the port, 3 when not
#   deploy/local/prometheus.sh logs [-f]
#   deploy/local/prometheus.sh stop-debian-service
#                                      stop (and disable) the Debian service on :9090 that
#                                      installing the package may have started
#
# Settings (environment):
#   PROMETHEUS_PORT           listen port on 127.0.0.1     (default 19090)
#   PROMETHEUS_DATA_DIR       TSDB storage                 (default .run/prometheus/data, or
#                             .run/prometheus/data-PORT when PROMETHEUS_PORT is not 19090)
#   PROMETHEUS_CONFIG         configuration file           (default deploy/prometheus/prometheus.yml)
#   PROMETHEUS_START_TIMEOUT  seconds to wait for /-/ready (default 60)
#   PROMETHEUS_STOP_TIMEOUT   seconds before SIGKILL       (default 20)
# Workers are scraped on 127.0.0.1:9108-9117 and at whatever file_sd target files are written to
# .run/prometheus/targets/*.json.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

PROMETHEUS_HOST=127.0.0.1
PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
# Instances on other ports get their own storage, pid file and log.
INSTANCE="prometheus"
[[ "$PROMETHEUS_PORT" == 19090 ]] || INSTANCE="prometheus-$PROMETHEUS_PORT"
PROMETHEUS_DATA_DIR="$(realpath -m "${PROMETHEUS_DATA_DIR:-$REPO_ROOT/.run/prometheus/data${INSTANCE#prometheus}}")"
PROMETHEUS_CONFIG="$(realpath -m "${PROMETHEUS_CONFIG:-$REPO_ROOT/deploy/prometheus/prometheus.yml}")"
PROMETHEUS_START_TIMEOUT="${PROMETHEUS_START_TIMEOUT:-60}"
PROMETHEUS_STOP_TIMEOUT="${PROMETHEUS_STOP_TIMEOUT:-20}"

RUN_DIR="$REPO_ROOT/.run"
PID_FILE="$RUN_DIR/$INSTANCE.pid"
LOG_FILE="$RUN_DIR/logs/$INSTANCE.log"
TARGETS_DIR="$RUN_DIR/prometheus/targets"
URL="http://$PROMETHEUS_HOST:$PROMETHEUS_PORT"

say() { printf 'prometheus: %s\n' "$*"; }
die() { printf 'prometheus: error: %s\n' "$*" >&2; exit 1; }

our_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    # Only trust the pid if that process runs our configuration (pids get recycled).
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--config.file=$PROMETHEUS_CONFIG" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$PROMETHEUS_HOST/$PROMETHEUS_PORT") 2>/dev/null; }

ready() { curl -fsS --max-time 2 "$URL/-/ready" >/dev/null 2>&1; }

# The Debian package enables a service on :9090 with /etc/prometheus/prometheus.yml. Where an
# init system started it during installation, stop and disable it: we run our own instance.
stop_debian_service() {
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        say "stopping the Debian prometheus service that the package started"
        systemctl stop prometheus || true
        systemctl disable prometheus >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
        say "stopping the Debian prometheus service that the package started"
        /etc/init.d/prometheus stop >/dev/null || true
    fi
}

ensure_installed() {
    command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
    [[ "$(id -u)" -eq 0 ]] ||
        die "Debian's prometheus package is not installed; run: sudo apt-get install -y prometheus"
    say "installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$RUN_DIR/logs"
    {
        apt-get install -y --no-install-recommends prometheus ||
            { apt-get update && apt-get install -y --no-install-recommends prometheus; }
    } >"$RUN_DIR/logs/prometheus-apt.log" 2>&1 || {
        tail -n 20 "$RUN_DIR/logs/prometheus-apt.log" >&2
        die "apt-get could not install prometheus (log: $RUN_DIR/logs/prometheus-apt.log)"
    }
    stop_debian_service
}

cmd_start() {
    local pid waited=0
    mkdir -p "$RUN_DIR/logs" "$TARGETS_DIR" "$PROMETHEUS_DATA_DIR"
    if pid="$(our_pid)"; then
        while ! ready; do
            ((waited < PROMETHEUS_START_TIMEOUT * 5)) || die "pid $pid runs but $URL/-/ready does not answer; see $LOG_FILE"
            sleep 0.2
            waited=$((waited + 1))
        done
        say "already running (pid $pid) at $URL"
        return 0
    fi
    rm -f "$PID_FILE"
    if port_open; then
        ready || die "port $PROMETHEUS_PORT is in use by something that does not answer $URL/-/ready"
        say "reusing the Prometheus already answering at $URL (not started by this script, so 'stop' leaves it alone)"
        return 0
    fi

    ensure_installed
    promtool check config "$PROMETHEUS_CONFIG" >"$RUN_DIR/logs/promtool.log" 2>&1 || {
        cat "$RUN_DIR/logs/promtool.log" >&2
        die "promtool rejects $PROMETHEUS_CONFIG"
    }

    say "starting on $URL (log: ${LOG_FILE#"$REPO_ROOT"/})"
    setsid prometheus \
        --config.file="$PROMETHEUS_CONFIG" \
        --storage.tsdb.path="$PROMETHEUS_DATA_DIR" \
        --storage.tsdb.retention.time=2d \
        --web.listen-address="$PROMETHEUS_HOST:$PROMETHEUS_PORT" \
        --web.enable-lifecycle \
        >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    while ! ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "prometheus exited during start-up"
        fi
        if ((waited >= PROMETHEUS_START_TIMEOUT * 5)); then
            tail -n 20 "$LOG_FILE" >&2 || true
            cmd_stop >/dev/null 2>&1 || true
            die "$URL/-/ready did not answer within ${PROMETHEUS_START_TIMEOUT}s"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    say "ready (pid $pid) at $URL"
}

cmd_stop() {
    local pid waited=0
    if ! pid="$(our_pid)"; then
        rm -f "$PID_FILE"
        if port_open; then
            say "not started by this script; leaving the instance at $URL running"
        else
            say "not running"
        fi
        return 0
    fi
    say "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= PROMETHEUS_STOP_TIMEOUT * 10)); then
            say "still running after ${PROMETHEUS_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_status() {
    local pid
    if pid="$(our_pid)"; then
        if ready; then
            say "running (pid $pid) at $URL"
            return 0
        fi
        say "pid $pid is alive but $URL/-/ready does not answer (see $LOG_FILE)"
        return 3
    fi
    if port_open && ready; then
        say "an instance not started by this script answers at $URL"
        return 0
    fi
    say "not running"
    return 3
}

cmd_logs() {
    [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
    if [[ "${1:-}" == "-f" ]]; then exec tail -n 50 -F "$LOG_FILE"; fi
    tail -n "${LINES:-100}" "$LOG_FILE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
stop-debian-service) stop_debian_service ;;
status) cmd_status ;;
logs) shift; cmd_logs "$@" ;;
*)
    echo "usage: $0 {start|stop|status|logs [-f]|stop-debian-service}" >&2
    exit 2
    ;;
esac
