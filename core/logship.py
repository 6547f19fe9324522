"""Log lines to NATS: a process's info-and-above records, published to ``corral.logs.<host>.<process>``.

The dashboard's Logs screen and a bot's describe view read them back from the
small ``CORRAL_LOGS`` stream (an hour, 64 MiB; docs/resources.md). Shipping is
fire-and-forget and never in the way of the work: the logger's sink only
appends to a bounded buffer (the oldest line is dropped when it is full), one
task publishes the buffer on core NATS, lines are dropped while the connection
is down, and any publish error is swallowed. The log files stay as they are.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from corral.core.history import walk
from corral.core.log import Logger
from corral.core.names import LOGS_STREAM, LOGS_SUBJECT, log_subject, process_log_subject

BUFFER = 1000  #: lines held while the publisher catches up; older ones are dropped
SCAN_FACTOR = 50  #: how far back (in lines of everyone, per line wanted) one process's recent lines are looked for
MAX_LINE = 8000  #: bytes of one published line at most (the stream refuses larger messages)


class LogShipper:
    """The sink of one process's logger; :func:`ship_logs` makes and installs it."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self.dropped = 0
        self._lines: deque[bytes] = deque(maxlen=BUFFER)
        self._task: asyncio.Task | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.nc.is_connected:
            self.dropped += 1  # never queue behind a dead connection: the file has the line
            return
        self._lines.append(json.dumps(record, default=str).encode()[:MAX_LINE])
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            except RuntimeError:
                pass  # logged outside the event loop (at exit): the line stays in the file only

    async def _drain(self) -> None:
        """Publish everything buffered, then end; the next line starts a new drain."""
        while self._lines:
            data = self._lines.popleft()
            try:
                await self.nc.publish(self.subject, data)
            except (nats.errors.Error, OSError):
                self.dropped += 1


def ship_logs(nc: NATS, log: Logger, process: str, host: str | None = None) -> LogShipper:
    """Publish ``log``'s lines (and those of every logger bound from it) as ``process`` on this host."""
    shipper = LogShipper(nc, log_subject(host or socket.gethostname(), process))
    log.add_sink(shipper)
    return shipper


class LogLine(msgspec.Struct, frozen=True):
    """One published line, as the dashboard shows it."""

    subject: str
    record: dict

    @property
    def process(self) -> str:
        return self.subject.rsplit(".", 1)[-1]

    @property
    def level(self) -> str:
        return str(self.record.get("level", ""))


def decode_line(subject: str, data: bytes) -> LogLine | None:
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return LogLine(subject, record) if isinstance(record, dict) else None


async def recent_lines(js: JetStreamContext, process: str | None = None, limit: int = 200) -> list[LogLine]:
    """The last ``limit`` stored lines, oldest first: of one process (a bot's name) or of all."""
    subject = process_log_subject(process) if process else LOGS_SUBJECT
    info = await js.stream_info(LOGS_STREAM)
    lines: deque[LogLine] = deque(maxlen=limit)
    # One direct get per line: look back only as far as ``limit`` lines of everyone (or of one of ~50 processes).
    back = limit * (SCAN_FACTOR if process else 1)
    async for msg in walk(js, LOGS_STREAM, subject, start_seq=max(info.state.last_seq - back + 1, info.state.first_seq, 1)):
        if (line := decode_line(msg.subject or "", msg.data or b"")) is not None:
            lines.append(line)
    return list(lines)
