"""The server's CPU per stored result, published one by one or in atomic batches of each size.

    python -m corral.bench.batch_cost [--results 10240] [--sizes 16,64,256,512] [--lazy]

Starts its own nats-server (nats.conf: ``sync_interval: always``; ``--lazy``: the same with the
server's default fsync), provisions it, then stores ``--results`` fenced results (as bots write them) one
by one, pipelined, and then as sequential atomic batches of each size, and prints the server's
CPU (user + system, from its process) per result and per batch, and the rate. On a
single-replica file stream the server stages each batch in a store of its own on disk, a fixed
cost per batch that the per-batch column shows (docs/nats-notes.md, "Atomic batch publish").
"""

from __future__ import annotations

import argparse
import time

import anyio
import psutil

from corral.bench.commit_rate import BODY
from corral.bench.server import add_lazy_flag, fsync_name, standalone
from corral.core.log import get_logger
from corral.core.names import result_fence, result_subject
from corral.core.publisher import AsyncPublisher



def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _items(tag: str, start: int, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    ids = [f"c{tag}-{i}" for i in range(start, start + n)]
    return [(result_subject(j, "bench"), BODY, result_fence(j)) for j in ids]


async def _singles(pub: AsyncPublisher, tag: str, results: int) -> None:
    for start in range(0, results, 500):
        futs = [await pub.publish(*item) for item in _items(tag, start, min(500, results - start))]
        for fut in futs:
            await fut


async def _batches(pub: AsyncPublisher, tag: str, results: int, size: int) -> None:
    for start in range(0, results - size + 1, size):
        await (await pub.publish_batch(_items(tag, start, size)))


async def main(results: int, sizes: list[int], lazy: bool) -> None:
    async with standalone(lazy) as (server, nc):
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        pub = AsyncPublisher(nc.jetstream(), get_logger("bench"))
        print(f"fsync: {fsync_name(lazy)}; {results} results per run")
        for size in (1, *sizes):
            tag = f"{time.monotonic_ns():x}"
            cpu, began = _cpu(proc), time.perf_counter()
            stored = results if size == 1 else results // size * size
            await (_singles(pub, tag, results) if size == 1 else _batches(pub, tag, results, size))
            used, took = _cpu(proc) - cpu, time.perf_counter() - began
            way = "one by one      " if size == 1 else f"batches of {size:<5}"
            print(f"{way}: server {used * 1e6 / stored:6.1f} us/result  {used * 1e6 * size / stored:7.0f} us/batch  "
                  f"{stored / took:7.0f} results/s")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10240)
    parser.add_argument("--sizes", default="16,64,256,512")
    add_lazy_flag(parser)
    args = parser.parse_args()
    anyio.run(main, args.results, [int(s) for s in args.sizes.split(",")], args.lazy)
