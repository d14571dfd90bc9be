#!/usr/bin/env bash
# Installs Debian packages for the project's scripts, the one way they all
# do it: without starting any service the packages ship (a policy-rc.d that
# refuses, for the time of the install: the scripts start servers
# themselves, on loopback), from the package lists as they are, refreshed
# only when that fails. Fails, naming the packages, when
# ROLECALL_SKIP_INSTALL=1.
#   bash scripts/apt-install.sh prometheus
set -euo pipefail
[ $# -gt 0 ] || exit 0
if [ "${ROLECALL_SKIP_INSTALL:-0}" = "1" ]; then
  echo "missing: $* (and ROLECALL_SKIP_INSTALL=1)" >&2; exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"; created_policy=1
fi
restore() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap restore EXIT
install() { $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
install "$@" 2>/dev/null || { $SUDO apt-get update -qq && install "$@"; } \
  || { echo "apt-get install $* failed" >&2; exit 1; }
