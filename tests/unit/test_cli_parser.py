"""The `corral` parser tree and the exit-code table, checked without a server."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from corral.cli import exits, main, parser, subparsers

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _options(p: argparse.ArgumentParser):
    for action in p._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        yield action


def test_every_option_and_argument_of_every_subcommand_has_help_text():
    """Given the whole parser tree, when every action is listed, then none lacks a help text."""
    root = parser()
    missing = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}" for p in [root, *subparsers(root)] for a in _options(p)
               if not a.help]
    assert missing == []


def _leaves() -> list[str]:
    root = parser()
    return [p.prog.removeprefix("corral ") for p in subparsers(root)
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


@pytest.mark.parametrize("command", _leaves())
def test_a_wrong_flag_prints_the_subcommands_own_usage_and_exits_2(command, capsys):
    """Given any subcommand, when it gets a flag it does not know, then its own usage is printed and the exit is 2."""
    with pytest.raises(SystemExit) as stop:
        main([*command.split(), "--no-such-flag"])
    err = capsys.readouterr().err
    assert stop.value.code == exits.USAGE
    assert err.startswith(f"usage: corral {command}")  # not the top-level usage, whatever the complaint


def test_an_unknown_flag_after_valid_arguments_is_named_under_the_subcommands_usage(capsys):
    """Given a complete submit, when a stray flag follows, then submit's usage and error name that flag."""
    with pytest.raises(SystemExit) as stop:
        main(["submit", "sum", "a=1", "--bogus"])
    err = capsys.readouterr().err
    assert stop.value.code == exits.USAGE
    assert err.startswith("usage: corral submit") and "corral submit: error: unrecognized arguments: --bogus" in err


def test_the_exit_code_table_in_the_docs_matches_the_code():
    """Given docs/cli.md, when its exit-code table is read, then it lists exactly the codes cli/exits.py returns."""
    rows = re.findall(r"^\|\s*`?(\d+)`?\s*\|", DOCS.read_text(), flags=re.M)
    assert [int(r) for r in rows] == list(exits.TABLE)


def test_nested_single_exceptions_are_explained_by_their_leaf():
    """Given an error wrapped in task-group exception groups, when explained, then its own code and message are used."""
    from corral.core.errors import NotFoundError

    wrapped = ExceptionGroup("outer", [ExceptionGroup("inner", [NotFoundError("no such queue")])])
    assert exits.explain(wrapped) == (exits.NOT_FOUND, "no such queue")
    assert exits.explain(ValueError("a bug")) is None


def test_a_chaos_run_that_stalls_is_a_failed_run_not_an_unreachable_server():
    """Given a chaos run that never reaches a state it waits for, its exit is 1 (failed) with the wait
    named, not 5, which says no NATS server answered."""
    from corral.harness.chaos import ChaosStalledError

    e = ChaosStalledError("chaos: timed out after 30s waiting for bots holding jobs")
    assert exits.explain(e) == (exits.FAILED, "chaos: timed out after 30s waiting for bots holding jobs")
