"""Shared plumbing for the peer benchmarks (dramatiq_bench.py, celery_bench.py).

The orchestrator side (argument parsing, worker processes, waiting, the final
JSON line) and the worker side (the Lever call, Redis bookkeeping) live here so
that both peers run the same workload and are measured the same way. Only the
job-system specific parts (actor/task definition, rate limiting, retries,
broker) are in the peer modules.

Conventions:
  * stdout carries exactly one line: the result JSON. Everything else goes to
    stderr (worker processes inherit stderr for both of their streams).
  * Settings reach the worker processes through ROLECALL_PEER_* environment
    variables, because the job systems' CLIs import the peer module themselves.
  * Every queue name and Redis key is derived from the namespace, so concurrent
    or earlier runs never collide; the namespace is cleaned up at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

# Exit codes of the orchestrators (run_peer.sh passes them through).
EXIT_OK = 0
EXIT_SETUP = 2       # bad arguments, unreachable Redis/RabbitMQ, workers never ready
EXIT_TIMEOUT = 3     # hard timeout hit; the JSON line is still printed
EXIT_ABORTED = 4     # workers died or we were interrupted; JSON printed if possible

ENV_PREFIX = "ROLECALL_PEER_"


def log(msg: str) -> None:
    print(f"[peer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """Raised for anything that keeps the benchmark from starting."""


class Interrupted(BaseException):
    """Raised from SIGTERM/SIGINT handlers so `finally` blocks still run."""


# --------------------------------------------------------------------------
# Settings (shared by orchestrator and workers)
# --------------------------------------------------------------------------

@dataclass
class Settings:
    namespace: str
    sim_url: str
    api_key: str
    rate: float
    workers: int
    threads: int
    redis_url: str
    amqp_url: str
    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int
    limiter: str          # dramatiq only: "window" or "bucket"
    bucket_ms: int        # dramatiq only, for limiter == "bucket"
    limiter_mode: str     # dramatiq only: "requeue" (raise, reschedule) or "wait" (sleep for a slot)
    http_timeout_s: float
    prefetch_multiplier: int  # celery only (worker_prefetch_multiplier)
    on_429: str           # celery only: "retry" (task retry with backoff) or "sleep" (sleep, call again)
    sleep_429_ms: int     # celery only, on_429 == "sleep": wait when the vendor names none
    no_event_loop: bool   # celery only: timers in a timer thread instead of kombu's event loop

    FIELDS = (
        "namespace", "sim_url", "api_key", "rate", "workers", "threads", "redis_url",
        "amqp_url", "max_retries", "min_backoff_ms", "max_backoff_ms", "limiter",
        "bucket_ms", "limiter_mode", "http_timeout_s", "prefetch_multiplier", "on_429",
        "sleep_429_ms", "no_event_loop",
    )

    def to_env(self) -> dict:
        return {ENV_PREFIX + f.upper(): str(getattr(self, f)) for f in self.FIELDS}

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        missing = [f for f in cls.FIELDS if ENV_PREFIX + f.upper() not in env]
        if missing:
            raise SetupError(
                "peer module imported without its settings (missing "
                + ", ".join(ENV_PREFIX + m.upper() for m in missing)
                + "); run it through run_peer.sh"
            )
        g = lambda f: env[ENV_PREFIX + f.upper()]  # noqa: E731
        return cls(
            namespace=g("namespace"), sim_url=g("sim_url").rstrip("/"), api_key=g("api_key"),
            rate=float(g("rate")), workers=int(g("workers")), threads=int(g("threads")),
            redis_url=g("redis_url"), amqp_url=g("amqp_url"),
            max_retries=int(g("max_retries")), min_backoff_ms=int(g("min_backoff_ms")),
            max_backoff_ms=int(g("max_backoff_ms")), limiter=g("limiter"),
            bucket_ms=int(g("bucket_ms")), limiter_mode=g("limiter_mode"),
            http_timeout_s=float(g("http_timeout_s")),
            prefetch_multiplier=int(g("prefetch_multiplier")), on_429=g("on_429"),
            sleep_429_ms=int(g("sleep_429_ms")), no_event_loop=g("no_event_loop") == "True",
        )


class Keys:
    """Redis keys of one namespace. All start with `<ns>:` (see `pattern`)."""

    def __init__(self, ns: str):
        self.ns = ns
        self.pattern = f"{ns}:*"
        self.ready = f"{ns}:ready"            # INCR per worker process that booted
        self.done = f"{ns}:done"              # SET of job ids finished OK (found or not found)
        self.failed = f"{ns}:failed"          # SET of job ids that failed for good
        self.not_found = f"{ns}:not_found"    # INCR per lookup answered with empty data
        self.r429 = f"{ns}:r429"              # INCR per 429 received from the vendor
        self.r5xx = f"{ns}:r5xx"              # INCR per 5xx / network error (transient)
        self.deferred = f"{ns}:deferred"      # INCR per client-side rate-limit deferral
        self.limiter = f"{ns}:vendor-limit"   # dramatiq rate limiter key (prefix)


def queue_name(ns: str) -> str:
    return f"{ns}.lookup"


def default_namespace(peer: str) -> str:
    return f"rcbench-{peer}-{os.getpid()}-{int(time.time())}"


# --------------------------------------------------------------------------
# The vendor call (worker side)
# --------------------------------------------------------------------------

class VendorThrottledError(Exception):
    def __init__(self, retry_after: Optional[float]):
        super().__init__(f"vendor answered 429 (Retry-After: {retry_after})")
        self.retry_after = retry_after


class VendorTransientError(Exception):
    """5xx or network failure: worth retrying."""


class VendorPermanentError(Exception):
    """Any other unexpected answer (401, 400, bad JSON): retrying won't help."""


_tls = threading.local()


def _session():
    import requests  # imported lazily: only workers need it

    s = getattr(_tls, "session", None)
    if s is None:
        s = requests.Session()
        _tls.session = s
    return s


def lever_lookup(settings: Settings, email: str) -> bool:
    """One Lever user lookup. Returns True if found, False if not found.

    Raises VendorThrottledError (429), VendorTransientError (5xx, network),
    VendorPermanentError (anything else).
    """
    import requests

    try:
        resp = _session().get(
            f"{settings.sim_url}/v1/users",
            params={"email": email.lower(), "includeDeactivated": "true"},
            auth=(settings.api_key, ""),
            timeout=settings.http_timeout_s,
        )
    except requests.RequestException as e:
        raise VendorTransientError(f"network error: {e}") from e
    if resp.status_code == 200:
        try:
            body = resp.json()
            return bool(body["data"])
        except (ValueError, KeyError, TypeError) as e:
            raise VendorPermanentError(f"bad 200 body: {resp.text[:200]!r}") from e
    if resp.status_code == 429:
        ra = resp.headers.get("Retry-After")
        try:
            retry_after = float(ra) if ra is not None else None
        except ValueError:
            retry_after = None
        raise VendorThrottledError(retry_after)
    if resp.status_code >= 500:
        raise VendorTransientError(f"vendor answered {resp.status_code}")
    raise VendorPermanentError(f"vendor answered {resp.status_code}: {resp.text[:200]!r}")


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


# --------------------------------------------------------------------------
# Orchestrator side
# --------------------------------------------------------------------------

def parse_args(peer: str, argv=None) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(
        prog=f"{peer}_bench.py",
        description=f"Run the Rolecall lookup workload on {peer} and print one JSON line.",
    )
    p.add_argument("--sim-url", required=True, help="base URL of the simulated Lever API")
    p.add_argument("--api-key", default=os.environ.get("SIM_LEVER_API_KEY", "sim-lever-key"))
    p.add_argument("--rate", required=True, type=float, help="vendor limit R, requests/second, fleet-wide")
    p.add_argument("--emails", required=True, help="file with one email per line (or a CSV with an email column)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    p.add_argument("--namespace", default=None, help="prefix for queue names and Redis keys")
    p.add_argument("--timeout", type=float, default=1800.0, help="hard timeout for the run, seconds (default 1800)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="how long workers may take to boot, seconds")
    p.add_argument("--redis-url", default=os.environ.get("ROLECALL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--amqp-url", default=os.environ.get("ROLECALL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
                   help="RabbitMQ URL (pika form; vhost '/' is %%2F)")
    p.add_argument("--max-retries", type=int, default=10,
                   help="retries for vendor failures (429/5xx/network) before a job fails for good (default 10)")
    p.add_argument("--min-backoff-ms", type=int, default=1000, help="retry backoff base (default 1000 ms)")
    p.add_argument("--max-backoff-ms", type=int, default=10000, help="retry backoff cap (default 10000 ms)")
    p.add_argument("--limiter", choices=("window", "bucket"), default="window",
                   help="dramatiq only: WindowRateLimiter(window=1s) or BucketRateLimiter (default window)")
    p.add_argument("--bucket-ms", type=int, default=1000,
                   help="dramatiq only, --limiter bucket: bucket length; the limit is scaled to R*bucket/1000")
    p.add_argument("--limiter-mode", choices=("requeue", "wait"), default="requeue",
                   help="dramatiq only: when the limiter says no, raise RateLimitExceeded and let "
                        "Retries reschedule the message (requeue, dramatiq's default idiom) or sleep "
                        "in the worker thread until the next bucket/second and ask again (wait)")
    p.add_argument("--prefetch-multiplier", type=int, default=4,
                   help="celery only: worker_prefetch_multiplier (default 4, Celery's default)")
    p.add_argument("--on-429", choices=("retry", "sleep"), default="retry",
                   help="celery only: a 429 raises for autoretry_for (retry, with backoff through "
                        "the broker) or the task sleeps and calls the vendor again (sleep)")
    p.add_argument("--sleep-429-ms", type=int, default=1000,
                   help="celery only, --on-429 sleep: how long to sleep when the 429 has no "
                        "Retry-After (default 1000 ms, one vendor window)")
    p.add_argument("--no-event-loop", action="store_true",
                   help="celery only: run the worker without kombu's event loop, so rate-limit "
                        "timers fire from a timer thread (works around the event loop firing at "
                        "most 10 due timers, then sleeping up to 1 s; see README.md)")
    p.add_argument("--http-timeout", type=float, default=10.0, help="per-request HTTP timeout, seconds")
    p.add_argument("--pidfile", default=None, help="(run_peer.sh) file to record worker process-group ids in")
    args = p.parse_args(argv)

    if args.rate <= 0:
        p.error("--rate must be positive")
    if args.workers < 1 or args.threads < 1:
        p.error("--workers and --threads must be >= 1")
    ns = args.namespace or default_namespace(peer)
    if not ns.replace("-", "").replace("_", "").replace(".", "").isalnum():
        p.error("--namespace may only contain letters, digits, '-', '_' and '.'")
    settings = Settings(
        namespace=ns, sim_url=args.sim_url.rstrip("/"), api_key=args.api_key, rate=args.rate,
        workers=args.workers, threads=args.threads, redis_url=args.redis_url, amqp_url=args.amqp_url,
        max_retries=args.max_retries, min_backoff_ms=args.min_backoff_ms, max_backoff_ms=args.max_backoff_ms,
        limiter=args.limiter, bucket_ms=args.bucket_ms, limiter_mode=args.limiter_mode,
        http_timeout_s=args.http_timeout, prefetch_multiplier=args.prefetch_multiplier,
        on_429=args.on_429, sleep_429_ms=args.sleep_429_ms, no_event_loop=args.no_event_loop,
    )
    return args, settings


def read_emails(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except OSError as e:
        raise SetupError(f"cannot read emails file {path!r}: {e}") from e
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines and "," in lines[0]:
        # A CSV (e.g. a Rolecall inventory): take the `email` column.
        import csv

        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "email" not in rows[0]:
            raise SetupError(f"{path!r} looks like a CSV but has no 'email' column")
        lines = [r["email"].strip() for r in rows if r.get("email", "").strip()]
    if not lines:
        raise SetupError(f"no emails in {path!r}")
    return lines


def install_signal_handlers() -> None:
    def handler(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)


def sim_stats(sim_url: str) -> Optional[dict]:
    """Best effort: the sim's counters, for the stderr log only."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{sim_url.rstrip('/')}/_sim/stats", timeout=3) as r:
            return json.loads(r.read().decode())
    except Exception:  # noqa: BLE001 - not a sim, or no stats endpoint
        return None


class Fleet:
    """Worker processes, each in its own process group (pgid == pid), recorded
    in the pidfile so run_peer.sh's trap can kill them even if we die."""

    def __init__(self, pidfile: Optional[str]):
        self.pidfile = pidfile
        self.procs: list[subprocess.Popen] = []

    def spawn(self, cmd: list[str], env: dict, cwd: str) -> None:
        log("starting: " + " ".join(cmd))
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno(),
            start_new_session=True,
        )
        self.procs.append(proc)
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{proc.pid}\n")

    def alive(self) -> int:
        return sum(1 for p in self.procs if p.poll() is None)

    def _signal_groups(self, sig: int) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM each worker's leader process (both CLIs shut down warmly on
        it; dramatiq's forwards it to its worker process, and a second SIGTERM
        would make that one die hard), wait up to grace_s, then SIGKILL
        whatever is left in the process groups."""
        if not self.procs:
            return
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # The group leader may be gone while children linger: always sweep.
        self._signal_groups(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"worker {p.pid} did not die after SIGKILL")
        log("workers stopped")


def wait_ready(r, keys: Keys, fleet: Fleet, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ready = int(r.get(keys.ready) or 0)
        if ready >= n:
            log(f"{ready} worker processes ready")
            return
        if fleet.alive() < len(fleet.procs):
            raise SetupError("a worker process exited during startup (see stderr above)")
        if time.monotonic() > deadline:
            raise SetupError(f"only {ready}/{n} worker processes ready after {timeout_s:.0f}s")
        time.sleep(0.1)


def counts(r, keys: Keys) -> dict:
    pipe = r.pipeline()
    pipe.scard(keys.done)
    pipe.scard(keys.failed)
    pipe.get(keys.not_found)
    pipe.get(keys.r429)
    pipe.get(keys.r5xx)
    pipe.get(keys.deferred)
    done, failed, nf, r429, r5xx, deferred = pipe.execute()
    return {
        "done": int(done), "failed": int(failed), "not_found": int(nf or 0),
        "r429": int(r429 or 0), "r5xx": int(r5xx or 0), "deferred": int(deferred or 0),
    }


def delete_redis_namespace(r, keys: Keys) -> int:
    n = 0
    batch = []
    for k in r.scan_iter(match=keys.pattern, count=1000):
        batch.append(k)
        if len(batch) >= 500:
            n += r.delete(*batch)
            batch = []
    if batch:
        n += r.delete(*batch)
    return n


def run(
    peer: str,
    argv,
    *,
    import_peer: Callable[[], object],
    worker_cmd: Callable[[Settings, int], list[str]],
    enqueue: Callable[[object, Settings, list[str]], None],
    delete_queues: Callable[[object, Settings], None],
    limiter_deferrals_apply: bool,
) -> int:
    """The orchestrator shared by both peers.

    import_peer() imports the peer module *after* the settings are in the
    environment (the module builds its broker/app from them) and returns it.
    """
    args, settings = parse_args(peer, argv)
    install_signal_handlers()
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ.update(settings.to_env())
    env = dict(os.environ)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"

    keys = Keys(settings.namespace)
    fleet = Fleet(args.pidfile)
    mod = None
    r = None
    status = "aborted"
    result: Optional[dict] = None
    exit_code = EXIT_ABORTED
    try:
        try:
            emails = read_emails(args.emails)
            r = redis_client(settings.redis_url)
            r.ping()
        except SetupError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SetupError(f"redis at {settings.redis_url}: {e}") from e
        log(f"{peer}: {len(emails)} jobs, R={settings.rate}/s, {settings.workers} workers x "
            f"{settings.threads} threads, namespace {settings.namespace}")
        delete_redis_namespace(r, keys)  # a reused namespace starts clean
        try:
            mod = import_peer()
            delete_queues(mod, settings)  # ... and so do its queues (also checks RabbitMQ)
        except SetupError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SetupError(f"{peer} setup (RabbitMQ at {settings.amqp_url}?): {e!r}") from e

        for i in range(settings.workers):
            fleet.spawn(worker_cmd(settings, i), env, here)
        wait_ready(r, keys, fleet, settings.workers, args.ready_timeout)

        stats_before = sim_stats(settings.sim_url)
        jobs = len(emails)
        t0 = time.monotonic()
        enqueue(mod, settings, emails)
        log(f"enqueued {jobs} jobs in {time.monotonic() - t0:.2f}s")

        deadline = t0 + args.timeout
        last_log = 0.0
        status = "timeout"
        while time.monotonic() < deadline:
            c = counts(r, keys)
            if c["done"] + c["failed"] >= jobs:
                status = "ok"
                break
            now = time.monotonic()
            if now - last_log >= 5:
                last_log = now
                log(f"t={now - t0:6.1f}s done={c['done']} failed={c['failed']} 429s={c['r429']} "
                    f"5xx={c['r5xx']} deferrals={c['deferred']}")
            if fleet.alive() == 0:
                status = "workers_died"
                break
            time.sleep(0.05)
        duration = time.monotonic() - t0
        c = counts(r, keys)
        stats_after = sim_stats(settings.sim_url)
        if stats_after is not None:
            log(f"sim stats before: {json.dumps(stats_before)}")
            log(f"sim stats after:  {json.dumps(stats_after)}")
        result = {
            "peer": peer,
            "jobs": jobs,
            "completed": c["done"],
            "failed": c["failed"],
            "retried_429": c["r429"],
            "duration_s": round(duration, 3),
            # Extras (not part of the common shape; parsers may ignore them):
            "status": status,
            "not_found": c["not_found"],
            "retried_5xx": c["r5xx"],
            "limiter_deferrals": c["deferred"] if limiter_deferrals_apply else None,
            "workers": settings.workers,
            "threads": settings.threads,
            "rate": settings.rate,
            "namespace": settings.namespace,
            "settings": {
                f: getattr(settings, f)
                for f in ("limiter", "bucket_ms", "limiter_mode", "max_retries",
                          "min_backoff_ms", "max_backoff_ms", "prefetch_multiplier",
                          "on_429", "sleep_429_ms", "no_event_loop")
            },
        }
        exit_code = {"ok": EXIT_OK, "timeout": EXIT_TIMEOUT}.get(status, EXIT_ABORTED)
        if status != "ok":
            log(f"run ended with status {status}")
    except SetupError as e:
        log(f"setup failed: {e}")
        exit_code = EXIT_SETUP
    except Interrupted as e:
        log(f"interrupted by {e}")
        exit_code = EXIT_ABORTED
    finally:
        # Further SIGTERM/SIGINT must not cut the cleanup short (run_peer.sh
        # escalates to SIGKILL and sweeps the worker groups itself if needed).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # Stop workers first so nothing re-declares the queues we delete.
        fleet.stop()
        try:
            if mod is not None:
                delete_queues(mod, settings)
            if r is not None:
                n = delete_redis_namespace(r, keys)
                log(f"cleaned namespace {settings.namespace} (queues, {n} redis keys)")
        except Exception as e:  # noqa: BLE001
            log(f"cleanup of namespace {settings.namespace} incomplete: {e!r}")
    if result is not None:
        print(json.dumps(result), flush=True)
    return exit_code
