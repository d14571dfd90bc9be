#!/usr/bin/env bash
# Installs the Prometheus server (Debian package `prometheus`) when missing,
# for the test that lets a real Prometheus scrape a worker
# (tests/it/telemetry.rs). The test starts its own `prometheus` process on
# loopback with a generated configuration; the package's own service is
# never started (policy-rc.d) and stays off. Prints the binary's path.
#
# Environment:
#   ROLECALL_SKIP_INSTALL=1   never call apt-get (fail instead when missing)
set -euo pipefail

log() { printf '[prometheus] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "${ROLECALL_SKIP_INSTALL:-0}" = "1" ]; then
    log "prometheus is missing (and ROLECALL_SKIP_INSTALL=1)"; exit 1
  fi
  log "installing prometheus from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  # The package would start a server on 0.0.0.0:9090: the test starts its own.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"; created_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
fi
command -v prometheus
