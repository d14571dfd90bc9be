#!/usr/bin/env bash
# Publishing benchmark (issue 9 item 6): rolecall-scheduler run-once on
# CSV and JSON Lines inventories against the broker's ceiling (a plain lapin
# loop) and Celery / dramatiq publishing the same jobs; prints a Markdown
# table. Pass rolecall-publish-bench flags through, e.g. a smaller run:
#   bench/publish.sh --users 200000 --peer-jobs 20000
# The peers' virtualenv is created by bench/peers/run_peer.sh on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash bench/peers/run_peer.sh celery --help >/dev/null 2>&1 || true
cargo build --release --locked --quiet -p rolecall-scheduler -p rolecall-bench
exec "${CARGO_TARGET_DIR:-target}/release/rolecall-publish-bench" "$@"
