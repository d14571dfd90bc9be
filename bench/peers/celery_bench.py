"""The Rolecall lookup workload on Celery (RabbitMQ broker, per-worker rate_limit).

Run through run_peer.sh:  run_peer.sh celery --sim-url URL --rate R --emails FILE ...

Two roles in one file (as dramatiq_bench.py):
  * `python celery_bench.py ARGS` is the orchestrator (see peer_common.run).
  * `celery -A celery_bench worker ...` (the worker processes) imports this
    module as `celery_bench`, which builds the app and the task from the
    ROLECALL_PEER_* environment the orchestrator set.

How it behaves (the Celery idioms we compare against):
  * `rate_limit=f"{R / workers}/s"`: Celery's rate limit is enforced by each
    worker instance's consumer (a token bucket of capacity 1 per task type), not
    fleet-wide, so users divide the vendor's limit by the number of workers.
    Rate-limited tasks wait inside the worker; they are not rescheduled.
  * `autoretry_for=(429, 5xx/network)` with `retry_backoff` (base
    min_backoff, capped at max_backoff, full jitter: countdown is uniform in
    [0, min(cap, base * 2^retries)] whole seconds) and `max_retries`; after that
    the task fails and counts as failed. Retry-After is not honoured.
  * `acks_late=True`; the result backend is off (outcomes are counted in Redis
    by the task's on_success / on_failure handlers).
"""

from __future__ import annotations

import sys

import peer_common as pc

PEER = "celery"


def _worker_cmd(s: pc.Settings, i: int) -> list[str]:
    # One `celery worker` per worker process: the thread pool keeps each worker
    # instance in a single OS process (so "per worker" rate_limit == per
    # process), with --concurrency threads for the I/O-bound lookups.
    return [
        sys.executable, "-m", "celery", "-A", "celery_bench", "worker",
        "--pool", "threads", "--concurrency", str(s.threads),
        "-n", f"w{i + 1}.{s.namespace}@%h",
        "-Q", pc.queue_name(s.namespace),
        # Cluster chatter off, as commonly done in production (it is also what
        # keeps 4 simultaneously-starting workers from waiting on each other).
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "WARNING",
    ]


def _import_peer():
    import celery_bench  # this file, as a module: builds app + task

    return celery_bench


def _enqueue(mod, s: pc.Settings, emails: list[str]) -> None:
    with mod.app.producer_or_acquire() as producer:
        for e in emails:
            mod.lookup.apply_async((e,), producer=producer)


def _delete_queues(mod, s: pc.Settings) -> None:
    q = pc.queue_name(s.namespace)
    with mod.app.connection_for_write() as conn:
        ch = conn.default_channel
        ch.queue_delete(queue=q)
        ch.exchange_delete(exchange=q)


def main(argv=None) -> int:
    return pc.run(
        PEER, argv,
        import_peer=_import_peer, worker_cmd=_worker_cmd, enqueue=_enqueue,
        delete_queues=_delete_queues, limiter_deferrals_apply=False,
    )


if __name__ == "__main__":
    # The orchestrator stops here; the definitions below are only built when
    # this file is imported as the `celery_bench` module.
    sys.exit(main())


# --------------------------------------------------------------------------
# App and task (module import)
# --------------------------------------------------------------------------

import random  # noqa: E402
import time  # noqa: E402

from celery import Celery, Task  # noqa: E402
from celery.signals import worker_ready  # noqa: E402

S = pc.Settings.from_env()
KEYS = pc.Keys(S.namespace)

if S.no_event_loop:
    # With an async-capable broker transport Celery always runs kombu's event
    # loop, and no setting turns it off; its timers (one per rate-limited task
    # that finds the bucket empty) then stall (README.md, "Celery"). Without
    # the loop, timers run in Celery's timer thread.
    from celery.worker.worker import WorkController  # noqa: E402

    WorkController.should_use_eventloop = lambda self: False
QUEUE = pc.queue_name(S.namespace)
R = pc.redis_client(S.redis_url)

app = Celery("celery_bench", broker=S.amqp_url)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=S.prefetch_multiplier,
)


@worker_ready.connect
def _on_ready(sender=None, **_kw):
    R.incr(KEYS.ready)


class CountingTask(Task):
    """Records final outcomes (retries go through on_retry, not here)."""

    def on_success(self, retval, task_id, args, kwargs):
        R.sadd(KEYS.done, task_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        R.sadd(KEYS.failed, task_id)


def _call_vendor(email: str) -> bool:
    """With --on-429 sleep, a 429 is waited out in the task (Retry-After if
    the vendor sends one, else sleep_429_ms) and the call repeated, up to
    max_retries times; the last 429 goes to autoretry_for like any other."""
    if S.on_429 != "sleep":
        return pc.lever_lookup(S, email)
    for _ in range(S.max_retries):
        try:
            return pc.lever_lookup(S, email)
        except pc.VendorThrottledError as e:
            R.incr(KEYS.r429)
            wait_s = e.retry_after if e.retry_after is not None else S.sleep_429_ms / 1000
            time.sleep(wait_s * random.uniform(1.0, 1.2))
    return pc.lever_lookup(S, email)


@app.task(
    bind=True,
    base=CountingTask,
    name="rolecall_bench.lookup",
    rate_limit=f"{S.rate / S.workers}/s",
    autoretry_for=(pc.VendorThrottledError, pc.VendorTransientError),
    retry_backoff=max(1, round(S.min_backoff_ms / 1000)),
    retry_backoff_max=max(1, round(S.max_backoff_ms / 1000)),
    retry_jitter=True,
    max_retries=S.max_retries,
    acks_late=True,
    ignore_result=True,
)
def lookup(self, email: str) -> None:
    try:
        found = _call_vendor(email)
    except pc.VendorThrottledError:
        R.incr(KEYS.r429)
        raise
    except pc.VendorTransientError:
        R.incr(KEYS.r5xx)
        raise
    if not found:
        R.incr(KEYS.not_found)
