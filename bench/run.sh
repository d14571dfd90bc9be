#!/usr/bin/env bash
# Runs the fleet-wide rate-limit benchmark (Rolecall, dramatiq, Celery) and
# prints its table; the table and the worker logs also go to bench/logs/<id>/.
# Peers are installed in a throwaway virtualenv by bench/peers/run_peer.sh.
# Pass rolecall-bench flags through (rolecall-bench --help), e.g. a quick run:
#   bench/run.sh --scenarios sliding --rates 50 --peers ""
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo build --release --locked --quiet -p rolecall-worker -p rolecall-bench
exec "${CARGO_TARGET_DIR:-target}/release/rolecall-bench" "$@"
