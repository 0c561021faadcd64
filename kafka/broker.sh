#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, roles broker+controller) on 127.0.0.1, run from the
# jars that kafka/pom.xml resolves from Maven Central. No Docker needed.
#
#   kafka/broker.sh up      start it (or reuse a broker that already answers) and wait until it
#                           answers a metadata request
#   kafka/broker.sh down    stop it cleanly; the port is free afterwards, the data stays
#   kafka/broker.sh reset   stop it and wipe its data
#   kafka/broker.sh status  say whether it runs
#   kafka/broker.sh logs    follow its log
#
# KAFKA_MODE=docker uses the docker-compose.yml service instead of the local jars.
#
# KAFKA_SASL_PORT=<port> adds a SASL_PLAINTEXT listener on 127.0.0.1:<port> (PLAIN and
# SCRAM-SHA-512) for the users in KAFKA_SASL_USERS ("name:password,..."), to try the project's
# SASL settings against. Like the rest of the config, it is written on the first start of a data
# folder only. The PLAINTEXT listener on KAFKA_LOCAL_PORT stays, and readiness is checked there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="$ROOT/.venv/bin/python"

LIB="$HERE/lib"
DATA="${KAFKA_DATA_DIR:-$HERE/data}"
PORT="${KAFKA_LOCAL_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_LOCAL_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT:-}"
# Development credentials, valid for both PLAIN and SCRAM-SHA-512 on the SASL listener.
SASL_USERS="${KAFKA_SASL_USERS:-alice:alice-secret,bob:bob-secret}"
# The broker, its page cache and the test suite share 2 cores and 24 GiB: 1 GiB of heap is
# ample for one node with a few topics, and leaves the rest to the OS page cache Kafka relies on.
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
UP_TIMEOUT="${KAFKA_UP_TIMEOUT:-120}"
MODE="${KAFKA_MODE:-local}"

PID_FILE="$DATA/kafka.pid"
LOG_DIR="$DATA/logs"
CONFIG="$DATA/server.properties"
LOCAL_BOOTSTRAP="127.0.0.1:$PORT"

say() { echo "kafka: $*"; }
die() { echo "kafka: $*" >&2; exit 1; }

# running_pid, alive, port_open, stop_running
# shellcheck source=../scripts/processes.sh
source "$ROOT/scripts/processes.sh"

# A metadata request through the project's own client settings (bootstrap, SASL, TLS).
answers() {
  DJANGO_DEBUG="${DJANGO_DEBUG:-true}" KAFKA_BOOTSTRAP_SERVERS="${1}" "$PYTHON" "$ROOT/manage.py" kafka_ping --timeout "${2:-2}" >/dev/null 2>&1
}

configured_bootstrap() {
  DJANGO_DEBUG="${DJANGO_DEBUG:-true}" "$PYTHON" "$ROOT/manage.py" kafka_ping --print-bootstrap
}

ensure_jars() {
  # Re-resolve when the pom changed since the last copy.
  if [[ ! -f "$HERE/.lib.stamp" || "$HERE/pom.xml" -nt "$HERE/.lib.stamp" ]]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the broker's jars"
    say "resolving the broker's jars from Maven Central into kafka/lib"
    rm -rf "$LIB"
    mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies >"$HERE/.mvn.log" 2>&1 \
      || { tail -n 20 "$HERE/.mvn.log" >&2; die "mvn dependency:copy-dependencies failed"; }
    touch "$HERE/.lib.stamp"
  fi
}

# KAFKA_SASL_USERS as "name password" lines. Names and passwords are written into a JAAS config
# and a StorageTool argument unquoted, so they are kept to characters neither syntax treats
# specially.
sasl_users() {
  local pair name password
  local IFS=,
  for pair in $SASL_USERS; do
    name="${pair%%:*}" password="${pair#*:}"
    [[ "$pair" == *:* && "$name" =~ ^[A-Za-z0-9._-]+$ && "$password" =~ ^[A-Za-z0-9._-]+$ ]] \
      || die "KAFKA_SASL_USERS: '$name' is not name:password (letters, digits, '.', '_', '-')"
    echo "$name $password"
  done
}

write_config() {
  mkdir -p "$DATA/log" "$LOG_DIR"
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "$SASL_PORT" ]]; then
    sasl_users >/dev/null
    listeners+=",SASL://127.0.0.1:$SASL_PORT"
    advertised+=",SASL://127.0.0.1:$SASL_PORT"
    protocols+=",SASL:SASL_PLAINTEXT"
  fi
  cat >"$CONFIG" <<EOF
# Written by kafka/broker.sh; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$DATA/log
num.partitions=1
# Topics are created explicitly (manage.py ensure_topics, the tests' fixtures), so a typo in a
# topic name fails loudly instead of silently creating a new topic.
auto.create.topics.enable=false
# One node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# The default 3 s wait for more members before the first rebalance of an empty group only slows
# a single-machine setup down.
group.initial.rebalance.delay.ms=0
EOF
  [[ -z "$SASL_PORT" ]] || write_sasl_config >>"$CONFIG"
}

# The SASL listener: PLAIN users live in its JAAS config, SCRAM users in the cluster metadata
# (added by format_storage), both from KAFKA_SASL_USERS. Brokers and controllers keep talking
# over PLAINTEXT, so no inter-broker SASL settings are needed.
write_sasl_config() {
  local users name password
  users="$(sasl_users)"
  echo "# The SASL_PLAINTEXT listener (KAFKA_SASL_PORT), for development credentials only."
  echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512"
  printf 'listener.name.sasl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required'
  while read -r name password; do printf ' user_%s="%s"' "$name" "$password"; done <<<"$users"
  printf ';\n'
  echo "listener.name.sasl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
}

# The config is written on a data folder's first start only, so a KAFKA_SASL_PORT given later
# cannot take effect: say so rather than run (or reuse) a broker without that listener.
check_sasl_listener() {
  [[ -n "$SASL_PORT" && -f "$CONFIG" ]] || return 0
  grep -q "^listeners=.*,SASL://127.0.0.1:$SASL_PORT\$" "$CONFIG" && return 0
  die "KAFKA_SASL_PORT=$SASL_PORT, but ${CONFIG#"$ROOT"/} has no such listener; it is written on" \
    "the first start of a data folder only (kafka/broker.sh reset, or a fresh KAFKA_DATA_DIR)"
}

# shellcheck disable=SC2206
JAVA_ARGS=($HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$LOG_DIR" -cp "$LIB/*")
java_cmd() { java "${JAVA_ARGS[@]}" "$@"; }

format_storage() {
  [[ -f "$DATA/log/meta.properties" ]] && return 0
  local cluster_id
  # What `StorageTool random-uuid` prints (16 random bytes, URL-safe base64 without padding,
  # never starting with "-"), without starting a JVM for it.
  cluster_id="$("$PYTHON" -c 'import base64, os
while (u := base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()).startswith("-"): pass
print(u)')"
  local scram=() name password
  # SCRAM credentials live in the cluster metadata; formatting is the one moment they can be
  # written before the broker (and its SASL listener) is up.
  if grep -q '^listener.name.sasl.scram-sha-512' "$CONFIG"; then
    sasl_users >/dev/null
    while read -r name password; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$password]")
    done <<<"$(sasl_users)"
  fi
  say "formatting KRaft storage in ${DATA#"$ROOT"/} (cluster $cluster_id)"
  java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" "${scram[@]}" >"$LOG_DIR/format.log" 2>&1 \
    || { cat "$LOG_DIR/format.log" >&2; die "formatting the storage failed"; }
}

# The readiness ping goes to the local PLAINTEXT listener, so it ignores any SASL/TLS settings
# meant for the project's clients (e.g. ones pointing at the SASL listener).
answers_plaintext() { KAFKA_SECURITY_PROTOCOL=PLAINTEXT answers "$@"; }

wait_until_answers() {
  local pid="$1" started=$SECONDS
  # A metadata request starts a Python process; the port opens first, and costs nothing to try.
  until port_open "$PORT" && answers_plaintext "$LOCAL_BOOTSTRAP" 2; do
    if ! alive "$pid"; then
      echo "kafka: the broker exited during start-up; last lines of its log:" >&2
      tail -n 30 "$LOG_DIR/server.log" "$LOG_DIR/kafka.out" 2>/dev/null >&2 || true
      exit 1
    fi
    if (( SECONDS - started >= UP_TIMEOUT )); then
      echo "kafka: no answer on $LOCAL_BOOTSTRAP within ${UP_TIMEOUT}s; last lines of its log:" >&2
      tail -n 30 "$LOG_DIR/server.log" 2>/dev/null >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

up_local() {
  local bootstrap pid
  bootstrap="$(configured_bootstrap)"
  local is_local=0
  [[ "$bootstrap" == "$LOCAL_BOOTSTRAP" || "$bootstrap" == "localhost:$PORT" ]] && is_local=1
  # Clients pointed at the local SASL listener use this broker too.
  [[ -n "$SASL_PORT" && ( "$bootstrap" == "127.0.0.1:$SASL_PORT" || "$bootstrap" == "localhost:$SASL_PORT" ) ]] \
    && is_local=1
  # A closed local port cannot answer: skip the metadata request and its timeout.
  if { (( ! is_local )) || port_open "$PORT"; } && answers "$bootstrap" 3; then
    if pid="$(running_pid)"; then
      check_sasl_listener
      say "already running (pid $pid) on $bootstrap"
    else
      say "a broker already answers at $bootstrap; using it, starting nothing"
    fi
    return 0
  fi
  if (( ! is_local )); then
    die "KAFKA_BOOTSTRAP_SERVERS=$bootstrap does not answer; start that broker, or unset the variable to run a local one on $LOCAL_BOOTSTRAP"
  fi
  if pid="$(running_pid)"; then
    check_sasl_listener
    say "started earlier (pid $pid), waiting for it to answer"
    wait_until_answers "$pid"
    return 0
  fi
  if port_open "$PORT"; then
    die "port $PORT is taken by something that is not a Kafka broker answering metadata requests"
  fi
  command -v java >/dev/null || die "Java 17 or newer is needed to run the broker"
  ensure_jars
  [[ -f "$CONFIG" ]] || write_config
  check_sasl_listener
  format_storage
  local started=$SECONDS
  # setsid: the broker outlives the shell that started it and ignores its Ctrl-C; it is
  # stopped by `make kafka-down`.
  setsid nohup java "${JAVA_ARGS[@]}" kafka.Kafka "$CONFIG" >"$LOG_DIR/kafka.out" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  say "starting (pid $!), log in ${LOG_DIR#"$ROOT"/}/server.log"
  wait_until_answers "$!"
  say "answering on $LOCAL_BOOTSTRAP after $(( SECONDS - started ))s"
}

down_local() {
  # SIGTERM runs the broker's controlled shutdown: logs are flushed and closed cleanly, so the
  # next start needs no log recovery.
  stop_running 60
}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose -f "$ROOT/docker-compose.yml" "$@"
  else docker-compose -f "$ROOT/docker-compose.yml" "$@"; fi
}

up_docker() {
  compose up -d kafka
  local started=$SECONDS
  until answers "$LOCAL_BOOTSTRAP" 2; do
    (( SECONDS - started < UP_TIMEOUT )) || { compose logs --tail 30 kafka >&2; die "no answer within ${UP_TIMEOUT}s"; }
    sleep 0.5
  done
  say "answering on $LOCAL_BOOTSTRAP (docker)"
}

case "${1:-}" in
  up)     if [[ "$MODE" == docker ]]; then up_docker; else up_local; fi ;;
  down)   if [[ "$MODE" == docker ]]; then compose stop kafka; else down_local; fi ;;
  reset)
    if [[ "$MODE" == docker ]]; then compose rm -s -f -v kafka; docker volume rm -f orderflow_kafka-data >/dev/null
    else down_local; rm -rf "$DATA"; say "data wiped"; fi ;;
  status)
    if pid="$(running_pid)"; then say "running (pid $pid) on $LOCAL_BOOTSTRAP"; else say "not running"; exit 1; fi ;;
  logs)   tail -n 100 -F "$LOG_DIR/server.log" ;;
  *)      echo "usage: $0 up|down|reset|status|logs" >&2; exit 2 ;;
esac
