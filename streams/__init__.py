"""Stream, consumer and bucket declarations, kept as JetStream API JSON beside this file.

Each ``stream-*.json`` / ``kv-*.json`` is a StreamConfig and each
``consumer-*.json`` a CreateConsumer request, exactly as the JetStream API and
``nats stream add --config`` take them (durations in nanoseconds). They are the
single source of truth; :mod:`corral.streams.provision` applies them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.core.errors import ConfigError

HERE = Path(__file__).parent

__all__ = ["HERE", "Declaration", "load_declarations"]


@dataclass(frozen=True)
class Declaration:
    """One resource: a stream (KV buckets are streams) or a consumer."""

    kind: str  #: "stream" or "consumer"
    name: str
    body: dict[str, Any] = field(hash=False)
    path: Path | None = None

    @property
    def stream(self) -> str:
        return self.body["stream_name"] if self.kind == "consumer" else self.name

    @property
    def config(self) -> dict[str, Any]:
        """The config the server stores: the body of a stream, ``config`` of a consumer."""
        return self.body["config"] if self.kind == "consumer" else self.body

    def replicated(self, replicas: int) -> Declaration:
        """This stream with ``replicas`` replicas; consumers are returned as they are.

        ``persist_mode: async`` (events) is an R1-only setting, so it is dropped above R1:
        replicated streams already acknowledge before every replica has fsynced.
        """
        if self.kind != "stream":
            return self
        body = copy.deepcopy(self.body)
        body["num_replicas"] = replicas
        if replicas > 1:
            body.pop("persist_mode", None)
        return Declaration(self.kind, self.name, body, self.path)

    def with_config(self, **changes: Any) -> Declaration:
        """A copy with config fields replaced (tests and profiles shorten deadlines this way)."""
        body = copy.deepcopy(self.body)
        (body["config"] if self.kind == "consumer" else body).update(changes)
        return Declaration(self.kind, self.name, body, self.path)


def _load(path: Path) -> Declaration:
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON declaration: {e}") from e
    if path.name.startswith("consumer-"):
        return Declaration("consumer", body["config"]["durable_name"], body, path)
    return Declaration("stream", body["name"], body, path)


def load_declarations(folder: Path = HERE) -> list[Declaration]:
    """Every declaration in ``folder``: streams first (consumers need them), by file name."""
    decls = [_load(p) for p in sorted(folder.glob("*.json"))]
    return sorted(decls, key=lambda d: d.kind != "stream")


def by_name(decls: list[Declaration]) -> dict[str, Declaration]:
    return {d.name: d for d in decls}
