"""The dashboard's views against a real nats-server: filter and sort any table, search jobs by
payload through the ledger, describe a row, draw a workflow. Driven through Pilot; no sleeps."""

from __future__ import annotations

import msgspec
import pytest

from corral.core.messages import Job, make_job, new_id
from corral.core.submit import submit, submit_many
from corral.tui.screens.describe import DescribeScreen
from corral.tui.screens.search import SearchScreen
from corral.tui.screens.workflow import WorkflowScreen
from tests.conftest import eventually
from tests.functional.test_tui import cell, dashboard, rows_where, table, until
from tests.functional.test_tui_analytics import ledger, results_in_ledger  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


def keys_in_order(app, selector: str) -> list[str]:
    return [str(r.key.value) for r in table(app, selector).ordered_rows]


async def test_a_slash_filter_narrows_a_table_and_survives_live_refreshes_until_esc_clears_it(provisioned):
    """Given the overview's streams, when the operator types "/ dlq" Enter, then one row shows through refreshes; Esc clears it."""
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: table(app, "#streams").row_count >= 4, what="the streams")
        total = table(app, "#streams").row_count
        table(app, "#streams").focus()
        await pilot.press("slash", *"dlq", "enter")
        assert app.focused is table(app, "#streams")
        await until(pilot, lambda: keys_in_order(app, "#streams") == ["CORRAL_DLQ"], what="only the DLQ row")
        seen = app.store.snapshot_at
        await until(pilot, lambda: app.store.snapshot_at > seen + 1.5, what="two more snapshots")
        assert keys_in_order(app, "#streams") == ["CORRAL_DLQ"]
        assert table(app, "#streams").border_title == f'filter "dlq" 1/{total}'
        await pilot.press("slash")
        await pilot.press("escape")
        await until(pilot, lambda: table(app, "#streams").row_count == total, what="every stream back")
        assert not table(app, "#streams").border_title
        assert app.focused is table(app, "#streams")


async def test_o_cycles_the_sort_column_and_capital_o_flips_it_by_value_not_by_text(provisioned, js):
    """Given 12 stored jobs, when the operator sorts by messages and flips, then rows follow the numbers and the cursor its row."""
    await submit_many(js, [make_job("sum", {"a": i, "b": 1}) for i in range(12)])
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        streams = await until(pilot, lambda: table(app, "#streams").row_count >= 4
                              and table(app, "#streams").value("CORRAL_JOBS", "messages") == "12" and table(app, "#streams"),
                              what="12 jobs stored")
        streams.focus()
        await pilot.press("o", "o")  # stream, then messages
        assert streams.border_title == "sort messages ▲"
        assert "messages ▲" in [str(c.label) for c in streams.columns.values()]
        order = keys_in_order(app, "#streams")
        counts = [float(streams.value(k, "messages")) for k in order]
        assert counts == sorted(counts) and order[-1] == "CORRAL_JOBS"
        streams.move_cursor(row=streams.get_row_index("CORRAL_JOBS"))
        await pilot.press("O")
        assert streams.border_title == "sort messages ▼"
        assert keys_in_order(app, "#streams")[0] == "CORRAL_JOBS" and streams.selected_key() == "CORRAL_JOBS"
        seen = app.store.snapshot_at
        await until(pilot, lambda: app.store.snapshot_at > seen + 1.5, what="two more snapshots")
        assert keys_in_order(app, "#streams")[0] == "CORRAL_JOBS" and streams.selected_key() == "CORRAL_JOBS"


SAGA = ('{"kind": "echo", "args": {"step": "reserve stock"}, "compensate": {"kind": "echo", "args": {"undo": "release stock"}},'
        ' "then": [{"kind": "echo", "args": {"step": "charge card"}, "compensate": {"kind": "echo", "args": {"undo": "refund card"}},'
        ' "then": [{"kind": "fail", "args": {"message": "shipping failed: the carrier API answered 503 for every one of our'
        ' requests, which is a long error an operator must read whole"}, "max_attempts": 1}]}]}')


def saga_job() -> Job:
    return msgspec.structs.replace(msgspec.json.decode(SAGA, type=Job), id=new_id())


async def test_enter_on_a_dead_letter_describes_it_whole_and_w_draws_the_saga_with_its_compensations(provisioned, bots, js):
    """Given a saga whose third step dies, when its dead letter is opened and w pressed, then the reason and both compensations show."""
    bots(provisioned.url, "b1")
    job = saga_job()
    await submit(js, job)
    dead_id = f"{job.id}-then0-then0"
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: rows_where(app, "#dlq-table", "full_id", dead_id), timeout=30, what="the dead letter")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DescribeScreen), what="the describe screen")
        shown = await until(pilot, lambda: "status: dead" in app.screen.text() and app.screen.text().replace("\n", " "),
                            what="the job's history")
        assert "which is a long error an operator must read whole" in " ".join(shown.split())
        assert "Corral-Reason" in shown and '"shipping failed' in " ".join(shown.split())  # the original bytes, as JSON
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, WorkflowScreen), what="the workflow screen")

        def settled() -> list[str] | None:
            lines = app.screen.lines()
            done = [ln for ln in lines if "compensation" in ln and "succeeded" in ln]
            return lines if done and any(ln.strip().startswith("then 0 · echo") and "succeeded" in ln for ln in lines[4:]) else None
        lines = await until(pilot, settled, timeout=30, what="the compensations to succeed")
        await pilot.press("r")  # read again: the undo chain's second step may land after the first read
        lines = await until(pilot, lambda: (ls := app.screen.lines()) and len(ls) >= 5 and all("succeeded" in ln for ln in ls[-2:]) and ls,
                            timeout=30, what="the whole undo chain succeeded")
        assert [ln.split(" · ")[0].strip() for ln in lines] == ["job", "then 0", "then 0", "compensation", "then 0"]
        assert "dead" in lines[2] and "◀" in lines[2]
        assert all("succeeded" in lines[i] for i in (0, 1, 3, 4))


async def test_enter_on_a_bot_describes_its_heartbeat_with_cpu_and_memory(provisioned, bots):
    """Given a live bot, when the operator presses Enter on its row, then its describe view shows its counters, CPU and RSS."""
    bots(provisioned.url, "b1")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: cell(app, "#bots-table", "b1", "state") == "ready", what="b1 ready")
        table(app, "#bots-table").focus()
        await pilot.press("enter")
        text = await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and app.screen.text(), what="the bot's describe view")
        assert "done / failed / dead" in text and "MiB" in text and "% now" in text and "running jobs (0)" in text
        await pilot.press("escape")
        assert app.current_mode == "bots" and not isinstance(app.screen, DescribeScreen)


async def test_a_payload_search_finds_the_job_by_its_args_and_opens_its_timeline(provisioned, bots, ledger, js):  # noqa: F811
    """Given 6 sum jobs in the ledger, when the operator searches args.a=3 kind=sum since=10m, then one row; Enter opens its timeline."""
    bots(provisioned.url, "b1")
    jobs = [make_job("sum", {"a": i, "b": 1}) for i in range(6)]
    await submit_many(js, jobs)
    await eventually(lambda: _at_least(js, 6), timeout=30, what="6 results in the ledger")
    app = dashboard(provisioned.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.store.connected, what="the connection")
        await pilot.press("3", "f", *"args.a=3 colour=red", "enter")
        assert not isinstance(app.screen, SearchScreen)  # refused where it was typed, with the reason
        await pilot.press("ctrl+a", "ctrl+k", *"args.a=3 kind=sum state=succeeded bot=b1 since=10m", "enter")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), what="the search results")
        await until(pilot, lambda: table(app, "#search-table").row_count == 1, timeout=15, what="one match")
        assert table(app, "#search-table").value(jobs[3].id, "state") == "succeeded"
        assert '"a":3' in table(app, "#search-table").value(jobs[3].id, "args").replace(" ", "")
        await pilot.press("enter")
        text = await until(pilot, lambda: isinstance(app.screen, DescribeScreen) and "status: succeeded" in app.screen.text()
                           and app.screen.text(), what="the job's timeline")
        assert jobs[3].id in text.replace("\n", "") and "result:" in text


async def _at_least(js, n: int) -> bool:
    return await results_in_ledger(js) >= n
