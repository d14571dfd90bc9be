#!/usr/bin/env bash
# Starts a real Redis Cluster on 127.0.0.1 for the tests: three masters
# (ports 7101-7103) and one replica each (7104-7106), configured as
# production should be (append-only file fsynced every second, no eviction).
# Safe to run again: a running cluster is left alone, stopped nodes are
# started again from their data (and rejoin), and the cluster is created
# only when its nodes have never met.
#
# Environment:
#   ROLECALL_REDIS_CLUSTER_DIR    where nodes keep their data (default: a folder in $TMPDIR)
#   ROLECALL_REDIS_CLUSTER_PORT   first port (default 7101; six consecutive ports are used)
set -euo pipefail

log() { printf '[redis-cluster] %s\n' "$*" >&2; }

command -v redis-server >/dev/null 2>&1 || { log "redis-server is missing: run scripts/services.sh"; exit 1; }

first="${ROLECALL_REDIS_CLUSTER_PORT:-7101}"
dir="${ROLECALL_REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/rolecall-redis-cluster}"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((first + i))); done

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
cluster_ok() { cli "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

if cluster_ok "$first" && redis-cli --cluster check "127.0.0.1:$first" >/dev/null 2>&1; then
  log "the cluster already answers on 127.0.0.1:$first"
  exit 0
fi

for port in "${ports[@]}"; do
  if cli "$port" ping >/dev/null 2>&1; then continue; fi
  mkdir -p "$dir/$port"
  log "starting node 127.0.0.1:$port"
  # Production settings (docs/architecture.md): every acknowledged write is
  # in the append-only file within a second, and a full Redis refuses
  # writes instead of evicting limiter state or done markers.
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
    --dir "$dir/$port" --logfile "$dir/$port/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync everysec --save "" \
    --maxmemory-policy noeviction --repl-diskless-sync-delay 0
done

deadline=$((SECONDS + 60))
for port in "${ports[@]}"; do
  until cli "$port" ping >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "node $port did not answer (see $dir/$port/redis.log)"; exit 1; }
    sleep 0.2
  done
done

# Nodes that have never met know only themselves: create the cluster.
if cli "$first" cluster info | grep -q '^cluster_known_nodes:1\b'; then
  log "creating the cluster: 3 masters, 1 replica each"
  nodes=()
  for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
fi

until cluster_ok "$first" && redis-cli --cluster check "127.0.0.1:$first" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { log "the cluster did not reach cluster_state:ok"; exit 1; }
  sleep 0.5
done
log "the cluster is up on 127.0.0.1:${ports[0]}-${ports[5]}"
