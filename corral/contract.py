"""The wire contract as data: one JSON Schema per message corral puts on NATS, in docs/schema/.

    python -m corral.contract --write docs/schema    regenerate after changing a message
    python -m corral.contract --check docs/schema    exit 1 (and say which) if the files differ

The schemas come from the msgspec Structs themselves (``msgspec.json.schema_components``):
titles and descriptions from their docstrings and ``#:`` field comments, plus
the few rules msgspec cannot see because they live in ``Job.validate``
(:data:`JOB_RULES`). This module sits at the top of the package, not in core,
because the messages span core, bots (the fleet keys) and ledger (the query
service), and core must not import those.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import msgspec

from corral.core.fleet import DesiredCount, SupervisorBeat
from corral.core import wire
from corral.core.limits import LimitDef
from corral.core.messages import BotHeartbeat, Event, Job, JobResult
from corral.core.names import PRIORITIES
from corral.ledger.query import QueryFailure, QueryReply, QueryRequest

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TOKEN = r"^[A-Za-z0-9_-]{1,128}$"
REGENERATE = "python -m corral.contract --write docs/schema"


@dataclass(frozen=True)
class Message:
    """One wire message: its file name, its type, and where it travels (the schema's description)."""

    name: str
    type: Any
    title: str
    where: str
    root: dict[str, Any] = field(default_factory=dict)  #: extra rules for the top-level value only


#: Rules ``Job.validate`` enforces on every job, nested steps included.
JOB_RULES: dict[str, dict[str, Any]] = {
    "kind": {"minLength": 1, "maxLength": 200},
    "id": {"pattern": r"^([A-Za-z0-9_-]{1,128})?$"},
    "queue": {"pattern": TOKEN},
    "priority": {"enum": list(PRIORITIES)},
    "timeout": {"exclusiveMinimum": 0, "maximum": 86_400},
    "max_attempts": {"minimum": 1, "maximum": 100},
    "unique_key": {"minLength": 1, "maxLength": 512},
    "group": {"pattern": TOKEN},
}
#: A submitted job (not a nested step) must carry its id.
SUBMITTED_JOB = {"required": ["kind", "id"], "properties": {"id": {"pattern": TOKEN}}}

SUBJECT_RULE = (
    "The subject is the truth: a bot runs the job on the subject's queue and priority; "
    "the body's `queue` and `priority`, if present, should match it."
)

MESSAGES: tuple[Message, ...] = (
    Message("job", Job, "Job", "The body of a message on `corral.jobs.<queue>.<priority>` (stream CORRAL_JOBS), "
            "also the body of a schedule and of a dead letter. `id` is required: a job without one is dead-lettered as invalid. "
            f"{SUBJECT_RULE}",
            SUBMITTED_JOB),
    Message("job-headers", wire.JobHeaders, "Job headers", "The headers of a message on `corral.jobs.<queue>.<priority>`."),
    Message("result", JobResult, "Job result",
            "The body of the one message under `corral.results.<job_id>.*` (stream CORRAL_RESULTS), on "
            "`corral.results.<job_id>.<bot>`, named by the bot that wrote it."),
    Message("event", Event, "Event", "The body of a message on `corral.events.job.<job_id>`, `corral.events.bot.<bot>` "
            "or `corral.events.ops.<action>` (stream CORRAL_EVENTS). Unset fields are omitted."),
    Message("heartbeat", BotHeartbeat, "Bot heartbeat", "The value of `$KV.corral_bots.<bot>` (KV bucket corral_bots), "
            "written with a per-key TTL; a deleted or expired key is a bot that is gone."),
    Message("dead-letter-headers", wire.DeadLetterHeaderMap, "Dead-letter headers",
            "The header map of a message on `corral.dlq.<queue>.<job_id>` (stream CORRAL_DLQ). Header values are strings."),
    Message("schedule-headers", wire.ScheduleHeaders, "Schedule headers",
            "The header map of a message on `corral.schedules.defs.<name>` (stream CORRAL_SCHEDULES); its body is a job (job.json)."),
    Message("control-request", wire.ControlRequest, "Bot control request", "A core NATS request on `corral.control.bot.<bot>`."),
    Message("control-reply", wire.ControlReply, "Bot control reply", "The reply to a request on `corral.control.bot.<bot>`."),
    Message("fleet-desired", DesiredCount, "Desired bot count", "The value of `$KV.corral_fleet.desired.<host>`."),
    Message("fleet-supervisor", SupervisorBeat, "Fleet supervisor heartbeat",
            "The value of `$KV.corral_fleet.supervisor.<host>`, with a per-key TTL."),
    Message("limit", LimitDef, "Kind limits",
            "The value of `$KV.corral_limits.def.<kind>`."),
    Message("limit-slot", wire.LeaseHolder, "Concurrency slot", "The value of `$KV.corral_limits.slot.<kind>.<i>`, with a TTL lease."),
    Message("limit-rate", wire.RateCount, "Rate window count", "The value of `$KV.corral_limits.rate.<kind>.<window>`, a JSON integer."),
    Message("lock", wire.LeaseHolder, "Lock", "The value of `$KV.corral_locks.<name>`, with a TTL lease."),
    Message("unique", wire.UniqueHolder, "Unique key", "The value of `$KV.corral_unique.<sha256 of unique_key>`."),
    Message("cancel", wire.CancelRequest, "Cancellation request", "The value of `$KV.corral_cancel.<job_id>`."),
    Message("group-member", wire.GroupMember, "Fan-in group member", "The value of `$KV.corral_groups.<group>.<job_id>`."),
    Message("ledger-query-request", QueryRequest, "Ledger query request",
            "A request on `corral.ledger.query`, the `query` endpoint of the `corral-ledger` service (NATS services API)."),
    Message("ledger-query-reply", QueryReply, "Ledger query reply", "The reply to a ledger query that ran."),
    Message("ledger-query-error", QueryFailure, "Ledger query error",
            "The body of a ledger reply carrying the `Nats-Service-Error` and `Nats-Service-Error-Code` headers."),
)


def _plain(text: str) -> str:
    """Docstring markup to Markdown: ``x`` to `x`, :class:`a.b.C` to `C`."""
    text = re.sub(r":(?:class|func|mod|data|meth):`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text).strip()


def _member_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comments of a class body, by attribute name (on the line above, or trailing)."""
    try:
        lines = inspect.getsourcelines(cls)[0][1:]
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("def ") or line.startswith("@"):
            break
        if line.startswith("#:"):
            pending.append(line[2:].strip())
            continue
        m = re.match(r"^(\w+)\s*[:=][^#]*(?:#:\s*(.*))?$", line)
        if m and (pending or m.group(2)):
            docs[m.group(1)] = _plain(" ".join([*pending, *([m.group(2)] if m.group(2) else [])]))
        pending = []
    return docs


def _classes(tp: Any) -> dict[str, type[msgspec.Struct] | type[Enum]]:
    """Every Struct and Enum class reachable from ``tp``, by the name msgspec gives its component."""
    found: dict[str, type[msgspec.Struct] | type[Enum]] = {}

    def walk(node: Any) -> None:
        cls = getattr(node, "cls", None)
        if isinstance(cls, type) and cls.__name__ not in found and issubclass(cls, (msgspec.Struct, Enum)):
            found[cls.__name__] = cls
            for f in getattr(node, "fields", ()):
                walk(f.type)
        for attr in ("item_type", "key_type", "value_type"):
            if hasattr(node, attr):
                walk(getattr(node, attr))
        for t in getattr(node, "types", ()) or ():
            walk(t)

    walk(msgspec.inspect.type_info(tp))
    return found


def _describe(defs: dict[str, Any], classes: dict[str, type[msgspec.Struct] | type[Enum]]) -> None:
    """Fill field and enum-member descriptions from the ``#:`` comments."""
    for name, schema in defs.items():
        cls = classes.get(name)
        if cls is None:
            continue
        docs = _member_docs(cls)
        schema["description"] = _plain(schema.get("description", ""))
        if issubclass(cls, Enum):
            items = [f"- `{m.value}`: {docs[m.name]}" for m in cls if m.name in docs]
            schema["description"] = "\n".join([schema["description"], "", *items]).strip()
            continue
        encoded = {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
        for attr, doc in docs.items():
            prop = schema.get("properties", {}).get(encoded.get(attr, attr))
            if prop is not None and "description" not in prop:
                prop["description"] = doc


def schema_for(msg: Message) -> dict[str, Any]:
    """The complete JSON Schema document of one message."""
    body = copy.deepcopy(msgspec.json.schema(msg.type))
    defs = body.pop("$defs", {})
    _describe(defs, _classes(msg.type))
    if "Job" in defs:
        for attr, rules in JOB_RULES.items():
            defs["Job"]["properties"][attr].update(rules)
    doc: dict[str, Any] = {"$schema": DRAFT, "$id": f"urn:corral:schema:{msg.name}", "title": msg.title}
    root_desc = defs.get(body.get("$ref", "").rsplit("/", 1)[-1], {}).get("description") or body.pop("description", "")
    doc["description"] = "\n\n".join(p for p in (msg.where, _plain(root_desc)) if p)
    doc.update(msg.root)
    doc.update({k: v for k, v in body.items() if k != "title"})
    if defs:
        doc["$defs"] = defs
    return doc


def render(msg: Message) -> str:
    return json.dumps(schema_for(msg), indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``, removing stale ``*.json`` files; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {f"{m.name}.json": render(m) for m in MESSAGES}
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text)
    return [directory / n for n in wanted]


def differences(directory: Path) -> list[str]:
    """What differs between ``directory`` and freshly generated schemas, one line per file."""
    wanted = {f"{m.name}.json": render(m) for m in MESSAGES}
    have = {p.name: p.read_text() for p in directory.glob("*.json")} if directory.is_dir() else {}
    out = [f"{n}: missing" for n in wanted if n not in have]
    out += [f"{n}: out of date" for n in wanted if n in have and have[n] != wanted[n]]
    out += [f"{n}: no such message (stale file)" for n in have if n not in wanted]
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.contract", description="Generate or check the wire schemas (docs/schema/).")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", type=Path, help="write one <message>.json per message into DIR")
    mode.add_argument("--check", metavar="DIR", type=Path, help="exit 1 if DIR differs from what --write would produce")
    args = parser.parse_args(argv)
    if args.write:
        files = write(args.write)
        print(f"wrote {len(files)} schemas to {args.write}")
        return 0
    diff = differences(args.check)
    for line in diff:
        print(f"{args.check}/{line}", file=sys.stderr)
    if diff:
        print(f"the wire schemas are out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1
    print(f"{len(MESSAGES)} schemas in {args.check} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
