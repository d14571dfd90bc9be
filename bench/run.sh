#!/usr/bin/env bash
# Runs the fleet-wide rate-limit benchmark (Rolecall, dramatiq, Celery) and
# prints its table. Peers are installed in a throwaway virtualenv by
# bench/peers/run_peer.sh. Pass rolecall-bench flags through, e.g.
#   bench/run.sh --rates 200 --peers ""
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo build --release --locked --quiet -p rolecall-worker -p rolecall-bench
exec target/release/rolecall-bench "$@"
