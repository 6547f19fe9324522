"""taskiq-nats' side of `corral bench compare`: the broker and its no-op ``add`` task.

Apart from :mod:`corral.bench.peer`, which corral's bots import for their handler: a bot that
loaded taskiq-nats (and aiohttp with it) would be measured carrying a peer's memory.
"""

from __future__ import annotations

import os

from corral.bench.peer import BATCH_ENV, FETCH_TIMEOUT, TASKIQ_DURABLE, TASKIQ_STREAM, TASKIQ_SUBJECT, URL_ENV, _mark


def taskiq_broker(url: str, batch: int = 1):
    """taskiq-nats as its README sets it up, on our stream and durable names, pulling ``batch`` at a time."""
    from nats.js.api import ConsumerConfig
    from taskiq_nats import PullBasedJetStreamBroker

    return PullBasedJetStreamBroker(
        url, subject=TASKIQ_SUBJECT, stream_name=TASKIQ_STREAM,
        durable=TASKIQ_DURABLE, pull_consume_batch=batch, pull_consume_timeout=FETCH_TIMEOUT,
        consumer_config=ConsumerConfig(durable_name=TASKIQ_DURABLE),
    )


try:  # taskiq-nats is the optional `bench` extra; corral's own side needs none of it
    broker = taskiq_broker(os.environ.get(URL_ENV, "nats://127.0.0.1:4222"), int(os.environ.get(BATCH_ENV, "1")))

    @broker.task(task_name="add")
    async def taskiq_add(i: int, a: int, b: int) -> int:
        marks = _mark()
        marks.start(i)
        value = a + b
        marks.end(i)
        return value
except ImportError:
    broker = None
