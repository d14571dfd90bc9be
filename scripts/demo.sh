#!/usr/bin/env bash
# The demo fleet: RabbitMQ and Redis, a simulated Lever account with 5,000
# users, two worker processes and the scheduler. Shows progress while the
# fleet works and ends with a summary table.
#
#   scripts/demo.sh                 # 5,000 users
#   DEMO_USERS=20000 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

USERS="${DEMO_USERS:-5000}"
# The simulated vendor's limit (Lever's shape: a token bucket). The fleet is
# configured at exactly that limit, as a user copies it from the vendor's
# documentation: it uses it whole and never exceeds it, without headroom.
SIM_RATE="${DEMO_SIM_RATE:-100}"
SIM_BURST="${DEMO_SIM_BURST:-20}"
FLEET_RATE="${DEMO_FLEET_RATE:-$SIM_RATE}"
FLEET_BURST="${DEMO_FLEET_BURST:-$SIM_BURST}"
WORKERS="${DEMO_WORKERS:-2}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bash scripts/services.sh

say "Building"
cargo build --workspace --bins --locked --quiet
bin="$root/target/debug"

demo="$root/.demo"
mkdir -p "$demo"
rm -f "$demo"/*.log "$demo"/sim.port

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# The demo's API key for the simulated vendor; workers read it by name
# (credential "lever-demo" -> ROLECALL_SECRET_LEVER_DEMO), never from config.
export SIM_LEVER_API_KEY="demo-$RANDOM$RANDOM"
export ROLECALL_SECRET_LEVER_DEMO="$SIM_LEVER_API_KEY"

say "Starting the simulated Lever API ($USERS users, $SIM_RATE requests/s, bursts of $SIM_BURST)"
"$bin/rolecall-sim" serve --users "$USERS" --seed 7 --rate "$SIM_RATE" --burst "$SIM_BURST" \
  --latency-ms 20 --port-file "$demo/sim.port" >"$demo/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$demo/sim.port" ] && break; sleep 0.1; done
[ -s "$demo/sim.port" ] || { echo "the sim did not start; see $demo/sim.log" >&2; exit 1; }
port=$(cat "$demo/sim.port")

cat >"$demo/rolecall.toml" <<TOML
namespace = "demo"
[telemetry]
log_level = "info"
# Several workers on one machine: each serves /healthz, /readyz and
# /metrics on a free port of its own (its log names it).
http_listen = "127.0.0.1:0"
[saas.lever_demo]
connector = "lever"
base_url = "http://127.0.0.1:$port"
credential = "lever-demo"
deactivate_missing = true
# The whole fleet shares this limit (a GCRA in Redis), however many workers run.
rate = { per_second = $FLEET_RATE, burst = $FLEET_BURST, max_in_flight = 16 }
default_role = { role = "unknown", seat_price = 0.0 }
[saas.lever_demo.roles]
"super admin" = { role = "admin", seat_price = 45.0 }
"admin" = { role = "admin", seat_price = 45.0 }
"team member" = { role = "member", seat_price = 30.0 }
"limited team member" = { role = "member", seat_price = 15.0 }
"interviewer" = { role = "viewer", seat_price = 0.0 }
TOML
export ROLECALL_CONFIG="$demo/rolecall.toml"

say "Writing the inventory (5% of its users are gone from the vendor, 2% deactivated)"
"$bin/rolecall-sim" inventory --users "$USERS" --seed 7 --saas lever_demo \
  --missing-ratio 0.05 --inactive-ratio 0.02 --out "$demo/inventory.csv"

say "Starting $WORKERS workers"
for i in $(seq "$WORKERS"); do
  "$bin/rolecall-worker" >"$demo/worker-$i.log" 2>&1 &
  pids+=($!)
done

say "Publishing one job per active user and following the run"
"$bin/rolecall-scheduler" run-once --inventory "$demo/inventory.csv" --wait --wait-timeout 1800

say "What the simulated vendor saw"
python3 - "$port" "$SIM_RATE" "$SIM_BURST" <<'PY'
import json, sys, urllib.request
port, rate, burst = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats"))
print(f"| requests | 429 answers | peak requests in 1 s | vendor limit (rate + burst) |")
print(f"|----------|-------------|----------------------|-----------------------------|")
limit = f"{rate:g}/s + {burst}"
print(f"| {s['requests']:8} | {s['throttled']:11} | {s['peak_1s']:20} | {limit:<27} |")
PY
say "The fleet's limits now"
"$bin/rolecall-worker" limits show
say "Logs: $demo/*.log"
