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

if ! command -v prometheus >/dev/null 2>&1; then
  log "installing prometheus from Debian packages"
  # The package would start a server on 0.0.0.0:9090: the test starts its own.
  bash "$(dirname "$0")/apt-install.sh" prometheus
fi
command -v prometheus
