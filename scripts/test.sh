#!/usr/bin/env bash
# Runs the whole test suite against real RabbitMQ and Redis.
# Installs and starts both (scripts/services.sh) when needed, builds once,
# then runs every crate's tests, end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

# The end-to-end tests run the binaries (bad-config checks): build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
