"""corral's NATS client: nats-py's, with coalesced writes and a cheaper header parse (core/nats_client.py)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import BadHeaderError, ConnectionClosedError, MaxPayloadError, MsgAlreadyAckdError, NotJSMessageError

from corral.core.nats_client import CorralClient, CorralMsg, open_client, subscribe_inline
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
    for name in ("_flusher", "_parse_header_lines", "_process_msg", "_init_request_sub", "_remove_sub", "_request_sub_callback",
                 "_send_publish", "_send_ping"):
        assert callable(getattr(Client, name, None)), name
        assert name in vars(CorralClient) or name == "_request_sub_callback", name
    assert "metadata" in vars(CorralMsg) and isinstance(vars(Msg)["metadata"], property)


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw: bytes):
    """Given a header block, corral's parse gives exactly what nats-py's own parse gives."""
    assert CorralClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


DELIVERED_HEADERS = [b"NATS/1.0\r\n" + raw for raw in HEADER_BLOCKS] + [
    b"NATS/1.0\r\n\r\n",  # a block with no header in it
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 10\r\nNats-Last-Stream: 12\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\nNats-Pending-Bytes: 100\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
]


@pytest.mark.anyio
@pytest.mark.parametrize("raw", DELIVERED_HEADERS)
async def test_an_inline_delivery_carries_the_headers_nats_py_reads(raw: bytes):
    """Given a message's header block (plain, empty, or a status line with or without headers), an
    inline subscription's message carries what nats-py's own header processing makes of it."""
    import types

    got: list[Msg] = []
    ours = CorralClient()
    ours._subs[1] = types.SimpleNamespace(_received=0)  # type: ignore[assignment]
    ours._inline[1] = got.append
    await ours._process_msg(1, b"s.x", b"r.y", b"data", raw)
    assert got[0].headers == await Client._process_headers(Client(), raw)


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


PUBLISH_HEADERS = [
    {"Nats-Msg-Id": "j-1", "Nats-Expected-Stream": "CORRAL_JOBS"},
    {" Spaced ": " v\r\nx ", "": "skip", "  ": "blank name", "K": ""},  # stripped, newlines blanked, blanks skipped
    {"A": "\u00e9", "traceparent": "00-ab", "Nats-Batch-Sequence": "3"},
    {"X": "a\nb", "Y": "c\rd", "Z": "\u2003wide spaces\u2003"},  # one kind of line break each; unicode whitespace stripped
]


@pytest.mark.anyio
@pytest.mark.parametrize("headers", PUBLISH_HEADERS)
async def test_a_publish_is_written_byte_for_byte_as_nats_py_writes_it(headers: dict[str, str]):
    """Given a set of headers, corral's client queues exactly the command nats-py's queues, twice over
    (the second time from its checked-names cache)."""
    for _ in range(2):
        stock, ours = Client(), CorralClient()
        await Client._send_publish(stock, "s.x", "r.y", b"payload", 7, headers)
        await ours._send_publish("s.x", "r.y", b"payload", 7, headers)
        assert bytes(ours._pending[-1]) == bytes(stock._pending[-1])


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["Bad Name", "a:b", "x\ty"])
async def test_a_header_name_nats_py_refuses_is_refused_the_same_way(name: str):
    for client in (Client(), CorralClient()):
        with pytest.raises(BadHeaderError):
            await type(client)._send_publish(client, "s", "", b"", 0, {name: "v"})


@pytest.mark.anyio
@pytest.mark.parametrize("connected", [True, False])
async def test_an_ack_is_written_byte_for_byte_as_nats_py_writes_it_and_only_once(connected: bool):
    """Given a delivery, corral's ack queues exactly the command nats-py's queues (connected, or
    buffering while reconnecting), and a second ack of it is refused as nats-py refuses it."""
    reply = "$JS.ACK.CORRAL_JOBS.work-default-normal.1.12345.678.1764610000123456789.42"
    queued = []
    for cls in (Msg, CorralMsg):
        client = CorralClient()
        client._max_pending_size = 1 << 20
        if connected:
            client._status = Client.CONNECTED
        msg = cls(client, subject="corral.jobs.default.normal.add", reply=reply)
        await msg.ack()
        queued.append((bytes(client._pending[-1]), client.stats["out_msgs"]))
        with pytest.raises(MsgAlreadyAckdError):
            await msg.ack()
    assert queued[0] == queued[1]
    assert queued[1][0] == b"PUB " + reply.encode() + b"  0\r\n\r\n"


@pytest.mark.anyio
async def test_an_ack_on_a_closed_client_is_refused_as_nats_py_refuses_it():
    client = CorralClient()
    client._status = Client.CLOSED
    reply = "$JS.ACK.CORRAL_JOBS.work-default-normal.1.12345.678.1764610000123456789.42"
    for cls in (Msg, CorralMsg):
        with pytest.raises(ConnectionClosedError):
            await cls(client, subject="s", reply=reply).ack()
    assert not client._pending


@pytest.mark.anyio
async def test_an_ack_from_corrals_client_settles_the_delivery_on_a_real_server(nats_server):
    """Given a pull consumer's delivery, when corral's client acks it, the server counts it acked."""
    nc = await open_client(servers=[nats_server.url])
    try:
        js = nc.jetstream()
        await js.add_stream(name="ACKS", subjects=["acks.>"])
        await js.publish("acks.one", b"x")
        sub = await js.pull_subscribe("acks.one", durable="acker")
        [msg] = await sub.fetch(1, timeout=5)
        assert isinstance(msg, CorralMsg) and (await sub.consumer_info()).num_ack_pending == 1
        await msg.ack()
        await eventually(lambda: _acked(sub), what="the ack counted by the server")
    finally:
        await nc.close()


async def _acked(sub) -> bool:
    info = await sub.consumer_info()
    return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1


def _offline(cls: type[Client]) -> Client:
    """A client that queues what it is given, as a connected one does, without a socket to write to."""
    client = cls()
    client._status, client._max_payload, client._max_pending_size = Client.CONNECTED, 1 << 20, 1 << 30
    return client


@pytest.mark.anyio
async def test_publish_all_queues_what_one_publish_each_would_queue():
    """Given batch members with and without headers, publish_all queues the bytes and counts that one
    nats-py publish per member queues, in order."""
    members = [(f"corral.results.j{i}.bot-1", b"x" * i, {"Nats-Batch-Id": "b", "Nats-Batch-Sequence": str(i)})
               for i in range(1, 4)] + [("plain.subject", b"", None), ("empty.headers", b"y", {})]
    stock, ours = _offline(Client), _offline(CorralClient)
    for subject, data, headers in members:
        await Client.publish(stock, subject, data, headers=headers)
    await ours.publish_all(members)
    assert [bytes(c) for c in ours._pending] == [bytes(c) for c in stock._pending]
    assert (ours.stats["out_msgs"], ours.stats["out_bytes"]) == (stock.stats["out_msgs"], stock.stats["out_bytes"]) == (5, 7)


@pytest.mark.anyio
async def test_batch_members_are_queued_as_publishes_with_the_batch_headers_added():
    """Given results with their fence headers (and one with none), publish_batch_members queues the
    bytes and counts of one nats-py publish per member with Nats-Batch-Id and Nats-Batch-Sequence
    added to its headers, numbered from 1, in order."""
    from corral.core.names import BATCH_ID, BATCH_SEQUENCE, result_fence, result_subject

    members = [(result_subject(f"j{i}", "bot-1"), b"r" * i, result_fence(f"j{i}")) for i in range(1, 12)]
    members.append(("corral.results.j12.bot-1", b"", {}))
    stock, ours = _offline(Client), _offline(CorralClient)
    for n, (subject, data, headers) in enumerate(members, start=1):
        await Client.publish(stock, subject, data, headers={**headers, BATCH_ID: "B1", BATCH_SEQUENCE: str(n)})
    await ours.publish_batch_members(members, "B1")
    assert [bytes(c) for c in ours._pending] == [bytes(c) for c in stock._pending]
    assert (ours.stats["out_msgs"], ours.stats["out_bytes"]) == (stock.stats["out_msgs"], stock.stats["out_bytes"]) == (12, 66)


@pytest.mark.anyio
async def test_publish_all_refuses_as_publish_does_and_keeps_what_it_queued_before():
    """Given a member over max_payload, publish_all raises nats-py's error after queueing the members
    before it; on a closed client it queues nothing."""
    ours = _offline(CorralClient)
    ours._max_payload = 4
    ours._flush_queue = asyncio.Queue()
    ours._flusher_task = asyncio.get_running_loop().create_future()  # a flusher "running": kicks are queued
    with pytest.raises(MaxPayloadError):
        await ours.publish_all([("a.b", b"ok", {"K": "v"}), ("a.c", b"too long", {"K": "v"}), ("a.d", b"", {})])
    assert len(ours._pending) == 1 and bytes(ours._pending[0]).startswith(b"HPUB a.b ")
    assert ours._flush_queue.qsize() == 1  # the flusher is woken for what was queued, as publish would have
    closed = _offline(CorralClient)
    closed._status = Client.CLOSED
    with pytest.raises(ConnectionClosedError):
        await closed.publish_all([("a.b", b"", {})])
    assert not closed._pending


ACK_SUBJECTS = [
    "$JS.ACK.CORRAL_JOBS.work-default-normal.1.12345.678.1764610000123456789.42",  # 9 tokens
    "$JS.ACK._.HASH.CORRAL_JOBS.work-default-normal.3.12345.678.1764610000123456789.0.r4nd",  # no domain
    "$JS.ACK.hub.HASH.CORRAL_JOBS.work-default-high.2.9.8.1764610000000000000.7",  # a domain, no random token
]


@pytest.mark.parametrize("reply", ACK_SUBJECTS)
def test_delivery_metadata_reads_as_nats_py_reads_it(reply: str):
    """Given a JetStream ack subject, corral's metadata answers what nats-py's answers, attribute by attribute."""
    ours, theirs = CorralMsg(None, reply=reply).metadata, Msg(None, reply=reply).metadata  # type: ignore[arg-type]
    for name in ("num_pending", "num_delivered", "stream", "consumer", "domain", "timestamp"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert (ours.sequence.stream, ours.sequence.consumer) == (theirs.sequence.stream, theirs.sequence.consumer)


@pytest.mark.parametrize("reply", ["", "not.a.js.subject", "$JS.ACK.too.short"])
def test_a_subject_that_is_no_ack_subject_is_refused_as_nats_py_refuses_it(reply: str):
    with pytest.raises(NotJSMessageError):
        _ = CorralMsg(None, reply=reply).metadata  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_inline_handlers_run_in_the_read_loop_in_order_until_unsubscribed(nats_server):
    """Given an inline subscription, messages reach the handler in order, inside the client's read
    loop task; a request's reply is resolved there too; after unsubscribing nothing more arrives."""
    nc = await open_client(servers=[nats_server.url])
    try:
        got: list[bytes] = []
        tasks: set[object] = set()

        def keep(msg) -> None:
            got.append(msg.data)
            tasks.add(asyncio.current_task())

        sub = await subscribe_inline(nc, "t.inline.*", keep)
        for i in range(200):
            await nc.publish(f"t.inline.{i % 3}", str(i).encode())

        async def all_arrived() -> bool:
            return len(got) >= 200

        await eventually(all_arrived, timeout=10, what="200 inline messages")
        assert got == [str(i).encode() for i in range(200)]
        assert tasks == {nc._reading_task}

        async def echo(msg) -> None:
            await msg.respond(msg.data + b"!")

        await nc.subscribe("t.echo", cb=echo)
        assert (await nc.request("t.echo", b"ping", timeout=5)).data == b"ping!"
        assert nc._resolve_request in nc._inline.values()

        await sub.unsubscribe()
        assert sub._id not in nc._inline
        await nc.publish("t.inline.0", b"late")
        assert (await nc.request("t.echo", b"after", timeout=5)).data == b"after!"  # the late one had its chance
        assert got[-1] == b"199"
    finally:
        await nc.close()


@pytest.mark.anyio
async def test_an_inline_subscription_on_a_stock_client_is_an_ordinary_one(nats_server):
    """Given nats-py's own client, subscribe_inline still delivers every message to the handler."""
    nc = await nats.connect(nats_server.url)
    try:
        got: list[bytes] = []
        await subscribe_inline(nc, "t.stock", lambda msg: got.append(msg.data))
        for i in range(20):
            await nc.publish("t.stock", str(i).encode())

        async def all_arrived() -> bool:
            return len(got) >= 20

        await eventually(all_arrived, timeout=10, what="20 messages")
        assert got == [str(i).encode() for i in range(20)]
    finally:
        await nc.close()


@pytest.mark.anyio
async def test_a_drain_delivers_everything_published_before_it(nats_server):
    """Given corral's client with a callback and an inline subscription, when 1,000 messages are
    published to each and the connection is drained at once, then both handlers got all of them:
    the drain's PING is queued behind the publishes, not written ahead of them."""
    nc = await open_client(servers=[nats_server.url])
    by_cb: list[bytes] = []
    inline: list[bytes] = []

    async def keep(msg) -> None:
        by_cb.append(msg.data)

    await nc.subscribe("t.drain.cb", cb=keep)
    await subscribe_inline(nc, "t.drain.inline", lambda msg: inline.append(msg.data))
    for i in range(1000):
        await nc.publish("t.drain.cb", str(i).encode())
        await nc.publish("t.drain.inline", str(i).encode())
    await nc.drain()
    assert len(by_cb) == 1000 and len(inline) == 1000
