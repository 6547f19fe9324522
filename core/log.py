"""Structured logging: one logfmt line per event, on stderr.

    ts=2026-11-23T16:20:01.123Z level=info logger=bot event=job.succeeded job=ab12.. bot=bot-1 ms=1.2

Lines are meant for operators (grep, `jq`-free) and for tests alike. Set
``CORRAL_LOG_FORMAT=json`` at the entry point for one JSON object per line.

Levels: ``info`` (the default) and ``debug``, chosen once at the entry point
(``corral --log-level debug``). Per-job lines on a job's happy path are debug: at
thousands of jobs a second a line per job costs the bot more than the job. A
disabled ``debug`` call is one attribute test; its fields are never formatted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

Sink = Callable[[dict[str, Any]], None]


def _fmt_value(v: Any) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\n'):
        return json.dumps(s)
    return s


class Logger:
    """A tiny structured logger; ``log.info("job.succeeded", job=id)``."""

    def __init__(self, name: str, *, fmt: str = "logfmt", stream: TextIO | None = None, debugging: bool = False,
                 _sinks: list[Sink] | None = None, **bound: Any):
        self.name = name
        self.fmt = fmt
        self.stream = stream
        self.debugging = debugging
        self.bound = bound
        #: shared with every logger bound from this one, so a sink added later reaches them all
        self._sinks: list[Sink] = [] if _sinks is None else _sinks

    def bind(self, **fields: Any) -> Logger:
        # Copied attribute by attribute, not through __init__: a bot binds a logger for every job.
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child.bound = {**self.bound, **fields}
        return child

    def add_sink(self, sink: Sink) -> None:
        """Also hand every info-and-above record (a dict) to ``sink``; it must not block (it runs inline)."""
        self._sinks.append(sink)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        # Positional-only event names above mean a field called "event" cannot raise a TypeError
        # (a log call must never take a daemon down); it is kept under another key instead.
        if "event" in fields:
            fields["event_field"] = fields.pop("event")
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record = {"ts": ts, "level": level, "logger": self.name, "event": event, **self.bound, **fields}
        record = {k: v for k, v in record.items() if v is not None}
        if self.fmt == "json":
            line = json.dumps(record, default=str)
        else:
            line = " ".join(f"{k}={_fmt_value(v)}" for k, v in record.items())
        out = self.stream or sys.stderr
        try:
            out.write(line + "\n")
            out.flush()
        except (ValueError, OSError):  # stream closed at interpreter exit
            pass
        if level != "debug":
            for sink in self._sinks:
                try:
                    sink(record)
                except Exception:  # noqa: BLE001 - a log line must never take a daemon down
                    pass

    def debug(self, event: str, /, **fields: Any) -> None:
        if self.debugging:
            self._emit("debug", event, fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._emit("error", event, fields)


_format = "logfmt"
_debugging = False
LEVELS = ("info", "debug")


def configure(fmt: str, level: str = "info") -> None:
    """Choose ``logfmt`` or ``json``, and ``info`` or ``debug``, for every logger made afterwards (entry points only)."""
    global _format, _debugging
    if fmt not in ("logfmt", "json"):
        raise ValueError(f"log format {fmt!r} must be logfmt or json")
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} must be one of {', '.join(LEVELS)}")
    _format, _debugging = fmt, level == "debug"


def get_logger(name: str, **bound: Any) -> Logger:
    return Logger(name, fmt=_format, debugging=_debugging, **bound)
