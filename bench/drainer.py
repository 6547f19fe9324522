"""One drain process for the limit: ``python -m corral.bench.drainer URL MODE``.

Protocol on stdio, so the parent's start-up cost never leaks into the timing:
the process connects and binds, prints ``ready``, waits for a line on stdin
(the go signal), drains until a fetch comes back empty, then prints
``<messages> <unix time of its last ack>`` (or ``error <text>``).
Kept to nats-py imports only, so it starts quickly.
"""

from __future__ import annotations

import asyncio
import sys
import time

import nats
import nats.errors

STREAM = "BENCH_LIMIT"
DURABLE = "drain"
FETCH_BATCH = 100
IDLE_END = 0.3  #: seconds of empty fetch after which the stream is taken to be empty
FIRST_WAIT = 1.0  #: seconds to wait for a first message (the backlog exists before the go signal)
ACK_TIMEOUT = 10.0  #: seconds an ack_sync may wait (nats-py's 1 s default is too short for an fsync under load)


async def drain(url: str, mode: str) -> tuple[int, float]:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind(durable=DURABLE, stream=STREAM)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    count, last = 0, time.time()
    while True:
        try:
            msgs = await sub.fetch(FETCH_BATCH, timeout=IDLE_END if count else FIRST_WAIT)
        except (TimeoutError, nats.errors.TimeoutError):  # nats-py 2.16 raises either
            break
        for m in msgs:
            if mode == "ack_sync":
                await m.ack_sync(timeout=ACK_TIMEOUT)
            else:
                await m.ack()
        count += len(msgs)
        last = time.time()
    await nc.flush()
    await nc.close()
    return count, last


def main() -> int:
    url, mode = sys.argv[1], sys.argv[2]
    try:
        count, last = asyncio.run(drain(url, mode))
    except Exception as e:  # noqa: BLE001 - the process boundary: reported to the parent
        print(f"error {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"{count} {last!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
