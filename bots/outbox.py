"""A bot's local outbox: results and events it could not publish, kept on disk until it can.

A bot that finishes a job while the server is unreachable cannot record the
result, and must not lose it. The result (and any event whose publish was not
acknowledged) is written here, one file per message, written to a temporary
name, fsynced, then renamed, so a crash leaves either a whole entry or none.
When the connection is back, the bot publishes every entry, oldest first,
before it claims new work:

* acknowledged: the entry is deleted;
* refused by the result fence: the job was completed elsewhere meanwhile (its
  unacked delivery was redelivered); the entry is dropped, which is correct;
* anything else: the entry stays for the next flush.

Entries carry their ``Nats-Msg-Id`` where one was set, so a flush interrupted
between publish and delete is deduplicated by the stream.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from corral.core.connect import publish_error
from corral.core.errors import ResultAlreadyRecordedError, TransportError
from corral.core.log import Logger

Publish = Callable[[str, bytes, dict[str, str] | None], Awaitable[object]]


@dataclass(frozen=True)
class Entry:
    path: Path
    subject: str
    data: bytes
    headers: dict[str, str] | None


class Outbox:
    def __init__(self, folder: Path, log: Logger) -> None:
        self.folder = Path(folder)
        self.log = log.bind(component="outbox")
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Path:
        """Store one message durably (fsynced) and return its file."""
        record = {"subject": subject, "data": base64.b64encode(data).decode(), "headers": headers}
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        final = self.folder / name
        os.replace(tmp, final)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.log.warning("outbox.stored", subject=subject)
        return final

    def discard(self, path: Path) -> None:
        """Forget an entry that was published some other way (the bot's own retry succeeded)."""
        path.unlink(missing_ok=True)

    def entries(self) -> list[Entry]:
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                out.append(Entry(path, rec["subject"], base64.b64decode(rec["data"]), rec.get("headers")))
            except (OSError, ValueError, KeyError) as e:
                self.log.error("outbox.unreadable", file=str(path), error=str(e))
        return out

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.json"))

    async def flush_all(self, js) -> None:
        """Publish every entry through ``js`` (a JetStream context).

        Raises:
            TransportError: an entry could not be published yet (the caller retries later).
        """
        if not len(self):
            return

        async def publish(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
            await js.publish(subject, data, headers=headers, timeout=5)

        await self.flush(publish)
        if len(self):
            raise TransportError(f"{len(self)} outbox entries still unpublished")

    async def flush(self, publish: Publish) -> int:
        """Publish every entry, oldest first; returns how many left the outbox."""
        done = 0
        for entry in self.entries():
            try:
                await publish(entry.subject, entry.data, entry.headers)
            except Exception as e:  # noqa: BLE001 - translated right here
                err = publish_error(e, entry.subject)
                if not isinstance(err, ResultAlreadyRecordedError):
                    self.log.warning("outbox.retry_later", subject=entry.subject, error=str(err) or type(err).__name__)
                    return done
                self.log.info("outbox.fenced", subject=entry.subject, detail="recorded elsewhere meanwhile")
            else:
                self.log.info("outbox.published", subject=entry.subject)
            entry.path.unlink(missing_ok=True)
            done += 1
        return done
