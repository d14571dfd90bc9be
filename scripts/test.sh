#!/usr/bin/env bash
# Runs the whole test suite against real RabbitMQ and Redis.
# Installs and starts both (scripts/services.sh) when needed, builds once,
# then runs every crate's tests, end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
# A real three-master Redis Cluster for the cluster tests (tests/it/redis_cluster.rs).
bash scripts/redis-cluster.sh
# A 3-node RabbitMQ cluster on 127.0.0.1:5701-5703 for the quorum-queue
# failover test (tests/it/rabbit_cluster.rs); the test starts it too if
# needed, but starting it here keeps its ~30 s out of the test's time.
bash scripts/rabbit-cluster.sh start

# A real third-party SCIM 2.0 server for the SCIM connector's tests, in a
# throwaway virtualenv (reused while it has the pinned version).
venv="${ROLECALL_TEST_VENV:-${TMPDIR:-/tmp}/rolecall-test-venv}"
if ! "$venv/bin/pip" show scim2-server 2>/dev/null | grep -q '^Version: 0.8.3$'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'scim2-server==0.8.3'
fi
export ROLECALL_SCIM2_SERVER="$venv/bin/scim2-server"
# A real SMTP server for the notifier's tests (tests/it/notifier.rs): each
# test starts `python -m aiosmtpd` on a free loopback port, in the same venv.
if ! "$venv/bin/pip" show aiosmtpd 2>/dev/null | grep -q '^Version: 1.4.6$'; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6'
fi
export ROLECALL_TEST_PYTHON="$venv/bin/python"

# A real Prometheus server for the test that lets it scrape a worker
# (tests/it/telemetry.rs); the test starts its own on loopback.
ROLECALL_PROMETHEUS="$(bash scripts/prometheus.sh)"
export ROLECALL_PROMETHEUS

# The end-to-end tests run the binaries (bad-config checks): build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# Tests that measure rates against strict vendor windows run alone, after
# the rest: a fleet of other tests' processes on the same cores bunches
# requests and the measurement would be of the machine, not the limiter.
cargo test -p rolecall-tests --test it --locked -- --ignored --test-threads=1

# The deployment files (Helm chart, kustomize, Dockerfile): real helm,
# Kubernetes schemas, checkov, hadolint; tools cached (scripts/deploy-check.sh).
bash scripts/deploy-check.sh
# The container image: built with podman from a base made of Debian
# packages, run read-only as uid 65532 on the host network through a small
# run against the servers above (deploy/image-check.sh). The debug binaries
# built above are packed: a release build takes many minutes on 2 cores.
ROLECALL_IMAGE_PROFILE=debug bash deploy/image-check.sh
