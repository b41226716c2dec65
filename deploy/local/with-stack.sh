#!/usr/bin/env bash
# Run a command with the local Kafka and Prometheus up; stop afterwards only what this run started.
#
#   deploy/local/with-stack.sh [--only kafka|prometheus] -- COMMAND [ARG...]
#
# A service already answering on its port (started by `make stack-start`, another shell, or
# another tool) is used as it is and left running. Services this script starts are stopped when
# COMMAND ends, fails, or is interrupted. Exits with COMMAND's status.
# COMMAND sees LANDMARK_KAFKA_BOOTSTRAP and LANDMARK_PROMETHEUS_URL (unless already set).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
services=(kafka prometheus)
if [[ "${1:-}" == "--only" ]]; then
    services=("$2")
    shift 2
fi
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--only kafka|prometheus] -- COMMAND [ARG...]" >&2
    exit 2
fi

started=()
# shellcheck disable=SC2317  # called from the EXIT trap
stop_started() {
    local i
    # Reverse order of starting.
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        "$HERE/${started[i]}.sh" stop || true
    done
    started=()
}
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for service in "${services[@]}"; do
    case "$service" in kafka | prometheus) ;; *) echo "unknown service: $service" >&2; exit 2 ;; esac
    if "$HERE/$service.sh" status >/dev/null 2>&1; then
        echo "with-stack: $service already running; using it and leaving it running"
        continue
    fi
    # Record before starting: a start that fails half-way still leaves a process to stop.
    started+=("$service")
    "$HERE/$service.sh" start || exit 1
done

export LANDMARK_KAFKA_BOOTSTRAP="${LANDMARK_KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-19092}}"
export LANDMARK_PROMETHEUS_URL="${LANDMARK_PROMETHEUS_URL:-http://127.0.0.1:${PROMETHEUS_PORT:-19090}}"

"$@"
status=$?
exit "$status"
