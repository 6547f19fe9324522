"""Apply declarations idempotently: create what is missing, update what may change in place.

The comparison is on the raw API JSON the server returns (nats-py's config
classes drop fields they do not know), restricted to the fields a declaration
sets: server-filled defaults and metadata never count as drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from collections.abc import Iterable
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS

from corral.core.connect import connect
from corral.core.jsapi import api
from corral.core.log import Logger, get_logger
from corral.core.names import JOBS_STREAM, consumer_op, stream_op
from corral.core.settings import Settings
from corral.core.errors import CorralError, MissingResourceError
from corral.streams import Declaration, load_declarations
from corral.streams.migrate import HOLDING, REFUSAL


class Action(StrEnum):
    CREATED = "created"  #: did not exist; created
    UNCHANGED = "unchanged"  #: exists with the declared config
    UPDATED = "updated"  #: existed with other values; updated in place
    CONFLICT = "conflict"  #: differs and the server refused the update; left as it is


@dataclass(frozen=True)
class Report:
    decl: Declaration
    action: Action
    diff: dict[str, tuple[Any, Any]]  #: field -> (live, declared)
    error: str = ""

    def line(self) -> str:
        text = f"{self.decl.kind:8} {self.decl.name:28} {self.action}"
        if self.diff:
            text += "  " + ", ".join(f"{k}: {live!r} -> {want!r}" for k, (live, want) in self.diff.items())
        if self.error:
            text += f"  ({self.error})"
        return text


def diff(live: dict[str, Any], declared: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields the declaration sets whose live value differs (descriptions ignored).

    Inside a list of objects (``sources``) only the declared keys count: a migrated jobs
    stream's source carries an ``opt_start_seq`` the declaration does not (streams/migrate.py).
    """
    out = {}
    for key, want in declared.items():
        if key in ("description", "metadata"):
            continue
        have = live.get(key)
        if not _same(have, want) and not (want in (0, False, "", [], {}) and have is None):
            out[key] = (have, want)
    return out


def _same(have: Any, want: Any) -> bool:
    """``have`` equals ``want``, where objects need only agree on the keys ``want`` names."""
    if isinstance(want, list) and isinstance(have, list):
        return len(want) == len(have) and all(_same(h, w) for h, w in zip(have, want, strict=True))
    if isinstance(want, dict) and isinstance(have, dict):
        return all(_same(have.get(k), v) for k, v in want.items())
    return have == want


async def live_config(nc: NATS, decl: Declaration) -> dict[str, Any] | None:
    """The resource's config as the server stores it, or None if it does not exist."""
    subject = (
        consumer_op("INFO", decl.stream, decl.name) if decl.kind == "consumer" else stream_op("INFO", decl.name)
    )
    try:
        return (await api(nc, subject))["config"]
    except MissingResourceError:
        return None


async def apply(nc: NATS, decl: Declaration) -> Report:
    """Bring one resource to its declaration, or report why it cannot be."""
    live = await live_config(nc, decl)
    if decl.kind == "consumer":
        create = consumer_op("CREATE", decl.stream, decl.name)
        body = lambda action: {**decl.body, "action": action}  # noqa: E731
    else:
        create = stream_op("CREATE", decl.name)
        body = lambda action: decl.body  # noqa: E731
    if live is None:
        await api(nc, create, body("create"))
        return Report(decl, Action.CREATED, {})
    changes = diff(live, decl.config)
    if not changes:
        return Report(decl, Action.UNCHANGED, {})
    if decl.name == JOBS_STREAM and live.get("retention") == "workqueue" and decl.config.get("retention") == "limits":
        return Report(decl, Action.CONFLICT, changes, REFUSAL)
    update = create if decl.kind == "consumer" else stream_op("UPDATE", decl.name)
    try:
        await api(nc, update, body("update"))
    except nats.js.errors.APIError as e:
        return Report(decl, Action.CONFLICT, changes, f"server refused the update: {e.description}")
    return Report(decl, Action.UPDATED, changes)


async def provision(nc: NATS, decls: list[Declaration]) -> list[Report]:
    """Apply every declaration in order (streams before their consumers).

    Raises:
        CorralError: a jobs-stream migration was left half-way; only ``--migrate`` may go on.
    """
    if await live_config(nc, Declaration("stream", HOLDING, {})) is not None:
        raise CorralError(f"a migration of CORRAL_JOBS was interrupted ({HOLDING} exists): "
                          "run `corral provision --migrate` again to finish it")
    return [await apply(nc, d) for d in decls]


async def provision_url(
    target: str | Settings, decls: Iterable[Declaration] | None = None, *, wait: bool = False, log: Logger | None = None,
) -> list[Report]:
    """Connect to ``target`` (a server URL, or settings with credentials), apply ``decls``, close.

    ``decls`` defaults to every shipped declaration. ``wait`` retries the connection until
    the server answers (a server that is still starting); otherwise one attempt.

    Raises:
        TransportError: the server did not answer (``wait`` false) or stopped answering.
    """
    settings = Settings(servers=(target,)) if isinstance(target, str) else target
    nc = await connect(settings, log or get_logger("provision"), wait=wait)
    try:
        return await provision(nc, list(load_declarations() if decls is None else decls))
    finally:
        await nc.close()


async def create_missing(nc: NATS) -> None:
    """Create declared resources that do not exist (after a restore); never update one."""
    for decl in load_declarations():
        if await live_config(nc, decl) is None:
            await apply(nc, decl)
