#!/usr/bin/env bash
# Runs the Rolecall lookup workload on a peer job system and prints ONE line of
# JSON on stdout; everything else goes to stderr.
#
#   run_peer.sh <dramatiq|celery> --sim-url URL --api-key KEY --rate R \
#       --emails FILE [--workers 4] [--namespace NS] [more options: --help]
#
# JSON: {"peer":..,"jobs":N,"completed":N,"failed":N,"retried_429":N,"duration_s":F, ...extras}
#
# The first run creates a virtualenv at ${ROLECALL_BENCH_VENV:-/tmp/rolecall-bench-venv}
# with requirements.txt installed (reinstalled only when requirements.txt changes).
# Needs RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379), see
# scripts/services.sh; override with --amqp-url / --redis-url.
#
# Exit status: 0 ok; 2 setup failure (venv, arguments, Redis/RabbitMQ,
# workers not booting); 3 hard timeout (JSON still printed, status "timeout");
# 4 aborted (workers died / interrupted). Worker processes are always stopped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ROLECALL_BENCH_VENV:-/tmp/rolecall-bench-venv}"
PYTHON_BOOT="${ROLECALL_BENCH_PYTHON:-python3}"

log() { printf '[run_peer] %s\n' "$*" >&2; }
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

if [ $# -lt 1 ]; then usage; exit 2; fi
peer="$1"; shift
case "$peer" in
  dramatiq|celery) ;;
  -h|--help) usage; exit 0 ;;
  *) log "unknown peer '$peer' (want dramatiq or celery)"; usage; exit 2 ;;
esac

for a in "$@"; do
  case "$a" in -h|--help) want_help=1 ;; esac
done

# ---------------------------------------------------------------- virtualenv
setup_venv() {
  local req="$HERE/requirements.txt" stamp want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  stamp="$VENV/.rolecall-requirements.sha256"
  mkdir -p "$(dirname "$VENV")"
  # Serialize concurrent runs that share the venv.
  exec 9>"$VENV.lock"
  flock 9
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    flock -u 9; exec 9>&-
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON_BOOT" -m venv "$VENV" >&2
  fi
  log "installing $req into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >&2
  # Import check, so a broken install is a setup failure here, not later.
  "$VENV/bin/python" -c 'import dramatiq, celery, redis, requests, pika, kombu' >&2
  echo "$want" >"$stamp"
  flock -u 9; exec 9>&-
}

if ! setup_venv; then
  log "virtualenv setup failed"
  exit 2
fi

if [ "${want_help:-0}" = 1 ]; then
  "$VENV/bin/python" "$HERE/${peer}_bench.py" --help >&2
  exit 0
fi

# ---------------------------------------------------------------- run + trap
workdir="$(mktemp -d "${TMPDIR:-/tmp}/rolecall-peer.XXXXXX")"
orch_pid=""

alive_group() { kill -0 -- "-$1" 2>/dev/null; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # 1) Ask the orchestrator to stop (it stops its workers and cleans the
  #    namespace), give it time, then kill it.
  if [ -n "$orch_pid" ] && kill -0 "$orch_pid" 2>/dev/null; then
    kill -TERM "$orch_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$orch_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$orch_pid" 2>/dev/null || true
  fi
  # 2) Sweep every worker process group it recorded (pgid == pid).
  if [ -f "$workdir/pids" ]; then
    local pg left
    while read -r pg; do
      [ -n "$pg" ] && alive_group "$pg" && kill -TERM -- "-$pg" 2>/dev/null || true
    done <"$workdir/pids"
    for _ in $(seq 1 50); do
      left=0
      while read -r pg; do
        [ -n "$pg" ] && alive_group "$pg" && left=1
      done <"$workdir/pids"
      [ "$left" = 0 ] && break
      sleep 0.1
    done
    while read -r pg; do
      if [ -n "$pg" ] && alive_group "$pg"; then
        log "killing leftover worker group $pg"
        kill -KILL -- "-$pg" 2>/dev/null || true
      fi
    done <"$workdir/pids"
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

: >"$workdir/pids"
# In the background so that signals reach our trap while we wait.
"$VENV/bin/python" "$HERE/${peer}_bench.py" "$@" --pidfile "$workdir/pids" \
  >"$workdir/out" &
orch_pid=$!
rc=0
wait "$orch_pid" || rc=$?
orch_pid=""

line="$(tail -n 1 "$workdir/out" 2>/dev/null || true)"
if [ -n "$line" ] && printf '%s' "$line" | "$VENV/bin/python" -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
  printf '%s\n' "$line"
elif [ "$rc" = 0 ]; then
  log "peer produced no JSON result"
  rc=4
fi
exit "$rc"
