"""The operator's actions from the dashboard: drain, pause, cancel, scale, replay, purge, submit, schedule.

:class:`ActionsApp` is the layer of :class:`corral.tui.app.CorralApp` that changes the system.
Each action runs as an app worker in the ``actions`` group, so no NATS call ever blocks the
UI; a failure ends the worker and :meth:`corral.tui.live.LiveApp.worker_state` tells the
operator what failed. Every change is recorded as :attr:`ActionsApp.actor`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from textual import work

from corral.core.bulk import Frozen, run_cancel, run_dead
from corral.core.cancel import request_cancel
from corral.core.control import actor as default_actor
from corral.core.control import drain_bot, pause_queue, record, resume_queue
from corral.core.dlq import DeadLetter, purge, replay
from corral.core.fleet import write_desired
from corral.core.schedules import add_schedule, remove_schedule
from corral.core.settings import Settings
from corral.core.submit import submit_many
from corral.tui.live import LiveApp
from corral.tui.screens.confirm import ALT, ConfirmScreen
from corral.tui.screens.dead_letters import DeadLettersScreen
from corral.tui.screens.schedule_form import ScheduleRequest
from corral.tui.screens.submit import SubmitRequest, SubmitScreen


class ActionsApp(LiveApp):
    """A live app with the operator's actions, each a worker recorded as :attr:`actor`."""

    def __init__(self, settings: Settings, monitor_url: str | None = None, *, actor: str | None = None) -> None:
        super().__init__(settings, monitor_url)
        self.actor = actor or default_actor(settings)
        self._scale_lock = asyncio.Lock()  #: scale writes land in key-press order

    def confirm_then(self, question: str, then: Callable[[], object], *, yes: str = "Yes", no: str = "Cancel",
                     alt: tuple[str, Callable[[], object]] | None = None) -> None:
        """Ask first; run ``then`` only on yes (or ``alt``'s callable when its answer is picked)."""
        def answered(ok: bool | str | None) -> None:
            if ok == ALT and alt is not None:
                alt[1]()
            elif ok is True:
                then()
        self.push_screen(ConfirmScreen(question, yes=yes, no=no, alt=alt[0] if alt else None), answered)

    # -- bots, queues and jobs ----------------------------------------------------------------

    @work(name="drain", group="actions", exit_on_error=False)
    async def drain_bot(self, bot: str) -> None:
        nc, _ = self._connected()
        reply = await drain_bot(nc, bot, self.actor)
        self.notify(f"{bot} is draining (was {reply.get('state', '?')})", title="drain")

    @work(name="pause", group="actions", exit_on_error=False)
    async def pause_queue(self, queue: str, priority: str) -> None:
        nc, _ = self._connected()
        await pause_queue(nc, queue, self.actor, priority)
        self.notify(f"queue {queue}/{priority} paused", title="pause")

    @work(name="resume", group="actions", exit_on_error=False)
    async def resume_queue(self, queue: str, priority: str) -> None:
        nc, _ = self._connected()
        await resume_queue(nc, queue, self.actor, priority)
        self.notify(f"queue {queue}/{priority} resumed", title="resume")

    @work(name="cancel", group="actions", exit_on_error=False)
    async def cancel_job(self, job_id: str) -> None:
        """Ask every bot to cancel a job (``corral cancel``; ``request_cancel`` records it as this operator)."""
        nc, _ = self._connected()
        await request_cancel(nc, job_id, self.actor)
        self.notify(f"job {job_id}: cancel requested, the bots act on it within a second", title="cancel")

    def scale_host(self, host: str, count: int) -> None:
        """Set ``desired.<host>`` in a worker; that host's supervisor starts or drains bots to match.

        The store shows ``count`` at once, so a second key press builds on this one.
        """
        self.store.scale_sent(host, count)
        self._write_scale(host, count)

    @work(name="scale", group="actions", exit_on_error=False)
    async def _write_scale(self, host: str, count: int) -> None:
        ok = False
        try:
            async with self._scale_lock:
                nc, js = self._connected()
                await write_desired(js, host, count, self.actor)
                ok = True
        finally:
            self.store.scale_done(host, count, ok)
        await record(nc, "scale", self.actor, f"scale {host} to {count}")
        self.notify(f"{host}: desired {count} bot(s)", title="scale")

    # -- dead letters ---------------------------------------------------------------------------

    def _dlq_progress(self, total: int) -> Callable[[int], None]:
        screen = self.screen

        def progress(done: int) -> None:
            if isinstance(screen, DeadLettersScreen) and screen.is_attached:
                screen.progress(done, total)
        return progress

    async def _on_dead_letters(self, total: int, act: Callable[[JetStreamContext, Callable[[int], None]], Awaitable[int]]) -> int:
        """``act(js, progress)`` on ``total`` dead letters, with the screen's progress bar; the list reloads however it ends."""
        progress = self._dlq_progress(total)
        try:
            return await act(self._connected_js(), progress)
        finally:
            progress(total)
            self._maybe_reload_dead(force=True)

    @work(name="replay", group="actions", exit_on_error=False)
    async def replay_dead(self, letters: list[DeadLetter]) -> None:
        n = await self._on_dead_letters(len(letters), lambda js, progress: replay(js, letters, actor=self.actor, progress=progress))
        self.notify(f"replayed {n} dead letter(s)", title="replay")

    @work(name="purge", group="actions", exit_on_error=False)
    async def purge_dead(self, letters: list[DeadLetter]) -> None:
        n = await self._on_dead_letters(len(letters), lambda js, progress: purge(js, letters, actor=self.actor, progress=progress))
        self.notify(f"purged {n} dead letter(s)", title="purge")

    @work(name="bulk", group="actions", exit_on_error=False)
    async def bulk_dead(self, frozen: Frozen) -> None:
        """Replay or purge exactly the previewed dead letters, audited as this operator."""
        n = await self._on_dead_letters(frozen.count, lambda js, progress: run_dead(js, frozen, actor=self.actor, progress=progress))
        self.notify(f"{frozen.done_verb} {n} of {frozen.count} dead letter(s)", title=frozen.action)

    @work(name="bulk_cancel", group="actions", exit_on_error=False)
    async def bulk_cancel(self, frozen: Frozen) -> None:
        """Ask every bot to cancel exactly the previewed jobs, audited as this operator."""
        nc, _ = self._connected()
        n = await run_cancel(nc, frozen, actor=self.actor)
        self.notify(f"cancel requested for {n} job(s), the bots act on it within a second", title="cancel")

    # -- submitting and scheduling ------------------------------------------------------------

    @work(name="submit", group="actions", exit_on_error=False)
    async def submit_jobs(self, req: SubmitRequest, form: SubmitScreen) -> None:
        js = self._connected_js()
        jobs = req.jobs()
        summary = await submit_many(js, jobs, progress=lambda done: form.progress(done, req.count))
        text = f"accepted {summary.accepted}" + (f" ({summary.duplicates} duplicates)" if summary.duplicates else "")
        if summary.refused:
            text += f", refused {len(summary.refused)}: {summary.refused[0][2]}"
        if req.count == 1 and summary.accepted:
            text += f"  ·  job {jobs[0].id}"
        form.status(text, error=bool(summary.refused))
        self.notify(text, title="submit", severity="error" if summary.refused else "information")

    @work(name="schedule", group="actions", exit_on_error=False)
    async def add_schedule(self, req: ScheduleRequest) -> None:
        """Create or replace a schedule (``corral schedule add``), recorded as this operator."""
        nc, _ = self._connected()
        s = await add_schedule(nc, req.name, req.job, req.spec, self.actor)
        self.refresh_features(force=True)
        self.notify(f"schedule {s.name}: {req.job.kind} {s.spec}", title="schedule added")

    @work(name="unschedule", group="actions", exit_on_error=False)
    async def remove_schedule(self, name: str) -> None:
        """Remove a schedule (``corral schedule rm``), recorded as this operator."""
        nc, _ = self._connected()
        await remove_schedule(nc, name, self.actor)
        self.refresh_features(force=True)
        self.notify(f"schedule {name} removed", title="schedule removed")
