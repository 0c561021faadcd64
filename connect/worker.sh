#!/usr/bin/env bash
# A Kafka Connect worker (distributed mode, one node) on 127.0.0.1 that runs Debezium's
# PostgreSQL connector with its outbox EventRouter, and the project's own transformation
# (connect/transforms/), as the outbox relay. Run from the jars that connect/pom.xml (the worker)
# and connect/debezium/pom.xml (the plugin) resolve from Maven Central. No Docker needed.
#
#   connect/worker.sh up      start it (or reuse a worker that already answers) and wait until
#                             its REST API answers GET /connectors
#   connect/worker.sh down    stop it (SIGTERM, SIGKILL after 30 s); the port is free afterwards
#   connect/worker.sh status  say whether it runs and answers
#   connect/worker.sh logs    follow its log
#   connect/worker.sh pid     print its process id
#   connect/worker.sh jars    resolve the jars and build the transformation (`up` does it when
#                             needed; docker-compose.yml mounts the transformation's jar)
#
# The connector itself is registered by `manage.py debezium_connector register` (`make
# connect-up` does both). The worker keeps its state (connector configs, source offsets,
# statuses) in the topics <CONNECT_GROUP>-configs, -offsets and -status on the broker, which it
# creates; the data folder holds only the written properties, the pid file and the logs.
#
#   KAFKA_BOOTSTRAP_SERVERS  the broker (default 127.0.0.1:9092)
#   CONNECT_PORT             the REST API's port on 127.0.0.1 (default 8083)
#   CONNECT_GROUP            the worker group, and the prefix of its topics (default orderflow-connect)
#   CONNECT_DATA_DIR         properties, pid file, logs (default connect/data, ignored by git)
#   CONNECT_HEAP_OPTS        (default -Xms128m -Xmx512m)
#   CONNECT_UP_TIMEOUT       seconds `up` waits for the REST API (default 120)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

LIB="$HERE/lib"
PLUGINS="$HERE/plugins"
DEBEZIUM="$PLUGINS/debezium"
STAMP="$HERE/.jars.stamp"
MVN_LOG="$HERE/.mvn.log"
SMT_JAR_NAME="orderflow-connect-transforms.jar"
DATA="${CONNECT_DATA_DIR:-$HERE/data}"
BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
PORT="${CONNECT_PORT:-8083}"
GROUP="${CONNECT_GROUP:-orderflow-connect}"
HEAP_OPTS="${CONNECT_HEAP_OPTS:--Xms128m -Xmx512m}"
UP_TIMEOUT="${CONNECT_UP_TIMEOUT:-120}"

PID_FILE="$DATA/connect.pid"
LOG_DIR="$DATA/logs"
CONFIG="$DATA/connect-distributed.properties"
URL="http://127.0.0.1:$PORT"

say() { echo "connect: $*"; }
die() { echo "connect: $*" >&2; exit 1; }

# running_pid, alive, port_open, stop_running
# shellcheck source=../scripts/processes.sh
source "$ROOT/scripts/processes.sh"

# GET /connectors answers 200 once the worker has joined its group and read its config topic;
# while it starts up, the REST API answers 503 or not at all.
answers() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time "${1:-2}" "$URL/connectors" 2>/dev/null)" == 200 ]]
}

# Newer than the stamp: a pom, or the transformation's sources.
jars_outdated() {
  [[ -f "$STAMP" && -f "$LIB/.complete" && -f "$DEBEZIUM/$SMT_JAR_NAME" ]] || return 0
  [[ -n "$(find "$HERE/pom.xml" "$HERE/debezium/pom.xml" "$HERE/transforms/pom.xml" "$HERE/transforms/src" \
    -newer "$STAMP" -print -quit)" ]]
}

mvn_() {
  mvn -B -q "$@" >>"$MVN_LOG" 2>&1 || { tail -n 30 "$MVN_LOG" >&2; die "mvn $* failed (log: ${MVN_LOG#"$ROOT"/})"; }
}

ensure_jars() {
  jars_outdated || return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the worker's jars and build the transformation"
  : >"$MVN_LOG"
  say "resolving the worker's jars into connect/lib and Debezium's into connect/plugins/debezium"
  rm -rf "$LIB" "$DEBEZIUM"
  mvn_ -f "$HERE/pom.xml" dependency:copy-dependencies
  touch "$LIB/.complete"
  mvn_ -f "$HERE/debezium/pom.xml" dependency:copy-dependencies
  say "building the transformation (connect/transforms) into connect/plugins/debezium/$SMT_JAR_NAME"
  mvn_ -f "$HERE/transforms/pom.xml" package
  cp "$HERE/transforms/target/$SMT_JAR_NAME" "$DEBEZIUM/$SMT_JAR_NAME"
  touch "$STAMP"
}

write_config() {
  mkdir -p "$LOG_DIR"
  cat >"$CONFIG" <<EOF
# Written by connect/worker.sh on every start; edit the script, not this file.
bootstrap.servers=$BOOTSTRAP
group.id=$GROUP
# The outbox row's key and payload are text, and go to Kafka as their UTF-8 bytes, unchanged.
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
# The worker's state lives in these topics, which it creates. One broker: one replica each.
config.storage.topic=$GROUP-configs
config.storage.replication.factor=1
offset.storage.topic=$GROUP-offsets
offset.storage.replication.factor=1
offset.storage.partitions=5
status.storage.topic=$GROUP-status
status.storage.replication.factor=1
status.storage.partitions=1
offset.flush.interval.ms=1000
# Source records and their offsets are written in one Kafka transaction: no duplicate after a
# crash of the worker (the connector asks for it with exactly.once.support=required).
exactly.once.source.support=enabled
# Only the plugins that declare themselves in META-INF/services are loaded: a fast start, and
# the project's transformation declares itself there.
plugin.path=$PLUGINS
plugin.discovery=service_load
listeners=http://127.0.0.1:$PORT
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$PORT
EOF
}

# shellcheck disable=SC2206
JAVA_ARGS=($HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dconnect.logs.dir="$LOG_DIR" -cp "$LIB/*")

wait_until_answers() {
  local pid="$1" started=$SECONDS
  until port_open "$PORT" && answers 2; do
    if ! alive "$pid"; then
      echo "connect: the worker exited during start-up; last lines of its log:" >&2
      tail -n 30 "$LOG_DIR/connect.log" "$LOG_DIR/connect.out" 2>/dev/null >&2 || true
      exit 1
    fi
    if (( SECONDS - started >= UP_TIMEOUT )); then
      echo "connect: GET $URL/connectors did not answer 200 within ${UP_TIMEOUT}s; last lines of its log:" >&2
      tail -n 30 "$LOG_DIR/connect.log" 2>/dev/null >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

up() {
  local pid
  command -v curl >/dev/null || die "curl is needed to ask the worker's REST API whether it answers"
  if pid="$(running_pid)"; then
    if answers 3; then
      say "already running (pid $pid), answering on $URL"
      return 0
    fi
    say "started earlier (pid $pid), waiting for it to answer"
    wait_until_answers "$pid"
    say "answering on $URL"
    return 0
  fi
  if port_open "$PORT"; then
    answers 3 && { say "a worker already answers on $URL; using it, starting nothing"; return 0; }
    die "port $PORT is taken by something that is not a Connect worker answering GET /connectors"
  fi
  command -v java >/dev/null || die "Java 17 or newer is needed to run the worker"
  ensure_jars
  write_config
  local started=$SECONDS
  # setsid: the worker outlives the shell that started it and ignores its Ctrl-C; it is
  # stopped by `make connect-down`.
  setsid nohup java "${JAVA_ARGS[@]}" org.apache.kafka.connect.cli.ConnectDistributed "$CONFIG" \
    >"$LOG_DIR/connect.out" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  say "starting (pid $!) against $BOOTSTRAP, log in ${LOG_DIR#"$ROOT"/}/connect.log"
  wait_until_answers "$!"
  say "answering on $URL after $(( SECONDS - started ))s"
}

down() {
  # SIGTERM: the worker stops its tasks (committing their offsets) and leaves its group.
  stop_running 30
}

status() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"
    return 1
  fi
  if answers 3; then
    say "running (pid $pid), answering on $URL; connectors: $(curl -s --max-time 3 "$URL/connectors")"
  else
    say "running (pid $pid), not answering on $URL (yet)"
  fi
}

case "${1:-}" in
  up)     up ;;
  down)   down ;;
  status) status ;;
  logs)   tail -n 100 -F "$LOG_DIR/connect.log" ;;
  pid)    running_pid || { say "not running" >&2; exit 1; } ;;
  jars)   ensure_jars ;;
  *)      echo "usage: $0 up|down|status|logs|pid|jars" >&2; exit 2 ;;
esac
