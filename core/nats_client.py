"""The NATS client corral connects with: nats-py's, with two costs of its hot path cut.

**Coalesced writes.**
nats-py queues every command (a publish, an ack, a pull request) in a buffer and
wakes its flusher task, which writes the whole buffer to the socket at its next
turn of the event loop. A busy bot's jobs finish one per task, each at its own
turn, so the flusher woke for nearly every command: a bot draining no-op jobs
spent a fifth of its CPU in ``send()`` system calls of a few dozen bytes each
(a py-spy profile of ``corral bot``; docs/performance.md).

:class:`CorralClient` lets the flusher wait one more turn of the loop before it
writes, so the commands every task that was ready at that moment produces go out in
one write. The cost is one loop turn of latency per write (microseconds on an idle
bot, whose loop has nothing else to run); the gain under load is several times
fewer system calls, for the bot and for the server that reads them.

**Header writing.** nats-py checks each header name of each publish against the header
token pattern; :func:`header_block` checks each name once and writes the same bytes.

**Header parsing.** nats-py checks each received header name for whitespace one
character at a time, through a generator: a few dozen generator steps per job message
(every job carries ``Nats-Msg-Id`` and ``Nats-Expected-Stream``). The same rule is one
``str.split`` here (``str.split`` and ``str.isspace`` agree on what whitespace is).

**Delivery metadata.** nats-py parses a JetStream delivery's ack subject into frozen
dataclasses and a ``datetime`` the first time ``msg.metadata`` is read: every job's
delivery is read once, for its delivery count and stream sequence, and that parse cost
more than decoding the job. :class:`CorralMsg` answers the same attributes from the same
tokens into a plain object, and builds the ``datetime`` only if ``timestamp`` is read.

**Inline callbacks.** nats-py hands each subscription's messages to a task of its own
through a queue: one more task switch per message before its callback runs. A bot's
job deliveries and its publish acknowledgements need no task: their handlers only
append to a buffer or resolve a future. :meth:`CorralClient.subscribe_inline` runs
such a plain function in the read loop, as the message is parsed, and the client's
request replies (nats-py's own ``request`` inbox) are resolved the same way.
:func:`subscribe_inline` falls back to an ordinary callback subscription on any other
client, so code given a stock nats-py client works the same, one switch slower.

**Acks.** An ack is nats-py's ``publish`` of an empty message to the delivery's reply
subject, through three coroutines that check the subject's characters and build the command
with an f-string, for a subject the server wrote. :meth:`CorralMsg.ack` queues the same bytes
directly, after the same checks of the message and the connection: 2.2-2.6 against 1.1-1.6 µs
an ack here.

**Batches.** The members of an atomic batch before its commit ask for no reply: each was a
``publish`` of its own, three coroutines and a flusher kick apiece. :meth:`CorralClient.publish_all`
queues them in one call, with each one's checks and bytes unchanged and one kick for them all;
:meth:`CorralClient.publish_batch_members` does the same with each member's batch id and sequence
appended to its header text, rather than merged into a new header dict per member.

**Ordered PINGs.** nats-py writes a PING straight to the socket, ahead of commands still
queued; with the flusher waiting a turn that let ``flush()`` and ``drain()`` overtake the
publishes before them. Here a PING is queued like any command.

The method overrides are nats-py's own methods (``Client._flusher`` and
``Client._parse_header_lines`` in nats-py 2.16) with only that change; everything else
about the client is unchanged. If a later nats-py renames them, the overrides are simply
never called and the client behaves as stock nats-py (tests/functional/test_nats_client.py
checks that they still override something, and that the metadata matches nats-py's).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from nats.aio.client import _HEADER_KEY_RE, _HEADER_VALUE_NEWLINES, PING_PROTO, Client, _validate_subject
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    BadHeaderError, BadSubjectError, ConnectionClosedError, ConnectionDrainingError, MaxPayloadError,
    NotJSMessageError, OutboundBufferLimitError,
)
from nats.protocol.command import hpub_cmd, pub_cmd

from corral.core.names import BATCH_ID, BATCH_SEQUENCE

#: Header names seen, each checked once: name -> its "Name: " prefix ("" for a blank name, skipped).
_HEADER_NAMES: dict[str, str] = {}
#: Names kept at most: a client's own header names are a few dozen; past that each is checked every time.
_HEADER_NAMES_MAX = 1024

#: A function run in the read loop for each message of an inline subscription: it must not block.
Inline = Callable[[Msg], None]

#: Extra turns of the event loop the flusher waits before a write.
COALESCE_TURNS = 1


class SequencePair(NamedTuple):
    """As nats-py's ``Msg.Metadata.SequencePair``."""

    consumer: int
    stream: int


class Metadata:
    """nats-py's ``Msg.Metadata`` attributes, read from the ack subject's tokens; the timestamp on demand.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (9 tokens), or with
    ``<domain>.<account hash>`` after ``ACK`` and a random token at the end (12, or 11 without it).
    """

    __slots__ = ("_ns", "_timestamp", "consumer", "domain", "num_delivered", "num_pending", "sequence", "stream")

    def __init__(self, reply: str | None) -> None:
        tokens = reply.split(".") if reply else []
        n = len(tokens)
        if not (n == 9 or n >= 11) or tokens[0] != "$JS" or tokens[1] != "ACK":
            raise NotJSMessageError
        if n == 9:
            self.domain = None
            stream, consumer, delivered, sseq, cseq, ns, pending = tokens[2:9]
        else:
            domain = tokens[2]
            self.domain = "" if domain == "_" else domain
            stream, consumer, delivered, sseq, cseq, ns, pending = tokens[4:11]
        self.stream, self.consumer = stream, consumer
        self.sequence = SequencePair(consumer=int(cseq), stream=int(sseq))
        self.num_delivered = int(delivered)
        self.num_pending = int(pending)
        self._ns = int(ns)
        self._timestamp: datetime.datetime | None = None

    @property
    def timestamp(self) -> datetime.datetime:
        if self._timestamp is None:
            self._timestamp = datetime.datetime.fromtimestamp(self._ns / 1_000_000_000.0, datetime.UTC)
        return self._timestamp


class CorralMsg(Msg):
    """nats-py's message, whose ``metadata`` is the cheaper :class:`Metadata` and whose ``ack``
    is queued directly (:meth:`CorralClient.send_ack`)."""

    async def ack(self) -> None:
        """As nats-py's: refused for a message that is no JetStream delivery or is acked already."""
        self._check_reply()
        client = self._client
        if not isinstance(client, CorralClient):
            return await super().ack()
        await client.send_ack(self.reply)
        self._ackd = True

    @property
    def metadata(self) -> Metadata:  # type: ignore[override]
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = Metadata(self.reply)  # type: ignore[assignment]
        return metadata  # type: ignore[return-value]


class CorralClient(Client):
    """nats-py's client: its flusher lets one more loop turn's commands join each write, header
    names are checked for whitespace in one call, and delivery metadata is read cheaply."""

    msg_class = CorralMsg

    def __init__(self) -> None:
        super().__init__()
        self._inline: dict[int, Inline] = {}  #: sid -> the function its messages are handed to

    async def subscribe_inline(self, subject: str, handler: Inline) -> Subscription:
        """Subscribe with a plain function called in the read loop for each message (no task, no queue).

        ``handler`` must return quickly and not raise; an exception goes to the error callback.
        No ``max_msgs``: ``unsubscribe(limit=N)`` is not counted down for an inline subscription.
        """
        sub = await self.subscribe(subject)  # no callback: nats-py starts no task for it
        self._inline[sub._id] = handler
        return sub

    async def _init_request_sub(self) -> None:
        await super()._init_request_sub()
        for sid, sub in self._subs.items():  # the request inbox: its task is left with nothing to do
            if sub._cb == self._request_sub_callback:
                self._inline[sid] = self._resolve_request

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        super()._remove_sub(sid, max_msgs)
        self._inline.pop(sid, None)

    def _resolve_request(self, msg: Msg) -> None:
        """nats-py's ``_request_sub_callback``, run inline."""
        future = self._resp_map.get(msg.subject[len(self._inbox_prefix) + 22 + 2:])
        if future is not None and not future.done():
            future.set_result(msg)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        handler = self._inline.get(sid)
        sub = self._subs.get(sid) if handler is not None else None
        if handler is None or sub is None:
            return await super()._process_msg(sid, subject, reply, data, headers)
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub._received += 1
        msg = self._build_message(sid, subject, reply, data, await self._process_headers(headers))
        try:
            handler(msg)
        except Exception as e:  # noqa: BLE001 - a handler's bug must not stop the read loop
            await self._error_cb(e)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue  # also the empty lines
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue  # a malformed name: skipped, as nats-py does
            if key and len(key.split()) != 1:
                continue  # whitespace inside a name: not a header, as nats-py decides
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    async def _send_publish(self, subject: str, reply: str, payload: bytes, payload_size: int,
                            headers: dict[str, Any] | None) -> None:
        if subject == "":
            raise BadSubjectError
        if headers is None:
            cmd = pub_cmd(subject, reply, payload)
        else:
            cmd = hpub_cmd(subject, reply, header_block(headers), payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(cmd)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def _check_open(self, size: int) -> None:
        """``publish``'s checks of the connection, for a message of ``size`` payload bytes."""
        if self.is_closed:
            raise ConnectionClosedError
        if self.is_draining_pubs:
            raise ConnectionDrainingError
        if not self.is_connected and (self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size):
            raise OutboundBufferLimitError  # reconnecting with no room left to buffer, as nats-py decides

    def _queue(self, cmd: bytes) -> bool:
        """``_send_command`` without its coroutine: True if the buffer is now past its limit, which
        the caller answers with a forced flush."""
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        return self._max_pending_size > 0 and self._pending_data_size > self._max_pending_size

    async def send_ack(self, reply: str) -> None:
        """Queue an empty publish to ``reply`` (an ack), as ``publish(reply)`` does: the same checks of
        the connection and the same bytes, without the subject's character check (the server wrote it)."""
        self._check_open(0)
        self.stats["out_msgs"] += 1
        if self._queue(b"PUB " + reply.encode() + b"  0\r\n\r\n"):  # pub_cmd(reply, "", b"")
            await self._flush_pending(force_flush=True)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def publish_all(self, messages: Iterable[tuple[str, bytes, dict[str, str] | None]]) -> None:
        """Publish each (subject, payload, headers), no reply, as that many ``publish`` calls would:
        the same checks and bytes, in order (what is queued before an error stays queued and is
        written), and one flusher kick at the end instead of one each."""
        await self._queue_all((subject, payload, None if headers is None else header_block(headers))
                              for subject, payload, headers in messages)

    async def publish_batch_members(self, members: Iterable[tuple[str, bytes, dict[str, str]]], batch_id: str) -> None:
        """:meth:`publish_all` of the members of atomic batch ``batch_id`` before its commit, the
        n-th (from 1) with ``Nats-Batch-Id`` and ``Nats-Batch-Sequence: n`` after its own headers:
        the same bytes as with those two added to each one's dict, without a dict made per member."""
        batch = f"{BATCH_ID}: {batch_id}\r\n{BATCH_SEQUENCE}: "
        await self._queue_all((subject, payload, (header_lines(headers) + batch + str(n) + "\r\n\r\n").encode())
                              for n, (subject, payload, headers) in enumerate(members, start=1))

    async def _queue_all(self, messages: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Queue each (subject, payload, header block or None) with ``publish``'s checks, one kick at the end."""
        try:
            for subject, payload, block in messages:
                if not self._skip_subject_validation:
                    _validate_subject(subject)
                elif not subject:
                    raise BadSubjectError
                size = len(payload)
                self._check_open(size)  # per message: a forced flush below may let a close in
                if size > self._max_payload:
                    raise MaxPayloadError
                self.stats["out_msgs"] += 1
                self.stats["out_bytes"] += size
                if self._queue(pub_cmd(subject, "", payload) if block is None else hpub_cmd(subject, "", block, payload)):
                    await self._flush_pending(force_flush=True)
        finally:
            if self._pending_data_size and self._flush_queue is not None and self._flush_queue.empty():
                await self._flush_pending()

    async def _send_ping(self, future: asyncio.Future | None = None) -> None:
        """nats-py's PING, queued behind the commands before it instead of written ahead of them.

        nats-py writes a PING straight to the socket: with the flusher waiting a turn, a PING
        (``flush()``, ``drain()``) could overtake the publishes and unsubscribes queued before it,
        and its PONG then proved nothing about them (a drain lost messages published just before it).
        """
        self._pongs.append(asyncio.Future() if future is None else future)
        self._pending.append(PING_PROTO)
        self._pending_data_size += len(PING_PROTO)
        await self._flush_pending()

    async def _flusher(self) -> None:
        assert self._transport, "Client.connect must be called first"
        assert self._flush_queue, "Client.connect must be called first"
        while True:
            if not self.is_connected or self.is_connecting:
                break
            future: asyncio.Future = await self._flush_queue.get()
            try:
                for _ in range(COALESCE_TURNS):
                    await asyncio.sleep(0)  # let the tasks ready now add their commands first
                while not self._flush_queue.empty():  # their kicks are served by this write
                    waiter = self._flush_queue.get_nowait()
                    if not waiter.done():
                        waiter.set_result(None)
                if self._pending_data_size > 0:
                    self._transport.writelines(self._pending[:])
                    self._pending = []
                    self._pending_data_size = 0
                    await self._transport.drain()
            except OSError as e:
                await self._error_cb(e)
                await self._process_op_err(e)
                break
            except (asyncio.CancelledError, RuntimeError, AttributeError):
                break  # RuntimeError: the event loop is closed
            finally:
                if not future.done():
                    future.set_result(None)


def header_block(headers: dict[str, Any]) -> bytes:
    """The header block nats-py writes for ``headers``, byte for byte, each name checked only once.

    nats-py strips and checks every name against its token pattern on every publish, and passes
    every value through ``str.translate`` (about 1.2 µs a value: its table is a dict); a bot
    publishes the same few names thousands of times a second, and its values hold no line breaks.
    The block is built as one string and encoded once: 1.1 µs for a result's four headers, against
    4.1 µs part by part.

    Raises:
        BadHeaderError: a name that is not a header token, as nats-py raises it.
    """
    return (header_lines(headers) + "\r\n").encode()


def header_lines(headers: dict[str, Any]) -> str:
    """:func:`header_block` before its closing empty line, as text (more lines may follow)."""
    out = "NATS/1.0\r\n"
    for name, value in headers.items():
        prefix = _HEADER_NAMES.get(name)
        if prefix is None:
            key = name.strip()
            if key and not _HEADER_KEY_RE.fullmatch(key):
                raise BadHeaderError(key)
            prefix = key + ": " if key else ""
            if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
                _HEADER_NAMES[name] = prefix
        if prefix:
            value = value.strip()
            if "\r" in value or "\n" in value:
                value = value.translate(_HEADER_VALUE_NEWLINES)
            out += prefix + value + "\r\n"
    return out


async def subscribe_inline(nc: Client, subject: str, handler: Inline) -> Subscription:
    """:meth:`CorralClient.subscribe_inline` on corral's client; an ordinary callback subscription on another."""
    if isinstance(nc, CorralClient):
        return await nc.subscribe_inline(subject, handler)

    async def cb(msg: Msg) -> None:
        handler(msg)

    return await nc.subscribe(subject, cb=cb)


async def open_client(**options) -> Client:
    """``nats.connect(**options)``, with :class:`CorralClient`."""
    nc = CorralClient()
    await nc.connect(**options)
    return nc
