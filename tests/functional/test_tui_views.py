"""The dashboard's views against a real nats-server: filter and sort any table, search jobs by
payload through the ledger, describe a row, draw a workflow. Driven through Pilot; no sleeps."""

from __future__ import annotations

import pytest

from corral.core.messages import make_job
from corral.core.submit import submit_many
from tests.functional.test_tui import dashboard, table, until

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


def keys_in_order(app, selector: str) -> list[str]:
    return [r.key.value for r in table(app, selector).ordered_rows]


async def test_a_slash_filter_narrows_a_table_and_survives_live_refreshes_until_esc_clears_it(provisioned):
    """Given the overview's streams, when the operator types "/ dlq" and Enter, then one row shows through refreshes; Esc in the box clears it."""
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
    """Given streams holding 12 jobs and 0 dead letters, when the operator sorts by messages and flips, then the order follows the numbers and the cursor's row."""
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
