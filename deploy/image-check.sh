#!/usr/bin/env bash
# Builds the Rolecall image from deploy/Dockerfile and runs it, offline:
#   1. a minimal base root filesystem from Debian packages (libc6,
#      libgcc-s1, ca-certificates: `apt-get download` + `dpkg -x`, a
#      nonroot user 65532, no shell), imported with `podman import`;
#   2. `podman build` with BASE_IMAGE/BUILDER_IMAGE = that base and
#      BINARIES=prebuilt (release binaries built here, copied in: no Rust
#      image is at hand offline; users build with the default rust: image);
#   3. the containers on the host network as uid 65532 with a read-only root
#      filesystem and no capabilities: the worker and the notifier (ready on
#      /readyz), and `rolecall-scheduler run-once --wait`, which publishes a
#      small run against the host's RabbitMQ and Redis and the simulated
#      Lever API and must see it finish; then the worker drains on SIGTERM;
#   4. prints the image size.
# Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379
# (scripts/services.sh). scripts/test.sh runs it with ROLECALL_IMAGE_PROFILE=debug.
#
#   deploy/image-check.sh                              # release binaries, 300 users
#   ROLECALL_IMAGE_PROFILE=debug deploy/image-check.sh # what scripts/test.sh runs
#   ROLECALL_IMAGE_USERS=2000 deploy/image-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$SECONDS
USERS="${ROLECALL_IMAGE_USERS:-300}"
IMAGE="${ROLECALL_IMAGE:-localhost/rolecall:check}"

die() { printf '\033[1;31mimage-check: FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
say() { printf '\033[1m==> image-check: %s\033[0m\n' "$*" >&2; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/rolecall/image"
mkdir -p "$cache"

# --- podman (Debian's, with runc and cgroupfs) ------------------------------
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  say "installing podman and runc"
  bash scripts/apt-install.sh podman runc || die "apt-get install podman runc failed"
fi
cat >"$cache/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
export CONTAINERS_CONF="$cache/containers.conf"
podman() { command podman --cgroup-manager=cgroupfs --runtime runc "$@"; }

# --- 1. the base image from Debian packages ---------------------------------
debs="$cache/debs"
rm -rf "$debs" && mkdir -p "$debs"
(cd "$debs" && apt-get download libc6 libgcc-s1 ca-certificates >/dev/null 2>&1) \
  || { apt-get update -qq >/dev/null && (cd "$debs" && apt-get download libc6 libgcc-s1 ca-certificates >/dev/null 2>&1); } \
  || die "apt-get download libc6 libgcc-s1 ca-certificates failed"
base_tag="localhost/rolecall-base:$( (ls "$debs"; sha256sum deploy/image-check.sh) | sha256sum | cut -c1-12)"
if ! podman image exists "$base_tag"; then
  say "building the base root filesystem from $(cd "$debs" && echo *.deb)"
  rootfs=$(mktemp -d)
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$rootfs"; done
  # Nothing a service needs at run time: docs, locales, ldd/iconv/etc.
  # (ldd is a shell script; the image has no shell), the gconv modules.
  rm -rf "${rootfs:?}"/usr/share/doc "${rootfs:?}"/usr/share/man "${rootfs:?}"/usr/share/locale \
    "${rootfs:?}"/usr/share/lintian "${rootfs:?}"/usr/bin "${rootfs:?}"/usr/sbin "${rootfs:?}"/sbin \
    "${rootfs:?}"/usr/lib/x86_64-linux-gnu/gconv "${rootfs:?}"/usr/libexec
  mkdir -p "$rootfs"/etc/ssl/certs "$rootfs"/tmp "$rootfs"/home/nonroot "$rootfs"/etc/rolecall
  cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs"/etc/ssl/certs/ca-certificates.crt
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs"/etc/passwd
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs"/etc/group
  printf 'hosts: files dns\n' >"$rootfs"/etc/nsswitch.conf
  chmod 1777 "$rootfs"/tmp
  chown 65532:65532 "$rootfs"/home/nonroot && chmod 700 "$rootfs"/home/nonroot
  tar --numeric-owner -C "$rootfs" -cf "$cache/base.tar" .
  rm -rf "$rootfs"
  podman import --quiet "$cache/base.tar" "$base_tag" >/dev/null || die "podman import of the base failed"
  rm -f "$cache/base.tar"
fi

# --- 2. the image -------------------------------------------------------------
# ROLECALL_IMAGE_PROFILE=debug packs the debug binaries (scripts/test.sh has
# built them already; a release build takes many minutes on 2 cores): the
# same image, only bigger. The size printed is the release one by default.
profile="${ROLECALL_IMAGE_PROFILE:-release}"
# debug: exactly scripts/test.sh's build, so that it is a no-op there (a
# different package set could unify features differently and rebuild).
case "$profile" in
  release) cargo_flags=(--release -p rolecall-worker -p rolecall-scheduler -p rolecall-notifier -p rolecall-sim) ;;
  debug) cargo_flags=(--workspace) ;;
  *) die "ROLECALL_IMAGE_PROFILE must be release or debug, not $profile" ;;
esac
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bins="${ROLECALL_IMAGE_BINARIES:-$target_dir/$profile}"
if [ -z "${ROLECALL_IMAGE_BINARIES:-}" ]; then
  say "cargo build ($profile ${cargo_flags[*]})"
  nice -n 19 cargo build "${cargo_flags[@]}" --bins --locked --quiet \
    || die "cargo build ($profile) failed"
fi
ctx=$(mktemp -d)
work=$(mktemp -d)
containers=()
sim_pid=""
hook_pid=""
cleanup() {
  if [ -n "$hook_pid" ]; then kill "$hook_pid" 2>/dev/null || true; fi
  for c in "${containers[@]}"; do command podman rm -f "$c" >/dev/null 2>&1 || true; done
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; fi
  rm -rf "$ctx" "$work"
}
trap cleanup EXIT
mkdir -p "$ctx/prebuilt"
for b in rolecall-worker rolecall-scheduler rolecall-notifier; do
  [ -x "$bins/$b" ] || die "no $bins/$b (set ROLECALL_IMAGE_BINARIES or let this script build)"
  strip -o "$ctx/prebuilt/$b" "$bins/$b"
done
say "podman build ($IMAGE from $base_tag)"
podman build --quiet -f deploy/Dockerfile \
  --build-arg BASE_IMAGE="$base_tag" --build-arg BUILDER_IMAGE="$base_tag" \
  --build-arg BINARIES=prebuilt -t "$IMAGE" "$ctx" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; die "podman build"; }
# Earlier checks' images: older bases, untagged builds of this image.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/rolecall-base:' | grep -vxF "$base_tag"); do
  podman rmi "$old" >/dev/null 2>&1 || true
done
podman image prune -f --filter label=org.opencontainers.image.title=rolecall >/dev/null 2>&1 || true
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = "65532:65532" ] \
  || die "the image does not run as 65532:65532"
if podman run --rm --network none --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
  die "the image has a shell"
fi

# --- 3. run it ----------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ns="imagecheck$$"
export SIM_LEVER_API_KEY="image-check-$RANDOM$RANDOM"
say "starting the simulated Lever API ($USERS users)"
mkdir -p "$work/etc" "$work/data"
"$bins/rolecall-sim" serve --users "$USERS" --seed 11 --rate 200 --burst 20 --latency-ms 5 \
  --port-file "$work/sim.port" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do [ -s "$work/sim.port" ] && break; sleep 0.1; done
[ -s "$work/sim.port" ] || { cat "$work/sim.log" >&2; die "the sim did not start"; }
sim_port=$(cat "$work/sim.port")
# A webhook receiver for the notifier (the run's digest lands here).
hook_port=$(free_port)
python3 - "$hook_port" "$work/hook.log" >"$work/hook.out" 2>&1 <<'PY' &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
hook_pid=$!
"$bins/rolecall-sim" inventory --users "$USERS" --seed 11 --saas lever_img \
  --missing-ratio 0.05 --inactive-ratio 0.02 --out "$work/data/inventory.csv"
cat >"$work/etc/rolecall.toml" <<TOML
namespace = "$ns"
[amqp]
queue_expires_ms = 120000
[redis]
done_ttl_s = 600
[telemetry]
log_format = "json"
[notifier]
group_window = "1s"
[notifier.channels.hook]
type = "webhook"
url_credential = "hook"
[notifier.routes]
default = ["hook"]
[saas.lever_img]
connector = "lever"
base_url = "http://127.0.0.1:$sim_port"
credential = "lever-img"
deactivate_missing = true
rate = { per_second = 150, burst = 10, max_in_flight = 16 }
default_role = { role = "unknown", seat_price = 0.0 }
TOML
chmod -R a+rX "$work/etc" "$work/data"

run_flags=(--network host --read-only --user 65532:65532 --cap-drop ALL
  --security-opt no-new-privileges
  -v "$work/etc:/etc/rolecall:ro" -v "$work/data:/data:ro"
  -e ROLECALL_CONFIG=/etc/rolecall/rolecall.toml
  -e ROLECALL_SECRET_LEVER_IMG="$SIM_LEVER_API_KEY"
  -e ROLECALL_SECRET_HOOK="http://127.0.0.1:$hook_port/hook")
wait_ready() { # name port
  for _ in $(seq 150); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/readyz")" = 200 ]; then return 0; fi
    sleep 0.2
  done
  podman logs "$1" >&2 || true
  die "$1 did not become ready on 127.0.0.1:$2/readyz"
}
wport=$(free_port)
say "worker container (read-only root, uid 65532, host network, ops on $wport)"
podman run -d --name "rc-worker-$ns" "${run_flags[@]}" \
  -e ROLECALL__TELEMETRY__HTTP_LISTEN="127.0.0.1:$wport" "$IMAGE" >/dev/null
containers+=("rc-worker-$ns")
wait_ready "rc-worker-$ns" "$wport"
nport=$(free_port)
say "notifier container (ops on $nport)"
podman run -d --name "rc-notifier-$ns" "${run_flags[@]}" \
  -e ROLECALL__TELEMETRY__HTTP_LISTEN="127.0.0.1:$nport" \
  --entrypoint /usr/local/bin/rolecall-notifier "$IMAGE" >/dev/null
containers+=("rc-notifier-$ns")
wait_ready "rc-notifier-$ns" "$nport"
[ "$(podman inspect --format '{{.Config.User}}' "rc-worker-$ns")" = "65532:65532" ] || die "the worker does not run as 65532"
say "scheduler container: run-once --wait ($USERS users)"
containers+=("rc-scheduler-$ns")
podman run --name "rc-scheduler-$ns" "${run_flags[@]}" \
  --entrypoint /usr/local/bin/rolecall-scheduler "$IMAGE" \
  run-once --inventory /data/inventory.csv --wait --wait-timeout 300 --no-progress \
  >"$work/scheduler.out" 2>"$work/scheduler.err" \
  || { cat "$work/scheduler.out" "$work/scheduler.err" >&2; podman logs --tail 30 "rc-worker-$ns" >&2; die "the run did not finish"; }
cat "$work/scheduler.out"
grep -Eq 'published [1-9][0-9]* jobs' "$work/scheduler.out" || die "the scheduler published no jobs"
curl -sf -o "$work/metrics.txt" "http://127.0.0.1:$wport/metrics" || die "the worker's /metrics did not answer"
grep -q '^rolecall' "$work/metrics.txt" || die "the worker's /metrics has no rolecall series"
say "the notifier's digest of the run reaches the webhook"
run_id=$(sed -n 's/^run \([^:]*\): published.*/\1/p' "$work/scheduler.out" | head -n1)
for _ in $(seq 150); do grep -qF "$run_id" "$work/hook.log" 2>/dev/null && break; sleep 0.2; done
grep -qF "$run_id" "$work/hook.log" 2>/dev/null \
  || { podman logs --tail 30 "rc-notifier-$ns" >&2; die "no webhook message names run $run_id"; }
head -c 600 "$work/hook.log"; echo
say "SIGTERM: the worker drains and exits 0"
podman stop -t 40 "rc-worker-$ns" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "rc-worker-$ns")
[ "$code" = 0 ] || { podman logs --tail 20 "rc-worker-$ns" >&2; die "the worker exited $code after SIGTERM"; }

# --- 4. size ------------------------------------------------------------------
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
printf 'image-check: %s (%s binaries) is %s bytes (%.1f MiB); base %s; the run of %s users finished (%d s)\n' \
  "$IMAGE" "$profile" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" "$base_tag" "$USERS" "$((SECONDS - start))"
