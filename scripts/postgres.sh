#!/usr/bin/env bash
# A PostgreSQL cluster of the project's own, on 127.0.0.1, from Debian's `postgresql` package.
#
#   scripts/postgres.sh up     install the package when missing, create the cluster in .pgdata
#                              (ignored by git) on first use, start it with wal_level=logical
#                              (restarting a running one that has another wal_level), create the
#                              role (with REPLICATION) and the database
#   scripts/postgres.sh down   stop it (the data stays)
#   scripts/postgres.sh url    print the DATABASE_URL that points at it
#   scripts/postgres.sh datadir  print the folder that holds (or will hold) the cluster's data
#
# The cluster listens on 127.0.0.1 only and trusts local connections: it is for development
# and tests, never for production. wal_level=logical and the REPLICATION role are what Debezium's
# PostgreSQL connector (connect/worker.sh) needs to read the outbox table's inserts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGDATA_DIR="${PG_DATA_DIR:-$ROOT/.pgdata}"
# As root, the server runs as the `postgres` user, which must be able to reach the data folder.
# A clone in a folder only root may enter (a `mktemp -d` folder, /root) keeps its cluster in the
# postgres user's home instead, under a name of its own derived from the clone's path.
# (Decided once the package, and so the user, is installed.)
datadir_resolve() {
  if [[ -z "${PG_DATA_DIR:-}" ]] && (( EUID == 0 )) && id postgres >/dev/null 2>&1 \
     && ! runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
    PGDATA_DIR="$(getent passwd postgres | cut -d: -f6)/orderflow-$(printf %s "$ROOT" | sha1sum | cut -c1-12)"
  fi
}
PGPORT="${PG_PORT:-5433}"
DB_NAME="${PG_DATABASE:-orderflow}"
DB_USER="${PG_USER:-orderflow}"
URL="postgres://$DB_USER@127.0.0.1:$PGPORT/$DB_NAME"
# What the server starts with: 127.0.0.1 only, and logical decoding (Debezium's pgoutput) with
# room for a few replication slots and the connections that stream them.
SERVER_OPTS="-c listen_addresses=127.0.0.1 -p $PGPORT -k /tmp -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10"

say() { echo "postgres: $*"; }
die() { echo "postgres: $*" >&2; exit 1; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install_if_missing() {
  [[ -n "$(bindir)" && -x "$(bindir)/initdb" ]] && return 0
  (( EUID == 0 )) || die "Debian's postgresql package is missing: run 'sudo apt-get install -y postgresql'"
  say "installing Debian's postgresql package"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
as_owner() {
  if (( EUID == 0 )); then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ctl_() { as_owner "$(bindir)/pg_ctl" -D "$PGDATA_DIR" "$@"; }

up() {
  install_if_missing
  datadir_resolve
  if (( EUID == 0 )); then
    mkdir -p "$PGDATA_DIR"
    chown postgres:postgres "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    runuser -u postgres -- test -w "$PGDATA_DIR" \
      || die "the postgres user cannot reach $PGDATA_DIR (a parent folder is not searchable); set PG_DATA_DIR to a folder it can reach"
  fi
  if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
    say "creating a cluster in ${PGDATA_DIR#"$ROOT"/}"
    as_owner "$(bindir)/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --encoding=UTF8 \
      --locale=C.UTF-8 >/dev/null
  fi
  local psql=("$(bindir)/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qtA)
  if pg_ctl_ status >/dev/null 2>&1; then
    # A cluster started before wal_level=logical was asked for (or by hand without it): restart
    # it with the options below, so logical decoding works whenever `up` has run.
    local wal_level
    wal_level="$("${psql[@]}" -c "SHOW wal_level")" || die "the server runs but does not answer on 127.0.0.1:$PGPORT"
    if [[ "$wal_level" == logical ]]; then
      say "already running on 127.0.0.1:$PGPORT"
    else
      say "running with wal_level=$wal_level; restarting with wal_level=logical"
      pg_ctl_ restart -m fast -w -t 60 -l "$PGDATA_DIR/server.log" -o "$SERVER_OPTS" >/dev/null \
        || { tail -n 20 "$PGDATA_DIR/server.log" >&2; die "the server did not restart"; }
      say "restarted on 127.0.0.1:$PGPORT"
    fi
  else
    # -w waits until the server accepts connections.
    pg_ctl_ start -w -t 60 -l "$PGDATA_DIR/server.log" -o "$SERVER_OPTS" >/dev/null \
      || { tail -n 20 "$PGDATA_DIR/server.log" >&2; die "the server did not start"; }
    say "started on 127.0.0.1:$PGPORT"
  fi
  # REPLICATION: Debezium's connector logs in as this role to stream the outbox's changes.
  local has_replication
  has_replication="$("${psql[@]}" -c "SELECT rolreplication FROM pg_roles WHERE rolname = '$DB_USER'")"
  if [[ -z "$has_replication" ]]; then
    "${psql[@]}" -c "CREATE ROLE \"$DB_USER\" LOGIN CREATEDB REPLICATION" >/dev/null
  elif [[ "$has_replication" != t ]]; then
    "${psql[@]}" -c "ALTER ROLE \"$DB_USER\" REPLICATION" >/dev/null
    say "gave role $DB_USER REPLICATION"
  fi
  if [[ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
    "${psql[@]}" -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\"" >/dev/null
    say "created database $DB_NAME"
  fi
  say "DATABASE_URL=$URL"
}

down() {
  datadir_resolve
  if [[ -z "$(bindir)" || ! -f "$PGDATA_DIR/PG_VERSION" ]] || ! pg_ctl_ status >/dev/null 2>&1; then
    say "not running"
    return 0
  fi
  pg_ctl_ stop -m fast -w >/dev/null
  say "stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  url) echo "$URL" ;;
  datadir) datadir_resolve; echo "$PGDATA_DIR" ;;
  *) echo "usage: $0 up|down|url|datadir" >&2; exit 2 ;;
esac
