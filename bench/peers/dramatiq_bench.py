"""The Rolecall lookup workload on dramatiq (RabbitMQ broker, Redis rate limiter).

Run through run_peer.sh:  run_peer.sh dramatiq --sim-url URL --rate R --emails FILE ...

Two roles in one file:
  * `python dramatiq_bench.py ARGS` is the orchestrator: it starts the worker
    processes, enqueues one message per email, waits, stops the workers and
    prints the JSON line (see peer_common.run).
  * `dramatiq dramatiq_bench ...` (the worker processes) imports this module
    as `dramatiq_bench`; the module then builds the broker and the actor from
    the ROLECALL_PEER_* environment the orchestrator set.

How it behaves (the dramatiq idioms we compare against):
  * Fleet-wide limit: `WindowRateLimiter(RedisBackend, "<ns>:vendor-limit",
    limit=R, window=1)` around each vendor call (or BucketRateLimiter with
    --limiter bucket). When the limit is used up, `acquire()` raises
    RateLimitExceeded and dramatiq's Retries middleware re-enqueues the message
    with exponential backoff (min_backoff * 2^retries, jitter x1-2, capped at
    max_backoff). Dramatiq does not wait for a slot, it reschedules.
  * Retry budget: `retry_when` retries RateLimitExceeded without limit (the run's
    hard timeout bounds it); vendor failures (429, 5xx, network) get
    max_retries retries each job, counted in the message's options, after which
    the message fails (dead-letter queue) and counts as failed.
  * A vendor 429 raises VendorThrottled, a `dramatiq.Retry` subclass, so the
    Retries middleware reschedules it with the same backoff without logging a
    traceback. Retry-After is not honoured (dramatiq's backoff applies).
"""

from __future__ import annotations

import os
import sys

import peer_common as pc

PEER = "dramatiq"


def _worker_cmd(s: pc.Settings, i: int) -> list[str]:
    # One `dramatiq` CLI per worker process (like 4 hosts/containers each
    # running one worker), each with --threads worker threads.
    return [
        sys.executable, "-m", "dramatiq", "dramatiq_bench",
        "--processes", "1", "--threads", str(s.threads),
        "--queues", pc.queue_name(s.namespace),
    ]


def _import_peer():
    import dramatiq_bench  # this file, as a module: builds broker + actor

    return dramatiq_bench


def _enqueue(mod, s: pc.Settings, emails: list[str]) -> None:
    for e in emails:
        mod.lookup.send(e)


def _delete_queues(mod, s: pc.Settings) -> None:
    # The broker declares <q>, <q>.DQ (delays) and <q>.XQ (dead letters).
    import pika

    q = pc.queue_name(s.namespace)
    conn = pika.BlockingConnection(pika.URLParameters(s.amqp_url))
    try:
        ch = conn.channel()
        for name in (q, q + ".DQ", q + ".XQ"):
            ch.queue_delete(queue=name)
    finally:
        conn.close()


def main(argv=None) -> int:
    return pc.run(
        PEER, argv,
        import_peer=_import_peer, worker_cmd=_worker_cmd, enqueue=_enqueue,
        delete_queues=_delete_queues, limiter_deferrals_apply=True,
    )


if __name__ == "__main__":
    # The orchestrator stops here; the definitions below are only built when
    # this file is imported as the `dramatiq_bench` module (workers, and the
    # orchestrator's own import for sending messages).
    sys.exit(main())


# --------------------------------------------------------------------------
# Broker, rate limiter and actor (module import)
# --------------------------------------------------------------------------

import logging  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import dramatiq  # noqa: E402
from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: E402
from dramatiq.middleware import CurrentMessage, Middleware, Retries  # noqa: E402
from dramatiq.rate_limits import BucketRateLimiter, WindowRateLimiter  # noqa: E402
from dramatiq.rate_limits.backends import RedisBackend  # noqa: E402
from dramatiq.errors import RateLimitExceeded  # noqa: E402

S = pc.Settings.from_env()
KEYS = pc.Keys(S.namespace)
QUEUE = pc.queue_name(S.namespace)
R = pc.redis_client(S.redis_url)

if not os.environ.get("ROLECALL_PEER_VERBOSE"):
    # One INFO line per reschedule would flood stderr; keep warnings.
    logging.getLogger("dramatiq.middleware.retries").setLevel(logging.WARNING)


class Outcome(Middleware):
    """Bookkeeping only: worker readiness and final outcomes, in Redis.

    Added *before* Retries in the middleware list: dramatiq runs the after_*
    hooks in reverse order, so Retries has decided `message.failed` (retries
    exhausted, or a `throws` exception) by the time we look.
    """

    def after_worker_boot(self, broker, worker):
        R.incr(KEYS.ready)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            R.sadd(KEYS.done, message.message_id)
        elif message.failed:
            R.sadd(KEYS.failed, message.message_id)
        elif isinstance(exception, RateLimitExceeded):
            R.incr(KEYS.deferred)

    def after_skip_message(self, broker, message):
        R.sadd(KEYS.failed, message.message_id)


broker = RabbitmqBroker(url=S.amqp_url)
broker.add_middleware(CurrentMessage())
broker.add_middleware(Outcome(), before=Retries)
dramatiq.set_broker(broker)

_backend = RedisBackend(client=R)
if S.limiter == "bucket":
    LIMITER = BucketRateLimiter(
        _backend, KEYS.limiter,
        limit=max(1, round(S.rate * S.bucket_ms / 1000)), bucket=S.bucket_ms,
    )
else:
    LIMITER = WindowRateLimiter(_backend, KEYS.limiter, limit=max(1, round(S.rate)), window=1)


class VendorThrottled(dramatiq.Retry):
    """The vendor answered 429: let Retries reschedule with its backoff."""


class VendorFailed(Exception):
    """5xx or network error: retried by Retries, logged with a traceback."""


def _retry_when(retries: int, exc: BaseException) -> bool:
    if isinstance(exc, RateLimitExceeded):
        return True
    return getattr(exc, "vendor_failures", retries + 1) <= S.max_retries


def _vendor_failure(exc: Exception) -> Exception:
    """Count one vendor failure on the message (its options travel with it
    through re-enqueues) and tag the exception for _retry_when."""
    msg = CurrentMessage.get_current_message()
    n = msg.options.get("vendor_failures", 0) + 1
    msg.options["vendor_failures"] = n
    exc.vendor_failures = n
    return exc


_PERIOD_MS = S.bucket_ms if S.limiter == "bucket" else 1000


def _wait_for_slot() -> None:
    """Wait mode: ask the limiter until it says yes, sleeping in this worker
    thread until the next bucket (or second) starts, plus a few ms of
    jitter so the fleet's threads do not all ask Redis at the same instant.
    The message keeps its thread meanwhile (dramatiq's own idiom raises
    RateLimitExceeded instead and reschedules it with backoff)."""
    while True:
        with LIMITER.acquire(raise_on_failure=False) as acquired:
            if acquired:
                return
        R.incr(KEYS.deferred)
        now_ms = time.time() * 1000
        time.sleep((_PERIOD_MS - now_ms % _PERIOD_MS + random.uniform(0, 5)) / 1000)


@dramatiq.actor(
    queue_name=QUEUE,
    retry_when=_retry_when,
    min_backoff=S.min_backoff_ms,
    max_backoff=S.max_backoff_ms,
    throws=(pc.VendorPermanentError,),
)
def lookup(email: str) -> None:
    try:
        if S.limiter_mode == "wait":
            _wait_for_slot()
            found = pc.lever_lookup(S, email)
        else:
            with LIMITER.acquire():
                found = pc.lever_lookup(S, email)
    except pc.VendorThrottledError as e:
        R.incr(KEYS.r429)
        raise _vendor_failure(VendorThrottled(str(e))) from None
    except pc.VendorTransientError as e:
        R.incr(KEYS.r5xx)
        raise _vendor_failure(VendorFailed(str(e))) from None
    if not found:
        R.incr(KEYS.not_found)
