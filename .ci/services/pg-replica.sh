#!/usr/bin/env bash
# A PostgreSQL primary and a streaming replica on loopback, for tokenflow's
# replica tests and failover drill. They are a pair of their own, never the
# machine's shared server on 5432: the drill kills its primary.
#
#   .ci/services/pg-replica.sh start           # idempotent: creates the pair, or rebuilds it
#                                              # if a drill left it failed over
#   .ci/services/pg-replica.sh stop            # stops both servers and removes their data
#   .ci/services/pg-replica.sh status          # exit 0 when the primary streams to the replica
#   .ci/services/pg-replica.sh crash-primary   # pg_ctl stop -m immediate on the primary
#
# Environment: TOKENFLOW_PG_PRIMARY_PORT (default 5433), TOKENFLOW_PG_REPLICA_PORT
# (default 5434), TOKENFLOW_PG_BIN (default: the newest /usr/lib/postgresql/*/bin),
# TOKENFLOW_SERVICES_DIR (default ${TMPDIR:-/tmp}/tokenflow-services; data, sockets
# and logs go to pg-replica-<primary port>/ under it).
#
# Both listen on 127.0.0.1 only, with trust authentication (a test pair; never
# expose it), database `test`, user `postgres`. The replica is made with
# pg_basebackup and streams with application_name `tokenflow_replica`;
# replication is asynchronous until a client sets synchronous_standby_names
# (the drill does, with ALTER SYSTEM). PostgreSQL's tools refuse to run as
# root: as root, this script runs them as the `postgres` user (runuser), in
# directories it owns. All waits are bounded.
set -euo pipefail

PRIMARY_PORT=${TOKENFLOW_PG_PRIMARY_PORT:-5433}
REPLICA_PORT=${TOKENFLOW_PG_REPLICA_PORT:-5434}
ROOT=${TOKENFLOW_SERVICES_DIR:-${TMPDIR:-/tmp}/tokenflow-services}
DIR="$ROOT/pg-replica-$PRIMARY_PORT"
HOST=127.0.0.1
STANDBY_NAME=tokenflow_replica

log() { printf 'pg-replica: %s\n' "$*" >&2; }

pg_bin() {
  if [ -n "${TOKENFLOW_PG_BIN:-}" ]; then echo "$TOKENFLOW_PG_BIN"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
    log "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    exit 1
  fi
  echo "$found"
}
BIN=$(pg_bin)

# PostgreSQL refuses to run as root; as root, run its tools as `postgres`.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

sql() {  # sql PORT QUERY: one value, or nothing when the server does not answer
  "$BIN/psql" -X -q -A -t -h "$HOST" -p "$1" -U postgres -d postgres -c "$2" 2>/dev/null
}
answers() { "$BIN/pg_isready" -q -h "$HOST" -p "$1" -t 1 >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${seconds}s waiting for $what (logs: $DIR/*.log)"
      return 1
    fi
    sleep 0.2
  done
}

healthy() {
  answers "$PRIMARY_PORT" && answers "$REPLICA_PORT" || return 1
  [ "$(sql "$PRIMARY_PORT" 'SELECT pg_is_in_recovery()')" = "f" ] || return 1
  [ "$(sql "$REPLICA_PORT" 'SELECT pg_is_in_recovery()')" = "t" ] || return 1
  [ "$(sql "$PRIMARY_PORT" "SELECT count(*) FROM pg_stat_replication
        WHERE application_name = '$STANDBY_NAME' AND state = 'streaming'")" = "1" ]
}

print_ports() {
  echo "PostgreSQL primary on $HOST:$PRIMARY_PORT, streaming replica on $HOST:$REPLICA_PORT" \
       "(database test, user postgres); logs in $DIR"
}

stop_server() {  # stop_server DATA_DIR
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  as_pg "$BIN/pg_ctl" -D "$data" stop -m fast -w -t 20 >/dev/null 2>&1 \
    || as_pg "$BIN/pg_ctl" -D "$data" stop -m immediate -w -t 20 >/dev/null 2>&1 || true
}

stop_all() {
  stop_server "$DIR/replica"
  stop_server "$DIR/primary"
}

create() {
  for port in "$PRIMARY_PORT" "$REPLICA_PORT"; do
    if answers "$port"; then
      log "port $port is already used by another server: set TOKENFLOW_PG_PRIMARY_PORT/REPLICA_PORT"
      exit 1
    fi
  done
  mkdir -p "$ROOT"
  chmod 755 "$ROOT"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR"; fi
  log "initdb (primary, port $PRIMARY_PORT)"
  as_pg "$BIN/initdb" -D "$DIR/primary" -U postgres --auth=trust --no-sync \
    --encoding=UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || {
      cat "$DIR/initdb.log" >&2; exit 1
    }
  as_pg tee -a "$DIR/primary/postgresql.conf" >/dev/null <<EOF
# tokenflow test pair
port = $PRIMARY_PORT
listen_addresses = '$HOST'
unix_socket_directories = '$DIR'
max_connections = 100
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 4
wal_keep_size = 128MB
hot_standby = on
wal_sender_timeout = 5s
wal_receiver_timeout = 5s
EOF
  as_pg "$BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w -t 30 start >/dev/null
  as_pg "$BIN/createdb" -h "$HOST" -p "$PRIMARY_PORT" -U postgres test
  log "pg_basebackup (replica, port $REPLICA_PORT)"
  as_pg "$BIN/pg_basebackup" -h "$HOST" -p "$PRIMARY_PORT" -U postgres \
    -D "$DIR/replica" -X stream -c fast -R --no-sync >"$DIR/basebackup.log" 2>&1 || {
      cat "$DIR/basebackup.log" >&2; exit 1
    }
  # Later lines win: the replica's own port, and a primary_conninfo naming it,
  # so that synchronous_standby_names can refer to it.
  as_pg tee -a "$DIR/replica/postgresql.conf" >/dev/null <<EOF
port = $REPLICA_PORT
EOF
  as_pg tee -a "$DIR/replica/postgresql.auto.conf" >/dev/null <<EOF
primary_conninfo = 'host=$HOST port=$PRIMARY_PORT user=postgres application_name=$STANDBY_NAME'
EOF
  as_pg "$BIN/pg_ctl" -D "$DIR/replica" -l "$DIR/replica.log" -w -t 30 start >/dev/null
  wait_for 30 "the replica to stream from the primary" healthy
}

start() {
  if healthy; then print_ports; return 0; fi
  if [ -d "$DIR" ]; then
    # Left failed over by a drill (or half made): a promoted replica and a
    # dead primary are not a pair any more. Rebuild from scratch.
    log "not a healthy pair: rebuilding it"
    stop_all
  fi
  create
  print_ports
}

case "${1:-}" in
  start) start ;;
  stop) stop_all; rm -rf "$DIR"; log "stopped" ;;
  status)
    if healthy; then print_ports; else echo "the PostgreSQL pair is not healthy" >&2; exit 1; fi ;;
  crash-primary)
    as_pg "$BIN/pg_ctl" -D "$DIR/primary" stop -m immediate -w -t 20 >/dev/null ;;
  *) echo "usage: $0 start|stop|status|crash-primary" >&2; exit 2 ;;
esac
