"""Publishing only: how fast a peer's client enqueues N jobs to RabbitMQ.

    publish_peer.py <celery|dramatiq> --jobs N --body-file FILE --queue NAME [--amqp-url URL]

Each job carries the same JSON object Rolecall publishes (read from
--body-file) as its one argument. Queues are quorum queues, like ours;
messages are persistent (both libraries' default). Neither library waits
for publisher confirms in its best configuration (Celery's `apply_async`
never does; dramatiq's `confirm_delivery` is off by default and costs a
round trip per message when on), so these figures are without confirms.

Without confirms the last call returns while messages are still in the
client's and the kernel's buffers, not yet in the queue; the time counted
ends when the queue holds every job (polled with a passive declare), as
the scheduler's ends with its last confirm. `sent_s` is the time until the
last call returned, for comparison.

stdout: one JSON line {"peer", "jobs", "duration_s", "jobs_per_s", "settings"};
the queues are deleted before the script exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def wait_until_queued(depth, jobs: int, timeout_s: float = 600.0) -> None:
    """Polls `depth()` (ready messages in the queue) until it reaches `jobs`."""
    deadline = time.perf_counter() + timeout_s
    while depth() < jobs:
        if time.perf_counter() > deadline:
            raise SystemExit(f"the queue never held {jobs} jobs")
        time.sleep(0.005)


def celery_publish(args, body) -> tuple[float, float, str]:
    from celery import Celery
    from kombu import Exchange, Queue

    app = Celery("rolecall_publish_bench", broker=args.amqp_url)
    queue = Queue(
        args.queue,
        Exchange(args.queue, type="direct"),
        routing_key=args.queue,
        queue_arguments={"x-queue-type": "quorum"},
    )
    app.conf.task_queues = [queue]
    app.conf.task_default_queue = args.queue
    app.conf.task_default_exchange = args.queue
    app.conf.task_default_routing_key = args.queue

    @app.task(name="rolecall_bench.lookup")
    def lookup(job):  # pragma: no cover - never run, only enqueued
        return job

    # Best configuration: one producer (one channel) reused for every call,
    # instead of acquiring one from the pool per apply_async.
    with app.producer_or_acquire() as producer:
        queue.declare(channel=producer.channel)
        lookup.apply_async((body,), producer=producer)  # warm-up, not timed
        started = time.perf_counter()
        for _ in range(args.jobs - 1):
            lookup.apply_async((body,), producer=producer)
        sent = time.perf_counter() - started
        bound = queue.bind(producer.channel)
        wait_until_queued(lambda: bound.queue_declare(passive=True).message_count, args.jobs)
        duration = time.perf_counter() - started
        bound.delete()
        queue.exchange.bind(producer.channel).delete()
    return duration, sent, "apply_async(producer=<one reused producer>), quorum queue, persistent, no confirms"


def dramatiq_publish(args, body) -> tuple[float, float, str]:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    class QuorumBroker(RabbitmqBroker):
        # dramatiq declares classic queues; ours (and the broker's
        # recommended durable type) are quorum queues.
        def _build_queue_arguments(self, queue_name):
            arguments = super()._build_queue_arguments(queue_name)
            arguments["x-queue-type"] = "quorum"
            arguments.pop("x-max-priority", None)
            return arguments

    broker = QuorumBroker(url=args.amqp_url, confirm_delivery=False)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=args.queue, actor_name="lookup")
    def lookup(job):  # pragma: no cover - never run, only enqueued
        return job

    lookup.send(body)  # warm-up (declares the queues), not timed
    started = time.perf_counter()
    for _ in range(args.jobs - 1):
        lookup.send(body)
    sent = time.perf_counter() - started
    channel = broker.channel
    wait_until_queued(
        lambda: channel.queue_declare(args.queue, passive=True).method.message_count, args.jobs
    )
    duration = time.perf_counter() - started
    for name in (args.queue, args.queue + ".DQ", args.queue + ".XQ"):
        channel.queue_delete(name)
    broker.close()
    return duration, sent, "actor.send, RabbitmqBroker(confirm_delivery=False), quorum queues, persistent"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=["celery", "dramatiq"])
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = p.parse_args(argv)
    with open(args.body_file, encoding="utf-8") as f:
        body = json.load(f)
    run = celery_publish if args.peer == "celery" else dramatiq_publish
    duration, sent, settings = run(args, body)
    timed = args.jobs - 1
    print(json.dumps({
        "peer": args.peer,
        "jobs": timed,
        "duration_s": round(duration, 3),
        "jobs_per_s": round(timed / duration, 1),
        "sent_s": round(sent, 3),
        "settings": settings,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
