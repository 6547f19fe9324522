"""Results per second: one fenced publish per result against the group commit (bots/commit.py).

    python -m corral.bench.commit_rate [--results 6000] [--slots 1,8,32,128] [--lazy]

Starts its own nats-server (nats.conf: ``sync_interval: always``; ``--lazy``: the same with the
server's default fsync), provisions it, then for each slot count runs that many tasks, each recording
results one after the other as a bot's slots do, first the way bots did before the group
commit (every slot publishes its own fenced result and waits for its acknowledgement,
pipelined across slots), then through one :class:`~corral.bots.commit.Committer`.
Prints one line per run and the committer's batch counts.
"""

from __future__ import annotations

import argparse
import time

import anyio

from corral.bench.server import add_lazy_flag, fsync_name, standalone
from corral.bots.commit import Committer
from corral.core.log import get_logger
from corral.core.names import result_fence, result_subject
from corral.core.publisher import AsyncPublisher, wait_ack

BODY = b'{"job_id":"x","kind":"sum","queue":"default","bot":"bench","incarnation":"i","attempt":1,' \
       b'"started_at":1.0,"finished_at":2.0,"value":3}'


async def _individual(pub: AsyncPublisher, job_id: str) -> None:
    fut = await pub.publish(result_subject(job_id, "bench"), BODY, result_fence(job_id))
    await wait_ack(fut, pub.ack_timeout)


async def _grouped(committer: Committer, job_id: str) -> None:
    err = await committer.commit(result_subject(job_id, "bench"), BODY, result_fence(job_id))
    assert err is None, err


async def _run(slots: int, results: int, record) -> float:
    """Results per second with ``slots`` tasks recording ``results`` in all."""
    per_slot = results // slots
    tag = f"{time.monotonic_ns():x}"

    async def slot(n: int) -> None:
        for i in range(per_slot):
            await record(f"r{tag}-{n}-{i}")

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(slots):
            tg.start_soon(slot, n)
    return per_slot * slots / (time.perf_counter() - start)


async def main(results: int, slot_counts: list[int], lazy: bool) -> None:
    async with standalone(lazy) as (_server, nc):
        pub = AsyncPublisher(nc.jetstream(), get_logger("bench"))
        print(f"fsync: {fsync_name(lazy)}; {results} results per run")
        for slots in slot_counts:
            one = await _run(slots, results, lambda job_id: _individual(pub, job_id))
            committer = Committer(pub)
            grouped = await _run(slots, results, lambda job_id, c=committer: _grouped(c, job_id))
            s = committer.stats
            print(f"slots {slots:4}: individual {one:8.0f}/s   group commit {grouped:8.0f}/s   "
                  f"({grouped / one:4.1f}x; {s.singles} alone, {s.batches} batches averaging "
                  f"{s.batched / max(s.batches, 1):.0f})")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=6000)
    parser.add_argument("--slots", default="1,8,32,128")
    add_lazy_flag(parser)
    args = parser.parse_args()
    anyio.run(main, args.results, [int(s) for s in args.slots.split(",")], args.lazy)
