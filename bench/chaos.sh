#!/usr/bin/env bash
# Runs the chaos scenarios against a real fleet and prints the report
# (Markdown) to stdout; worker logs go to bench/logs/chaos/<scenario>/.
# Starts the shared RabbitMQ and Redis when needed; the scenarios start
# their private RabbitMQ nodes (scripts/rabbit-cluster.sh, ports 5721-5723
# and 5731), a Redis server and a six-node Redis Cluster (free ports, never
# the shared 7101-7106) themselves and stop them afterwards.
# Pass rolecall-chaos flags through (rolecall-chaos --help), e.g.
#   bench/chaos.sh --scenarios worker-kill,credential
# Debug build on purpose: chaos measures correctness and recovery, not speed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo build --locked --quiet -p rolecall-worker -p rolecall-scheduler -p rolecall-bench --bin rolecall-worker --bin rolecall-scheduler --bin rolecall-chaos
exec "${CARGO_TARGET_DIR:-target}/debug/rolecall-chaos" "$@"
