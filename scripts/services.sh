#!/usr/bin/env bash
# Installs (only when missing) and starts RabbitMQ and Redis on 127.0.0.1, then
# waits until both answer. Safe to run again: running servers are left alone.
#
# Environment:
#   ROLECALL_SKIP_INSTALL=1   never call apt-get (fail instead when missing)
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The TLS tests make their certificates with openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# rabbitmq-server lives in /usr/sbin, which may not be on a non-root PATH.
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  missing+=(rabbitmq-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} from Debian packages"
  # Their services are not started with the packages' (all-interfaces)
  # configuration: we start them ourselves on loopback below.
  bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"

REDIS_PORT="${ROLECALL_REDIS_PORT:-6379}"
if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "redis already answers on 127.0.0.1:$REDIS_PORT"
else
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  # No persistence: this instance serves tests and the demo.
  $SUDO redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --save "" --appendonly no --logfile /tmp/rolecall-redis.log --dir /tmp
fi

# RabbitMQ: a node named rabbit@localhost listening on loopback only.
export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="${ROLECALL_AMQP_PORT:-5672}"
export RABBITMQ_DIST_PORT="${RABBITMQ_DIST_PORT:-25672}"
export ERL_EPMD_ADDRESS=127.0.0.1
if $SUDO env RABBITMQ_NODENAME="$RABBITMQ_NODENAME" rabbitmqctl -q status >/dev/null 2>&1; then
  log "rabbitmq already running as $RABBITMQ_NODENAME"
else
  log "starting rabbitmq on 127.0.0.1:$RABBITMQ_NODE_PORT"
  $SUDO mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
  $SUDO env RABBITMQ_NODENAME="$RABBITMQ_NODENAME" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$RABBITMQ_NODE_PORT" RABBITMQ_DIST_PORT="$RABBITMQ_DIST_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    rabbitmq-server -detached >/dev/null 2>&1 || true
fi

deadline=$((SECONDS + 120))
until redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { log "redis did not answer in time"; exit 1; }
  sleep 0.5
done
until $SUDO env RABBITMQ_NODENAME="$RABBITMQ_NODENAME" rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 \
  && (exec 3<>"/dev/tcp/127.0.0.1/$RABBITMQ_NODE_PORT") 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { log "rabbitmq did not answer in time (see /var/log/rabbitmq)"; exit 1; }
  sleep 1
done
log "redis and rabbitmq are up"
