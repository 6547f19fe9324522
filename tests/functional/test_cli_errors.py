"""Every subcommand with bad input, as real `corral` processes against a real server: the exit code is the
documented one (docs/cli.md) and no traceback is printed.

One server and one bot serve the whole table; each row prepares its own state under its own names, so
the rows run in parallel threads and the table costs a few process start-ups per core, not one per row.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.cli import exits
from corral.harness.procs import BotProcess
from corral.harness.server import EmbeddedServer
from corral.core.spawn import corral_argv
from tests.conftest import provision_sync, wait_for

TRACEBACK = "Traceback (most recent call last)"


def corral(url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = corral_argv(*args)
    if "--server" not in args:
        cmd += ["--server", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@dataclass
class Row:
    name: str
    args: tuple[str, ...]  #: may hold {placeholders} that ``setup`` fills in
    code: int
    setup: Callable[[str, Path], dict[str, str]] | None = None  #: (url, scratch dir) -> placeholders
    check: Callable[[subprocess.CompletedProcess, str], object] = lambda out, url: True
    env: dict[str, str] = field(default_factory=dict)


def once(*args: str, code: int = 0, **fill: str):
    """A setup that runs one command first (it must exit ``code``) and fills in ``fill``."""
    def setup(url: str, tmp: Path) -> dict[str, str]:
        out = corral(url, *args)
        assert out.returncode == code, out.stderr
        return fill
    return setup


def steps(*setups):
    """Several setups in order; the placeholders of all of them."""
    def setup(url: str, tmp: Path) -> dict[str, str]:
        fill: dict[str, str] = {}
        for step in setups:
            fill.update(step(url, tmp))
        return fill
    return setup


def ended_job(url: str, tmp: Path) -> dict[str, str]:
    corral(url, "submit", "sum", "a=1", "b=2", "--id", "ended-1")
    wait_for(lambda: json.loads(corral(url, "job", "ended-1", "--json").stdout or "{}").get("result"), timeout=60,
             what="job ended-1 to succeed")
    return {}


def delayed_job(url: str, tmp: Path) -> dict[str, str]:
    out = corral(url, "submit", "sum", "a=1", "b=2", "--delay", "60")
    assert out.returncode == 0 and "scheduled @at" in out.stderr, out.stderr
    return {"id": out.stdout.strip()}  # the id alone: `id=$(corral submit ... --delay 60)` works


def twice_cancelled(url: str, tmp: Path) -> dict[str, str]:
    fill = delayed_job(url, tmp)
    assert corral(url, "cancel", fill["id"]).returncode == 0
    return fill


def submitted_file(name: str, *command: str):
    def setup(url: str, tmp: Path) -> dict[str, str]:
        path = tmp / f"{name}.ndjson"
        path.write_text("".join(f'{{"kind": "sum", "args": {{"a": {i}, "b": 1}}, "id": "{name}-{i}"}}\n' for i in range(4)))
        out = corral(url, *[c.replace("{file}", str(path)) for c in command])
        assert out.returncode == 0, out.stderr
        return {"file": str(path)}
    return setup


def host_gone(host: str):
    return lambda out, url: host not in corral(url, "fleet-status", "--json").stdout


def no_kind_enqueued(out, url) -> bool:
    return "no live bot serves kind 'nosuchkind'" in out.stderr and corral(url, "job", "strict-kind").returncode == exits.NOT_FOUND


ROWS = [
    Row("pause of an unknown queue is not found", ("pause", "nosuchqueue"), exits.NOT_FOUND,
        check=lambda out, url: "no queue nosuchqueue/normal" in out.stderr),
    Row("resume of an unknown queue is not found", ("resume", "nosuchqueue"), exits.NOT_FOUND),
    Row("drain of a bot that is not running is not found", ("drain", "ghost"), exits.NOT_FOUND),
    Row("cancel of an id nobody submitted is not found", ("cancel", "nonexistent"), exits.NOT_FOUND,
        check=lambda out, url: "requested" not in out.stdout + out.stderr),
    Row("cancel of a job that already ended does nothing", ("cancel", "ended-1"), exits.NOTHING_DONE, setup=ended_job,
        check=lambda out, url: "already ended (succeeded)" in out.stderr),
    Row("a second cancel of a scheduled job does nothing", ("cancel", "{id}"), exits.NOTHING_DONE, setup=twice_cancelled),
    Row("removing a schedule twice fails the second time", ("schedule", "rm", "twice"), exits.NOT_FOUND,
        setup=steps(once("schedule", "add", "twice", "echo", "--every", "1h"), once("schedule", "rm", "twice"))),
    Row("removing a limit that is not set is not found", ("limit", "rm", "nokind"), exits.NOT_FOUND),
    Row("replaying a dead letter that does not exist is not found", ("dlq", "replay", "999", "--yes"), exits.NOT_FOUND),
    Row("showing an unknown group is not found", ("group", "show", "nosuchgroup"), exits.NOT_FOUND),
    Row("resubmitting the same group file submits nothing new and says so", ("group", "submit", "--file", "{file}", "--callback", "echo"),
        exits.NOTHING_DONE, setup=submitted_file("grp", "group", "submit", "--file", "{file}", "--callback", "echo"),
        check=lambda out, url: "0 of 4 member(s) submitted, 4 already submitted" in out.stderr and out.stdout.startswith("group-")),
    Row("resubmitting the same job file submits nothing new", ("submit", "--file", "{file}"), exits.NOTHING_DONE,
        setup=submitted_file("file", "submit", "--file", "{file}")),
    Row("resubmitting the same job id submits nothing new", ("submit", "sum", "a=1", "b=2", "--id", "dup-1"), exits.NOTHING_DONE,
        setup=once("submit", "sum", "a=1", "b=2", "--id", "dup-1"), check=lambda out, url: out.stdout == "dup-1\n"),
    Row("scaling a host without a supervisor is refused and leaves no phantom host", ("scale", "5", "--host", "nosuchhost"),
        exits.NOT_FOUND, check=lambda out, url: "--create" in out.stderr and host_gone("nosuchhost")(out, url)),
    Row("scale 0 removes a host created with --create", ("scale", "0", "--host", "made"), exits.OK,
        setup=once("scale", "2", "--host", "made", "--create"), check=host_gone("made")),
    Row("scale 0 of a host with no count does nothing", ("scale", "0", "--host", "never"), exits.NOTHING_DONE),
    Row("a delayed job's id alone is on stdout and `job` says it is scheduled", ("job", "{id}"), exits.OK, setup=delayed_job,
        check=lambda out, url: "is scheduled (@at " in out.stdout),
    Row("`job` of an unknown id is not found", ("job", "nonexistent"), exits.NOT_FOUND),
    Row("`job --follow` of an unknown id fails fast", ("job", "nonexistent", "--follow"), exits.NOT_FOUND),
    Row("`job` of an unusable id is a usage error", ("job", "a.b"), exits.USAGE),
    Row("a wrong flag on a subcommand prints that subcommand's usage", ("submit", "sum", "--bogus"), exits.USAGE,
        check=lambda out, url: out.stderr.startswith("usage: corral submit")),
    Row("a wrong flag on a nested subcommand prints its usage", ("dlq", "list", "--bogus"), exits.USAGE,
        check=lambda out, url: out.stderr.startswith("usage: corral dlq list")),
    Row("`up --help` explains --port and --http-port", ("up", "--help"), exits.OK,
        check=lambda out, url: "NATS client port" in out.stdout and "monitoring port" in out.stdout),
    Row("a kind no live bot serves is refused with --strict", ("submit", "nosuchkind", "--strict", "--id", "strict-kind"),
        exits.NOT_FOUND, check=no_kind_enqueued),
    Row("a kind no live bot serves is submitted with a warning", ("submit", "nosuchkind"), exits.OK,
        check=lambda out, url: "warning: no live bot serves kind 'nosuchkind'" in out.stderr and len(out.stdout.split()) == 1),
    Row("arguments that do not fit the kind are refused", ("submit", "sum", "a="), exits.USAGE,
        check=lambda out, url: "argument a must be a number" in out.stderr and out.stdout == ""),
    Row("a schedule with arguments that do not fit the kind is refused", ("schedule", "add", "bad", "sum", "a=1", "--every", "1h"),
        exits.USAGE, check=lambda out, url: "needs argument b" in out.stderr),
    Row("a bad count is a usage error", ("populate", "lots"), exits.USAGE),
    Row("an unknown report is a usage error", ("report", "nosuch"), exits.USAGE),
    Row("restoring from a folder that is no backup is a usage error", ("restore", "/nonexistent"), exits.USAGE),
    Row("a malformed handler is a usage error", ("bot", "--handler", "bad"), exits.USAGE),
    Row("a bad fleet host is a usage error", ("fleet", "--host", "a.b"), exits.USAGE),
    Row("a limit without a limit is a usage error", ("limit", "set", "sum"), exits.USAGE),
    Row("status at 80 columns shows consumer names whole", ("status",), exits.OK, env={"COLUMNS": "80"},
        check=lambda out, url: "work-default-normal" in out.stdout),
    Row("an unreachable server is a one-line error, quickly", ("status", "--server", "nats://127.0.0.1:1"), exits.UNREACHABLE,
        check=lambda out, url: out.stderr.startswith("corral: cannot reach NATS") and len(out.stderr.splitlines()) == 1),
    Row("a stopped server is unreachable for submit", ("submit", "sum", "a=1", "b=2", "--server", "{stopped}"), exits.UNREACHABLE),
    Row("a stopped server is unreachable for job", ("job", "x", "--server", "{stopped}"), exits.UNREACHABLE),
]


@dataclass
class Outcome:
    out: subprocess.CompletedProcess
    seconds: float
    url: str


def _run(row: Row, url: str, stopped: str, tmp: Path) -> Outcome:
    fill = {"stopped": stopped, **(row.setup(url, tmp) if row.setup else {})}
    start = time.monotonic()
    out = corral(url, *(a.format(**fill) for a in row.args), env=row.env, timeout=30)
    return Outcome(out, time.monotonic() - start, url)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Iterator[dict[str, Outcome]]:
    """Every row's outcome, against one server with one live bot (and the URL of a stopped server)."""
    tmp = tmp_path_factory.mktemp("cli-errors")
    server = EmbeddedServer(tmp / "nats").start()
    stopped = EmbeddedServer(tmp / "stopped").start()
    stopped_url = stopped.url
    stopped.kill()
    bot = None
    try:
        provision_sync(server.url)
        bot = BotProcess(server.url, "table-bot", tmp)
        wait_for(bot.ready, timeout=60, what="the table's bot")
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = {row.name: pool.submit(_run, row, server.url, stopped_url, tmp) for row in ROWS}
            yield {name: f.result() for name, f in futures.items()}
    finally:
        if bot is not None:
            bot.close()
        server.kill()


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_bad_input_gets_its_documented_exit_code_and_no_traceback(table, row):
    """Given the row's setup, when its command runs, then it exits with the row's code, without a traceback."""
    outcome = table[row.name]
    out = outcome.out
    assert TRACEBACK not in out.stderr, out.stderr
    assert out.returncode == row.code, f"exit {out.returncode}, stdout {out.stdout!r}, stderr {out.stderr!r}"
    assert row.check(out, outcome.url), f"stdout {out.stdout!r}, stderr {out.stderr!r}"


def test_an_unreachable_server_is_reported_within_seconds(table):
    """Given no server on the port, when status runs, then it gives up within 10 s (a bounded first connect)."""
    assert table["an unreachable server is a one-line error, quickly"].seconds < 10


def test_a_closed_pipe_ends_the_command_quietly(table):
    """Given stdout whose reader is gone, when `status --json` writes to it, then it exits 141 without a traceback."""
    url = table["`job` of an unknown id is not found"].url
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte, as with `| head` done early
    try:
        proc = subprocess.run(corral_argv("status", "--json", "--server", url),
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == exits.BROKEN_PIPE and proc.stderr == ""
