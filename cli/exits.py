"""The `corral` command's exit codes, and the one place an exception becomes one (docs/cli.md).

A script can tell apart: it worked (0), it failed (1), it was asked wrongly (2),
what it named does not exist (3), there was nothing to do (4), the server could
not be reached (5). Every code comes with one line on stderr that says why;
nothing a user types and nothing a server answers ends in a traceback. Only a
bug in corral itself still shows one.
"""

from __future__ import annotations

import os
import sys

import nats.errors
import nats.js.errors

from corral.core.errors import (
    ConfigError, CorralError, InvalidJobError, NotFoundError, NothingToDoError, TransportError, UnknownKindError,
)

OK = 0  #: the command did what it was asked
FAILED = 1  #: it ran and failed, or the server refused it
USAGE = 2  #: bad flags, arguments or input: nothing was sent
NOT_FOUND = 3  #: the job, queue, host, schedule, group, bot, dead letter or kind named does not exist
NOTHING_DONE = 4  #: nothing changed: already ended, already submitted (duplicates), already in that state
UNREACHABLE = 5  #: no NATS server answered (not running, wrong --server, network, JetStream off)
INTERRUPTED = 130  #: Ctrl-C (128 + SIGINT)
BROKEN_PIPE = 141  #: the reader of stdout went away, as in `corral status --json | head` (128 + SIGPIPE)

#: code -> meaning, in the order docs/cli.md lists them (a unit test keeps the two in step).
TABLE = {
    OK: "done",
    FAILED: "failed: the command ran and did not succeed, or the server refused it",
    USAGE: "usage: a bad flag, argument, job argument or input file; nothing was sent",
    NOT_FOUND: "not found: the job, queue, host, schedule, group, bot, dead letter or kind named does not exist",
    NOTHING_DONE: "nothing done: already ended, already submitted (every job a duplicate), already removed",
    UNREACHABLE: "server unreachable: no NATS server answered in time",
    INTERRUPTED: "interrupted (Ctrl-C)",
    BROKEN_PIPE: "stdout closed by its reader (a pipe into `head`); the command stops quietly",
}

_TRANSPORT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
              nats.errors.NoServersError, ConnectionError, TimeoutError)


def leaf(e: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (anyio task groups wrap them)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def explain(e: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an exception the user or the server caused; None for a bug."""
    e = leaf(e)
    if isinstance(e, NotFoundError | UnknownKindError):
        return NOT_FOUND, str(e)
    if isinstance(e, NothingToDoError):
        return NOTHING_DONE, str(e)
    if isinstance(e, ConfigError | InvalidJobError):
        return USAGE, str(e)
    if isinstance(e, TransportError):
        return UNREACHABLE, str(e)
    if isinstance(e, CorralError):
        return FAILED, str(e)
    if isinstance(e, nats.js.errors.NotFoundError):
        return NOT_FOUND, f"the server has no such resource: {e.description or e}"
    if isinstance(e, nats.js.errors.APIError):
        return FAILED, f"the server refused: {e.description or e} (error {e.err_code})"
    if isinstance(e, _TRANSPORT):
        return UNREACHABLE, f"NATS did not answer: {str(e) or type(e).__name__}"
    if isinstance(e, OSError):
        return FAILED, str(e)
    return None


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
