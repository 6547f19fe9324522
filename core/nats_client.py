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

**Header parsing.** nats-py checks each received header name for whitespace one
character at a time, through a generator: a few dozen generator steps per job message
(every job carries ``Nats-Msg-Id`` and ``Nats-Expected-Stream``). The same rule is one
``str.split`` here (``str.split`` and ``str.isspace`` agree on what whitespace is).

Both overrides are nats-py's own methods (``Client._flusher`` and
``Client._parse_header_lines`` in nats-py 2.16) with only that change; everything else
about the client is unchanged. If a later nats-py renames them, the overrides are simply
never called and the client behaves as stock nats-py (tests/functional/test_nats_client.py
checks that they still override something).
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

#: Extra turns of the event loop the flusher waits before a write.
COALESCE_TURNS = 1


class CorralClient(Client):
    """nats-py's client: its flusher lets one more loop turn's commands join each write, and
    header names are checked for whitespace in one call."""

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


async def open_client(**options) -> Client:
    """``nats.connect(**options)``, with :class:`CorralClient`."""
    nc = CorralClient()
    await nc.connect(**options)
    return nc
