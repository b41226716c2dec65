#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft: one process is broker and controller) on 127.0.0.1,
# run from Kafka's jars on Maven Central — no Docker, no tarball.
#
#   deploy/local/kafka.sh start    resolve jars (first time only), format storage (first time
#                                  only), start, and wait until the broker answers a metadata
#                                  request; a broker already answering on the port is reused
#   deploy/local/kafka.sh stop     stop the broker this script started (SIGTERM, then SIGKILL)
#   deploy/local/kafka.sh status   exit 0 when a broker answers on the port, 3 when not
#   deploy/local/kafka.sh logs [-f]  print (or follow) the broker's log
#
# Settings (environment):
#   KAFKA_VERSION          Kafka release from Maven Central     (default 4.1.1)
#   KAFKA_PORT             client port on 127.0.0.1             (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1   (default KAFKA_PORT + 1)
#   KAFKA_DATA_DIR         storage, generated config, cluster id (default .run/kafka, or
#                          .run/kafka-PORT when KAFKA_PORT is not 19092; pid file and log alike)
#   KAFKA_HEAP_OPTS        JVM heap                             (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness        (default 120)
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL on stop       (default 30)
#   JAVA_HOME              Java 17 or newer                     (default: java on PATH)
#   KAFKA_PROBE_PYTHON     Python with kafka-python             (default .venv/bin/python)
#
# Secured listeners, beside the PLAINTEXT one (which the probe and the controller keep using):
#   KAFKA_TLS_DIR          a folder made by deploy/local/kafka-certs.sh; when set, the broker
#                          also listens with TLS on 127.0.0.1:
#     KAFKA_SSL_PORT         SSL, client certificate required (mutual TLS)  (default KAFKA_PORT + 2)
#     KAFKA_SASL_SSL_PORT    SASL_SSL: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN  (default KAFKA_PORT + 3)
#     KAFKA_WRONG_NAME_PORT  SSL with a certificate for kafka.invalid only, so that clients'
#                            hostname verification must refuse it         (default KAFKA_PORT + 4)
#   KAFKA_SASL_USERS       user:password[,user:password...] for SASL_SSL: SCRAM credentials
#                          are created with Kafka's storage tool when the storage is formatted
#                          (so a new user list needs a new KAFKA_DATA_DIR), PLAIN users in the
#                          listener's JAAS configuration
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO_ROOT/deploy/local"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
# Brokers on other ports (a second checkout, a CI run beside a dev stack) get their own data
# folder, pid file and log, so that the two never touch each other's files.
INSTANCE="kafka"
[[ "$KAFKA_PORT" == 19092 ]] || INSTANCE="kafka-$KAFKA_PORT"
KAFKA_DATA_DIR="$(realpath -m "${KAFKA_DATA_DIR:-$REPO_ROOT/.run/$INSTANCE}")"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_PROBE_PYTHON="${KAFKA_PROBE_PYTHON:-$REPO_ROOT/.venv/bin/python}"

RUN_DIR="$REPO_ROOT/.run"
PID_FILE="$RUN_DIR/$INSTANCE.pid"
LOG_FILE="$RUN_DIR/logs/$INSTANCE.log"
LIB_DIR="$REPO_ROOT/.cache/kafka/$KAFKA_VERSION/libs"
# Class-data sharing archive of the broker's classes: the first broker writes it when it stops,
# later ones map it instead of loading and verifying ~5,000 classes (seconds on a busy box).
CDS_ARCHIVE="$REPO_ROOT/.cache/kafka/$KAFKA_VERSION/broker-classes.jsa"
CDS_PENDING="$CDS_ARCHIVE.pending"
PROPERTIES="$KAFKA_DATA_DIR/server.properties"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster-id"
LOG_DIRS="$KAFKA_DATA_DIR/logs"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:+$(realpath -m "$KAFKA_TLS_DIR")}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 3))}"
KAFKA_WRONG_NAME_PORT="${KAFKA_WRONG_NAME_PORT:-$((KAFKA_PORT + 4))}"
KAFKA_SASL_USERS="${KAFKA_SASL_USERS:-}"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: error: %s\n' "$*" >&2; exit 1; }

java_bin() {
    if [[ -n "${JAVA_HOME:-}" ]]; then echo "$JAVA_HOME/bin/java"; else command -v java || true; fi
}

check_java() {
    local java major
    java="$(java_bin)"
    [[ -n "$java" && -x "$java" ]] || die "no java found; install Java 17+ or set JAVA_HOME"
    major="$("$java" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')"
    [[ "${major:-0}" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, $java is Java ${major:-unknown}"
}

check_probe_python() {
    [[ -x "$KAFKA_PROBE_PYTHON" ]] ||
        die "no Python at $KAFKA_PROBE_PYTHON to check the broker with; run 'make venv' or set KAFKA_PROBE_PYTHON"
}

# The pid in the pid file, if that process is alive and is the broker this script started.
our_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    # A recycled pid belongs to some other program: only trust it if it runs our config.
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $PROPERTIES" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

# Ask for a real metadata answer; prints the cluster id. Args: timeout-seconds [pid].
probe() {
    check_probe_python
    "$KAFKA_PROBE_PYTHON" "$HERE/kafka_probe.py" --bootstrap "$BOOTSTRAP" --timeout "$1" ${2:+--pid "$2"}
}

ensure_jars() {
    if [[ -f "$LIB_DIR/.complete" ]]; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found; install Maven (apt-get install -y maven)"
    say "resolving Kafka $KAFKA_VERSION jars from Maven Central into ${LIB_DIR#"$REPO_ROOT"/}"
    rm -rf "$LIB_DIR"
    mkdir -p "$LIB_DIR"
    if ! mvn -B -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$LIB_DIR" >"$RUN_DIR/logs/kafka-mvn.log" 2>&1; then
        tail -n 30 "$RUN_DIR/logs/kafka-mvn.log" >&2
        die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (full log: $RUN_DIR/logs/kafka-mvn.log)"
    fi
    ls "$LIB_DIR"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after mvn"
    touch "$LIB_DIR/.complete"
}

# The SASL users as "name password" lines; dies on a malformed list.
sasl_users() {
    local entry
    local -a entries=()
    [[ -n "$KAFKA_SASL_USERS" ]] || return 0
    IFS=',' read -ra entries <<<"$KAFKA_SASL_USERS"
    for entry in "${entries[@]}"; do
        [[ "$entry" =~ ^[A-Za-z0-9._-]+:[^,\\\"[:space:]]+$ ]] ||
            die "KAFKA_SASL_USERS entries must be user:password (no comma, quote, backslash or space)"
        printf '%s %s\n' "${entry%%:*}" "${entry#*:}"
    done
}

# Listener lines of the TLS listeners (none without KAFKA_TLS_DIR).
tls_properties() {
    [[ -n "$KAFKA_TLS_DIR" ]] || return 0
    local file plain_users="" name password
    for file in ca.pem broker-keystore.pem wrong-name-keystore.pem; do
        [[ -f "$KAFKA_TLS_DIR/$file" ]] ||
            die "no $file in KAFKA_TLS_DIR=$KAFKA_TLS_DIR; make it with deploy/local/kafka-certs.sh"
    done
    while read -r name password; do
        plain_users+=" user_$name=\"$password\""
    done < <(sasl_users)
    cat <<EOF

# TLS listeners (KAFKA_TLS_DIR): PEM key stores made by deploy/local/kafka-certs.sh.
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_TLS_DIR/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$KAFKA_TLS_DIR/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.wrong_name.ssl.keystore.type=PEM
listener.name.wrong_name.ssl.keystore.location=$KAFKA_TLS_DIR/wrong-name-keystore.pem
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
EOF
}

write_properties() {
    sasl_users >/dev/null # dies here, not in the subshells that read the list
    mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIRS"
    local listeners="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT"
    local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if [[ -n "$KAFKA_TLS_DIR" ]]; then
        listeners+=",SSL://$KAFKA_HOST:$KAFKA_SSL_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT"
        listeners+=",WRONG_NAME://$KAFKA_HOST:$KAFKA_WRONG_NAME_PORT"
        protocols+=",SSL:SSL,SASL_SSL:SASL_SSL,WRONG_NAME:SSL"
    fi
    cat >"$PROPERTIES" <<EOF
# Generated by deploy/local/kafka.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=$listeners,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$LOG_DIRS

# A dev box: one replica, topics appear on first use, groups join without waiting.
auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24

# Inline photos: camera-size JPEGs are several MB (the preprocessing limit is 32 MiB).
message.max.bytes=41943040
replica.fetch.max.bytes=41943040
EOF
    tls_properties >>"$PROPERTIES"
    chmod 600 "$PROPERTIES" # it may hold the PLAIN users' passwords
}

format_storage() {
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding. One that starts with '-'
    # would read as an option to the storage tool, so draw again (an unformatted folder may
    # still hold one from an older version of this script).
    while [[ ! -s "$CLUSTER_ID_FILE" || "$(<"$CLUSTER_ID_FILE")" == -* ]]; do
        head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22 >"$CLUSTER_ID_FILE"
    done
    say "formatting storage in ${KAFKA_DATA_DIR#"$REPO_ROOT"/} (cluster id $(<"$CLUSTER_ID_FILE"))"
    local -a scram=()
    local name password mechanism
    while read -r name password; do
        for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
            scram+=(--add-scram "$mechanism=[name=$name,password=$password]")
        done
    done < <(sasl_users)
    "$(java_bin)" -Xmx256m -cp "$LIB_DIR/*" -Dlog4j2.configurationFile="$HERE/kafka-log4j2.xml" \
        kafka.tools.StorageTool format --ignore-formatted \
        -t "$(<"$CLUSTER_ID_FILE")" -c "$PROPERTIES" "${scram[@]}" >>"$LOG_FILE" 2>&1 ||
        die "formatting storage failed; see $LOG_FILE"
}

cmd_start() {
    local pid cluster_id started
    started=$(date +%s.%N)
    mkdir -p "$RUN_DIR/logs"
    if pid="$(our_pid)"; then
        cluster_id="$(probe "$KAFKA_START_TIMEOUT" "$pid")" ||
            die "broker pid $pid is running but does not answer on $BOOTSTRAP; see $LOG_FILE"
        say "already running (pid $pid) on $BOOTSTRAP, cluster $cluster_id"
        return 0
    fi
    rm -f "$PID_FILE"
    if port_open "$KAFKA_PORT"; then
        cluster_id="$(probe 10)" ||
            die "port $KAFKA_PORT is in use by something that does not answer Kafka metadata requests"
        say "reusing the broker already answering on $BOOTSTRAP (cluster $cluster_id; not started by this script, so 'stop' leaves it alone)"
        return 0
    fi
    port_open "$KAFKA_CONTROLLER_PORT" && die "controller port $KAFKA_CONTROLLER_PORT is already in use"

    check_java
    check_probe_python
    ensure_jars
    write_properties
    format_storage

    local cds_opt
    if [[ -f "$CDS_ARCHIVE" ]]; then
        cds_opt="-XX:SharedArchiveFile=$CDS_ARCHIVE"
    else
        rm -f "$CDS_PENDING"
        cds_opt="-XX:ArchiveClassesAtExit=$CDS_PENDING"
    fi

    say "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (log: ${LOG_FILE#"$REPO_ROOT"/})"
    # setsid: the broker outlives the shell that started it and does not receive its Ctrl-C.
    # shellcheck disable=SC2086
    setsid "$(java_bin)" $KAFKA_HEAP_OPTS "$cds_opt" "-Xlog:cds*=off" \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$HERE/kafka-log4j2.xml" \
        -Dkafka.logs.dir="$RUN_DIR/logs" \
        -cp "$LIB_DIR/*" kafka.Kafka "$PROPERTIES" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    if ! cluster_id="$(probe "$KAFKA_START_TIMEOUT" "$pid")"; then
        say "broker did not become ready; last log lines:" >&2
        tail -n 30 "$LOG_FILE" >&2 || true
        cmd_stop >/dev/null 2>&1 || true
        die "Kafka did not answer a metadata request on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s"
    fi
    say "ready (pid $pid, cluster $cluster_id) after $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s"
}

cmd_stop() {
    local pid waited=0
    if ! pid="$(our_pid)"; then
        rm -f "$PID_FILE"
        if port_open "$KAFKA_PORT"; then
            say "not started by this script; leaving the broker on $BOOTSTRAP running"
        else
            say "not running"
        fi
        return 0
    fi
    say "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= KAFKA_STOP_TIMEOUT * 10)); then
            say "still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    adopt_cds_archive
    say "stopped"
}

# Keep the class archive the stopped broker wrote only if the JVM can map it (a broker killed
# while writing it leaves a partial file).
adopt_cds_archive() {
    [[ -f "$CDS_PENDING" ]] || return 0
    if "$(java_bin)" -Xshare:on -XX:SharedArchiveFile="$CDS_PENDING" -cp "$LIB_DIR/*" \
        -version >/dev/null 2>&1; then
        mv -f "$CDS_PENDING" "$CDS_ARCHIVE"
    else
        rm -f "$CDS_PENDING"
    fi
}

cmd_status() {
    local pid cluster_id
    if pid="$(our_pid)"; then
        if cluster_id="$(probe 5 "$pid" 2>/dev/null)"; then
            say "running (pid $pid) on $BOOTSTRAP, cluster $cluster_id"
            return 0
        fi
        say "pid $pid is alive but not answering on $BOOTSTRAP (starting, or stuck: see $LOG_FILE)"
        return 3
    fi
    if port_open "$KAFKA_PORT" && cluster_id="$(probe 5 2>/dev/null)"; then
        say "a broker not started by this script answers on $BOOTSTRAP, cluster $cluster_id"
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
status) cmd_status ;;
logs) shift; cmd_logs "$@" ;;
*)
    echo "usage: $0 {start|stop|status|logs [-f]}" >&2
    exit 2
    ;;
esac
