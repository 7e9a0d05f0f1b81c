#!/usr/bin/env bash
# A Redis Cluster on loopback for tokenflow's cluster tests and failover drill:
# three masters with one replica each, on six consecutive ports.
#
#   .ci/services/redis-cluster.sh start    # idempotent: creates, restarts or heals it
#   .ci/services/redis-cluster.sh stop     # stops every node and removes the data
#   .ci/services/redis-cluster.sh status   # exit 0 when the cluster is whole and healthy
#
# Environment: TOKENFLOW_CLUSTER_PORT (first port, default 7000: nodes on
# 7000-7005), TOKENFLOW_SERVICES_DIR (default ${TMPDIR:-/tmp}/tokenflow-services;
# data, node configs and logs go to redis-cluster-<port>/ under it).
#
# "Healthy" means: every node answers, cluster_state is ok on each, every
# master serves slots and has a replica whose link is up. `start` on a cluster
# that a failover drill has left with a dead node restarts that node from its
# own nodes.conf: it rejoins as a replica of the master that replaced it.
#
# Nodes keep nothing on disk (no RDB, no AOF): tests and drills start from
# nothing, and the failover drill measures replication, not persistence.
# cluster-node-timeout is 1 s so that a failover takes seconds, not the default
# 15 s; cluster-replica-validity-factor 0 lets a replica take over however
# long its master was silent. All waits are bounded.
set -euo pipefail

BASE_PORT=${TOKENFLOW_CLUSTER_PORT:-7000}
ROOT=${TOKENFLOW_SERVICES_DIR:-${TMPDIR:-/tmp}/tokenflow-services}
DIR="$ROOT/redis-cluster-$BASE_PORT"
HOST=127.0.0.1
NODE_TIMEOUT_MS=1000
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=($((BASE_PORT + i))); done

log() { printf 'redis-cluster: %s\n' "$*" >&2; }
cli() { local port=$1; shift; redis-cli -h "$HOST" -p "$port" --no-auth-warning "$@"; }
answers() { cli "$1" ping 2>/dev/null | grep -q PONG; }

require_tools() {
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || { log "$tool not found (apt-get install redis-server)"; exit 1; }
  done
}

start_node() {
  local port=$1 node_dir="$DIR/$1"
  mkdir -p "$node_dir"
  redis-server --port "$port" --bind "$HOST" --daemonize yes \
    --dir "$node_dir" --logfile "$DIR/$port.log" --pidfile "$DIR/$port.pid" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout "$NODE_TIMEOUT_MS" --cluster-replica-validity-factor 0 \
    --save "" --appendonly no --maxmemory-policy noeviction \
    --protected-mode yes
}

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

all_answer() { for p in "${PORTS[@]}"; do answers "$p" || return 1; done; }

# Healthy: every node reports cluster_state:ok, 3 masters own slots, and each
# master has a replica with its link up and the initial sync finished.
healthy() {
  local p masters=0
  for p in "${PORTS[@]}"; do
    cli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
  for p in "${PORTS[@]}"; do
    local info
    info=$(cli "$p" info replication 2>/dev/null) || return 1
    if grep -q '^role:master' <<<"$info"; then
      masters=$((masters + 1))
      grep -q '^connected_slaves:[1-9]' <<<"$info" || return 1
    else
      grep -q '^master_link_status:up' <<<"$info" || return 1
      grep -q '^master_sync_in_progress:0' <<<"$info" || return 1
    fi
  done
  [ "$masters" -eq 3 ] || return 1
  # Every replica's ack is recent: a master sees its replica's offset.
  for p in "${PORTS[@]}"; do
    local info
    info=$(cli "$p" info replication 2>/dev/null) || return 1
    if grep -q '^role:master' <<<"$info"; then
      grep -q '^slave0:.*state=online' <<<"$info" || return 1
    fi
  done
}

created() {  # slots are assigned: the cluster exists (healthy or not)
  local p
  for p in "${PORTS[@]}"; do
    if answers "$p" && cli "$p" cluster info 2>/dev/null | grep -q '^cluster_slots_assigned:16384'; then
      return 0
    fi
  done
  return 1
}

print_ports() {
  echo "Redis Cluster on $HOST ports ${PORTS[0]}-${PORTS[5]} (seed $HOST:${PORTS[0]}); logs in $DIR"
}

stop_all() {
  local p
  for p in "${PORTS[@]}"; do
    if answers "$p"; then
      cli "$p" shutdown nosave >/dev/null 2>&1 || true
    fi
  done
  for p in "${PORTS[@]}"; do
    wait_for 10 "node $p to stop" bash -c "! redis-cli -h $HOST -p $p ping >/dev/null 2>&1" || {
      # Only a process this script started (its pid file) is killed.
      if [ -f "$DIR/$p.pid" ]; then kill -9 "$(cat "$DIR/$p.pid")" 2>/dev/null || true; fi
    }
  done
}

start() {
  require_tools
  if all_answer && healthy; then
    print_ports
    return 0
  fi
  if [ -d "$DIR" ] && ls "$DIR"/*/nodes.conf >/dev/null 2>&1 && created; then
    # A cluster exists but is not whole (a drill killed a node): restart what
    # is down from its own nodes.conf, and let it rejoin.
    log "healing: restarting the nodes that are down"
    for p in "${PORTS[@]}"; do answers "$p" || start_node "$p"; done
    if wait_for 30 "every node to answer" all_answer && wait_for 60 "the cluster to heal" healthy; then
      print_ports
      return 0
    fi
    log "the cluster did not heal: recreating it"
  fi
  stop_all
  rm -rf "$DIR"
  mkdir -p "$DIR"
  for p in "${PORTS[@]}"; do
    if answers "$p"; then
      log "port $p is already used by another server: set TOKENFLOW_CLUSTER_PORT"
      exit 1
    fi
  done
  log "starting 6 nodes"
  for p in "${PORTS[@]}"; do start_node "$p"; done
  wait_for 30 "every node to answer" all_answer
  local addresses=()
  for p in "${PORTS[@]}"; do addresses+=("$HOST:$p"); done
  log "creating the cluster (3 masters, 1 replica each)"
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 || {
    log "redis-cli --cluster create failed:"; cat "$DIR/create.log" >&2; exit 1
  }
  wait_for 60 "the cluster to become healthy" healthy
  print_ports
}

status() {
  if all_answer && healthy; then
    print_ports
    cli "${PORTS[0]}" cluster nodes | awk '{print $2, $3}' | sort
    return 0
  fi
  echo "Redis Cluster on ports ${PORTS[0]}-${PORTS[5]} is not healthy" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop_all; rm -rf "$DIR"; log "stopped" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
