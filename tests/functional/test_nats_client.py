"""corral's NATS client: nats-py's, with coalesced writes and a cheaper header parse (core/nats_client.py)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from corral.core.nats_client import CorralClient, open_client
from tests.conftest import eventually

HEADER_BLOCKS = [
    b"Nats-Msg-Id: j-1\r\nNats-Expected-Stream: CORRAL_JOBS\r\n\r\n",
    b"A:1\r\nB:\t2 \r\n\r\n",  # no space after the colon, a tab before the value
    b"Bad Name: x\r\nGood: y\r\n\r\n",  # whitespace inside a name: skipped
    b"\xff\xfe: x\r\nOk: \xc3\xa9\r\n\r\n",  # a non-ASCII name skipped, a UTF-8 value kept
    b"NoColon\r\n: empty name\r\nK: v: w\r\n\r\n",
    b"Tab\tIn: x\r\nX\x1cY: sep\r\nZ: \xff\r\n\r\n",  # odd whitespace inside names; bad UTF-8 in a value
]


def test_the_overrides_replace_methods_nats_py_still_has():
    """Given nats-py as installed, each method corral's client overrides exists on nats-py's client,
    so a rename upstream cannot silently leave the override dead."""
    for name in ("_flusher", "_parse_header_lines"):
        assert name in vars(CorralClient) and callable(getattr(Client, name, None)), name


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw: bytes):
    """Given a header block, corral's parse gives exactly what nats-py's own parse gives."""
    assert CorralClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


@pytest.mark.anyio
async def test_a_burst_of_publishes_and_requests_round_trips_through_the_coalescing_flusher(nats_server):
    """Given the client on a real server, when a burst of publishes is followed by a flush and a
    request, every message arrives in order with its headers and the request is answered."""
    nc = await open_client(servers=[nats_server.url])
    try:
        got: list[tuple[bytes, str]] = []
        async def keep(msg) -> None:
            got.append((msg.data, (msg.headers or {}).get("N", "")))

        async def echo(msg) -> None:
            await msg.respond(msg.data)

        sub = await nc.subscribe("t.burst", cb=keep)
        for i in range(500):
            await nc.publish("t.burst", str(i).encode(), headers={"N": str(i)})
        await nc.flush(timeout=5)

        async def all_arrived() -> bool:
            return len(got) >= 500

        await eventually(all_arrived, timeout=10, what="500 messages back")
        assert [d for d, _ in got] == [str(i).encode() for i in range(500)]
        assert [h for _, h in got] == [str(i) for i in range(500)]
        await sub.unsubscribe()
        await nc.subscribe("t.echo", cb=echo)
        assert (await nc.request("t.echo", b"ping", timeout=5)).data == b"ping"
    finally:
        await nc.close()
