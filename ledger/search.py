"""Jobs by payload: ``args.user=42 kind=resize state=failed bot=local-2 since=10m`` as ledger SQL.

The dashboard's jobs search sends what :func:`parse` builds through
:func:`corral.ledger.client.ask` with its ``params``.

The operator's words never become SQL text: each ``key=value`` picks one fixed
clause from :data:`CLAUSES` and its value travels as a bound parameter (a JSON
path too, after its segments are checked). Anything else is a
:class:`corral.ledger.errors.InvalidSearchError` naming the word and what is allowed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from corral.ledger.errors import InvalidSearchError

MAX_ROWS = 200  #: jobs listed per search, newest first
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
STATES = ("succeeded", "dead", "failed", "unknown")
KEYS = ("args.<field>", "kind", "queue", "state", "bot", "id", "since", "until")

#: key -> the clause it adds (``?`` for its bound values); o is job_outcomes, j the jobs table.
CLAUSES = {
    "kind": "o.kind = ?",
    "queue": "o.queue = ?",
    "id": "o.job_id LIKE ? || '%'",
    "bot": "(o.bot = ? OR o.job_id IN (SELECT job_id FROM events WHERE bot = ?))",
    "since": "o.created_at >= make_timestamp(?)",
    "until": "o.created_at < make_timestamp(?)",
}
SELECT = ("SELECT o.job_id, o.kind, o.queue, o.outcome, o.failures, o.bot, o.created_at, o.dead_reason, j.args "
          "FROM job_outcomes o JOIN jobs j USING (job_id)")


@dataclass(frozen=True)
class PayloadQuery:
    sql: str
    params: list[Any] = field(default_factory=list)


def span(text: str, word: str) -> float:
    """``10m`` in seconds."""
    if not (m := _SPAN.match(text)):
        raise InvalidSearchError(f"{word!r}: a time span is a number and s, m, h or d (10m, 2h, 1d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _clause(key: str, value: str, word: str, now: float) -> tuple[str, list[Any]]:
    if key.startswith("args."):
        path = key.removeprefix("args.")
        if not _PATH.match(path):
            raise InvalidSearchError(f"{word!r}: an args field is letters, digits and _ joined by dots (args.user.id)")
        return "json_extract_string(j.args, ?) = ?", ["$." + path, value]
    if key == "state":
        if value not in STATES:
            raise InvalidSearchError(f"{word!r}: state is one of {', '.join(STATES)}")
        return ("o.failures > 0", []) if value == "failed" else ("o.outcome = ?", [value])
    if key not in CLAUSES:
        raise InvalidSearchError(f"{word!r}: unknown key {key!r}; the keys are {', '.join(KEYS)}")
    if key in ("since", "until"):
        return CLAUSES[key], [round((now - span(value, word)) * 1_000_000)]
    return CLAUSES[key], [value] * CLAUSES[key].count("?")


def parse(text: str, now: float | None = None) -> PayloadQuery:
    """The parameterised query for ``text`` (words ``key=value``, all must hold).

    Raises:
        InvalidSearchError: empty, a word without ``=``, an unknown key or state, a bad span or path.
    """
    now = time.time() if now is None else now
    words = text.split()
    if not words:
        raise InvalidSearchError(f"type key=value words; the keys are {', '.join(KEYS)}")
    clauses, params = [], []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key or not value:
            raise InvalidSearchError(f"{word!r}: every word is key=value (args.user=42 kind=resize since=10m)")
        sql, values = _clause(key, value, word, now)
        clauses.append(sql)
        params.extend(values)
    return PayloadQuery(f"{SELECT} WHERE {' AND '.join(clauses)} ORDER BY o.created_at DESC NULLS LAST LIMIT {MAX_ROWS}", params)
