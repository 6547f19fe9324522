"""`corral group submit|show` as an operator types it: real subprocesses, a real server, a real bot."""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.functional.test_cli import corral


def jobs_stream_messages(url: str) -> int:
    status = json.loads(corral("status", "--json", url=url).stdout)
    return next(s for s in status["streams"] if s["name"] == "CORRAL_JOBS")["messages"]


def show(url: str, group: str) -> dict:
    return json.loads(corral("group", "show", group, "--json", url=url).stdout)


def test_a_group_submitted_from_a_file_runs_its_members_then_its_callback_once(provisioned, bots, tmp_path):
    """Given 3 members (one dies) submitted twice as a group, when a bot runs, then one group completes with every outcome."""
    url = provisioned.url
    members = tmp_path / "members.ndjson"
    members.write_text('{"kind": "sum", "args": {"a": 1, "b": 2}}\n\n{"kind": "sum", "args": {"a": 3, "b": 4}}\n'
                       '{"kind": "fail", "args": {}, "max_attempts": 1, "id": "doomed"}\n')
    first = corral("group", "submit", "--file", str(members), "--callback", "echo", "report=nightly", url=url)
    again = corral("group", "submit", "--file", str(members), "--callback", "echo", "report=nightly", url=url)
    assert first.returncode == 0 and again.returncode == 4, first.stderr + again.stderr  # 4: nothing new
    assert "0 of 3 member(s) submitted, 3 already submitted before" in again.stderr
    group = first.stdout.strip()
    assert group.startswith("group-") and again.stdout.strip() == group  # the same input is the same group
    assert "callback echo runs as" in first.stderr and jobs_stream_messages(url) == 3
    waiting = show(url, group)
    assert (waiting["done"], waiting["size"], waiting["callback"]["state"]) == (0, 3, "waiting")

    bots(url, "b1")
    done = wait_for(lambda: (s := show(url, group))["callback"]["state"] == "succeeded" and s, timeout=30,
                    what="the callback to succeed")
    outcomes = {m["id"]: m["outcome"] for m in done["members"]}
    assert (done["done"], done["size"], done["callback"]["kind"]) == (3, 3, "echo")
    assert outcomes.pop("doomed") == "dead" and list(outcomes.values()) == ["succeeded", "succeeded"]
    callback = json.loads(corral("job", done["callback"]["id"], "--json", url=url).stdout)
    assert callback["result"]["value"]["report"] == "nightly"
    assert set(callback["result"]["value"]["members"]) == {m["id"] for m in done["members"]}
    text = corral("group", "show", group, url=url).stdout
    assert f"group {group}: 3/3 members finished (2 succeeded, 1 dead)" in text
    assert f"callback echo as {group}-done: succeeded" in text


def test_bad_group_input_is_refused_with_exit_2_and_submits_nothing(provisioned, tmp_path):
    """A missing file, a bad line (named by number), a file with no jobs, a bad callback argument: exit 2, nothing sent."""
    url = provisioned.url
    bad_line = tmp_path / "bad.ndjson"
    bad_line.write_text('{"kind": "sum", "args": {"a": 1}}\n{"kind": "sum", "args": [1]}\n')
    empty = tmp_path / "empty.ndjson"
    empty.write_text("\n  \n")
    good = tmp_path / "good.ndjson"
    good.write_text('{"kind": "sum"}\n')
    cases = {
        "cannot read": ("--file", str(tmp_path / "missing.ndjson"), "--callback", "echo"),
        "bad.ndjson:2: not a valid job": ("--file", str(bad_line), "--callback", "echo"),
        "a group needs at least one member": ("--file", str(empty), "--callback", "echo"),
        "must look like key=value": ("--file", str(good), "--callback", "echo", "oops"),
    }
    for message, args in cases.items():
        out = corral("group", "submit", *args, url=url)
        assert out.returncode == 2 and message in out.stderr, (message, out.stderr)
    assert jobs_stream_messages(url) == 0


def test_showing_an_unknown_group_says_there_is_no_record(provisioned):
    """`corral group show` for a group nobody submitted exits 3 and says why it may be missing."""
    out = corral("group", "show", "no-such-group", url=provisioned.url)
    assert out.returncode == 3 and "no record of group no-such-group" in out.stderr


def test_a_callback_running_its_first_delivery_shows_as_started_not_pending(provisioned, bots, tmp_path):
    """Given a finished group whose callback a bot is running (a first delivery: no event yet), when shown, then it is started."""
    url = provisioned.url
    members = tmp_path / "members.ndjson"
    members.write_text('{"kind": "sum", "args": {"a": 1, "b": 2}}\n')
    group = corral("group", "submit", "--file", str(members), "--callback", "sleep", "seconds=60", url=url).stdout.strip()
    bots(url, "b1")
    callback = f"{group}-done"
    wait_for(lambda: json.loads(corral("job", callback, "--json", url=url).stdout or "{}").get("state") == "active", timeout=30,
             what="b1 to take the callback")
    shown = show(url, group)
    assert (shown["done"], shown["size"], shown["callback"]["state"]) == (1, 1, "started")
    assert f"callback sleep as {callback}: started" in corral("group", "show", group, url=url).stdout
