#!/usr/bin/env bash
# A RabbitMQ cluster on loopback, for the cluster test and the chaos bench:
# nodes <prefix>1@localhost … <prefix>N@localhost, each with its own AMQP and
# distribution port and its own data under one folder, joined into one
# cluster. The default node of scripts/services.sh (rabbit@localhost, 5672,
# dist 25672) is left alone: the ports below do not collide with it.
#
# Usage:
#   scripts/rabbit-cluster.sh start          start every node (idempotent), join them, wait
#   scripts/rabbit-cluster.sh stop           stop every node and delete the data
#   scripts/rabbit-cluster.sh kill I         kill -9 node I's Erlang VM (a crash)
#   scripts/rabbit-cluster.sh restart I      start node I again (it rejoins), wait
#   scripts/rabbit-cluster.sh stop-node I    stop node I cleanly
#   scripts/rabbit-cluster.sh urls           the AMQP URLs, comma-separated
#   scripts/rabbit-cluster.sh status         cluster status as node 1 sees it
#
# Environment (defaults in brackets):
#   RC_PREFIX [rc]        node names <prefix>I@localhost
#   RC_NODES [3]          nodes in the cluster
#   RC_AMQP_BASE [5701]   node I listens for AMQP on RC_AMQP_BASE + I - 1
#   RC_DIST_BASE [25701]  … and for Erlang distribution on RC_DIST_BASE + I - 1
#   RC_DIR [/tmp/rolecall-rabbit-<prefix>]   data, logs, configuration
set -euo pipefail

PREFIX="${RC_PREFIX:-rc}"
NODES="${RC_NODES:-3}"
AMQP_BASE="${RC_AMQP_BASE:-5701}"
DIST_BASE="${RC_DIST_BASE:-25701}"
DIR="${RC_DIR:-${TMPDIR:-/tmp}/rolecall-rabbit-$PREFIX}"
export PATH="$PATH:/usr/sbin:/sbin"
# The Debian wrappers run the server and the CLI as the `rabbitmq` user, so
# every node (and rabbitmqctl) reads that user's Erlang cookie: one cookie
# for the whole cluster, the same as the default node's.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -E"; fi

log() { printf '[rabbit-cluster] %s\n' "$*" >&2; }
node() { printf '%s%s@localhost' "$PREFIX" "$1"; }
amqp_port() { echo $((AMQP_BASE + $1 - 1)); }
dist_port() { echo $((DIST_BASE + $1 - 1)); }
ctl() { local i="$1"; shift; $SUDO rabbitmqctl -n "$(node "$i")" "$@"; }

node_env() {
  local i="$1" base="$DIR/$(node "$1")"
  echo RABBITMQ_NODENAME="$(node "$i")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$i")" \
    RABBITMQ_DIST_PORT="$(dist_port "$i")" \
    RABBITMQ_MNESIA_BASE="$base/mnesia" \
    RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_PID_FILE="$base/pid" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    `# One scheduler and no busy-waiting: three extra VMs share two cores.` \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="'+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none'"
}

running() { ctl "$1" -q await_startup --timeout 1 >/dev/null 2>&1; }

start_node() {
  local i="$1" base="$DIR/$(node "$1")"
  if running "$i"; then return 0; fi
  # $SUDO throughout: after a first start the folder belongs to `rabbitmq`.
  $SUDO mkdir -p "$base/mnesia" "$base/log"
  $SUDO tee "$base/rabbitmq.conf" >/dev/null <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$i")
loopback_users = none
vm_memory_high_watermark.absolute = 512MiB
disk_free_limit.absolute = 50MiB
CONF
  # No plugins (no management): less memory, faster start.
  echo '[].' | $SUDO tee "$base/enabled_plugins" >/dev/null
  # The Debian wrapper runs the node as `rabbitmq`: it must own its files.
  if id rabbitmq >/dev/null 2>&1; then $SUDO chown -R rabbitmq:rabbitmq "$DIR"; fi
  log "starting $(node "$i") (AMQP 127.0.0.1:$(amqp_port "$i"), dist $(dist_port "$i"))"
  eval "$SUDO env $(node_env "$i") rabbitmq-server -detached" >/dev/null 2>&1
}

wait_node() {
  local i="$1" deadline=$((SECONDS + 120))
  until ctl "$i" -q await_startup --timeout 5 >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$(node "$i") did not start; see $DIR/$(node "$i")/log"; exit 1
    fi
    sleep 1
  done
}

joined() {
  # Node 1 appears among the running nodes node I knows.
  ctl "$1" -q cluster_status --formatter json 2>/dev/null | grep -q "\"$(node 1)\""
}

join_node() {
  local i="$1"
  if joined "$i"; then return 0; fi
  log "joining $(node "$i") to $(node 1)"
  ctl "$i" -q stop_app >/dev/null
  # 3.10 prints harmless "tracked connection table" errors while joining.
  local out
  if ! out="$(ctl "$i" -q join_cluster "$(node 1)" 2>&1)"; then printf '%s\n' "$out" >&2; exit 1; fi
  ctl "$i" -q start_app >/dev/null
}

pid_of() {
  local file="$DIR/$(node "$1")/pid"
  [ -s "$file" ] && cat "$file"
}

check_index() {
  case "${1:-}" in
    ''|*[!0-9]*) log "give a node number between 1 and $NODES"; exit 2 ;;
  esac
  if [ "$1" -lt 1 ] || [ "$1" -gt "$NODES" ]; then log "no node $1 (RC_NODES=$NODES)"; exit 2; fi
}

cmd="${1:-}"
case "$cmd" in
  start)
    $SUDO mkdir -p "$DIR"
    for i in $(seq 1 "$NODES"); do start_node "$i"; done
    for i in $(seq 1 "$NODES"); do wait_node "$i"; done
    for i in $(seq 2 "$NODES"); do join_node "$i"; done
    log "running: $("$0" urls)"
    ;;
  stop)
    for i in $(seq "$NODES" -1 1); do
      if running "$i"; then ctl "$i" -q stop >/dev/null 2>&1 || true; fi
      pid="$(pid_of "$i" || true)"
      if [ -n "$pid" ] && $SUDO kill -0 "$pid" 2>/dev/null; then $SUDO kill -9 "$pid" || true; fi
    done
    $SUDO rm -rf "$DIR"
    ;;
  kill)
    check_index "${2:-}"
    pid="$(pid_of "$2" || true)"
    if [ -z "$pid" ] || ! $SUDO kill -0 "$pid" 2>/dev/null; then log "$(node "$2") is not running"; exit 1; fi
    log "kill -9 $(node "$2") (pid $pid)"
    $SUDO kill -9 "$pid"
    ;;
  restart)
    check_index "${2:-}"
    start_node "$2"
    wait_node "$2"
    ;;
  stop-node)
    check_index "${2:-}"
    ctl "$2" -q stop >/dev/null
    ;;
  urls)
    urls=()
    for i in $(seq 1 "$NODES"); do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2f"); done
    (IFS=,; echo "${urls[*]}")
    ;;
  status)
    ctl 1 cluster_status
    ;;
  *)
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
