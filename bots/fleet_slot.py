"""One slot of a fleet: keeps one ``corral bot`` child process alive while it is wanted.

A slot is a small actor run as one task in the supervisor's task group:

    wanted, no process  -> start it
    process exits while wanted, unasked  -> back off (exponential + jitter), start again
    no longer wanted    -> SIGTERM (the bot finishes its jobs and exits 0),
                           SIGKILL after ``stop_timeout`` seconds
    not wanted, exited  -> the task returns

A slot that is wanted again while its bot drains restarts as soon as the old
process is gone: the bot name can only be reclaimed once its holder is dead.
The slot knows nothing of NATS; the supervisor decides what is hung and is told
of every exit through ``on_exit``.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import anyio
import anyio.abc

from corral.core.log import Logger


class SlotState(StrEnum):
    IDLE = "idle"  #: no process (not started yet, or stopped because it is no longer wanted)
    RUNNING = "running"  #: the bot process is alive
    DRAINING = "draining"  #: asked to stop (SIGTERM sent); waiting for it to exit
    BACKOFF = "backoff"  #: died unexpectedly; waiting before the next start


@dataclass(frozen=True)
class Backoff:
    """Restart spacing: ``min(base * 2**(exits-1), cap)`` seconds plus up to ``jitter`` of it."""

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.25

    def delay(self, exits: int) -> float:
        """Seconds to wait before the start that follows the ``exits``-th unexpected exit in a row."""
        return min(self.base * 2 ** max(exits - 1, 0), self.cap) * (1 + random.uniform(0, self.jitter))


@dataclass(frozen=True)
class SlotExit:
    """What the supervisor hears when a slot's process ends."""

    slot: int
    name: str
    pid: int | None
    code: int | None  #: exit status; negative: killed by that signal; None: could not start
    uptime: float  #: seconds the process ran
    requested: bool  #: the supervisor asked it to stop (scale down, shutdown)
    hung: bool  #: the supervisor killed it as hung
    exits: int  #: unexpected exits in a row (0 after a requested stop)
    retry_in: float | None  #: seconds until the next start, if one is due
    crash_loop: bool  #: ``exits`` reached the crash-loop threshold


class Launcher(Protocol):
    """Starts the bot process of one slot (the seam a test or a container runtime replaces)."""

    async def __call__(self, name: str) -> anyio.abc.Process: ...


@dataclass(frozen=True)
class SlotPolicy:
    """How a slot restarts and stops. Times are seconds."""

    backoff: Backoff = Backoff()
    #: A process that ran this long before dying starts a fresh backoff sequence.
    stable_after: float = 30.0
    #: SIGKILL a draining bot that has not exited after this long (exceed the bot's drain timeout).
    stop_timeout: float = 45.0
    #: Unexpected exits in a row that count as a crash loop (logged, reported, still retried).
    crash_loop_after: int = 3


class Slot:
    """One numbered slot; ``wanted`` is set by the supervisor, ``run()`` is the slot's task."""

    def __init__(self, number: int, name: str, launcher: Launcher, policy: SlotPolicy,
                 on_exit: Callable[[SlotExit], Awaitable[None]], log: Logger) -> None:
        self.number = number
        self.name = name
        self.launcher = launcher
        self.policy = policy
        self.on_exit = on_exit
        self.log = log.bind(slot=number, bot=name)
        self.state = SlotState.IDLE
        self.process: anyio.abc.Process | None = None
        self.started = 0.0  #: monotonic (anyio clock) start of the current process
        self.last_seen = 0.0  #: monotonic time the supervisor last saw this process's liveness key
        self.exits = 0
        self.last_code: int | None = None
        self.restarts = 0  #: unexpected exits over the slot's life (``exits`` resets after a stable run)
        self.last_exit = ""  #: exited, hung or crash_loop
        self.last_exit_at: float | None = None  #: Unix seconds
        self.started_at: float | None = None  #: Unix seconds the current process started
        self.retry_at: float | None = None
        self._wanted = True
        self._changed = anyio.Event()
        self._stop_requested = False
        self._hung = False

    # -- control (called by the supervisor) ------------------------------------------------------

    @property
    def wanted(self) -> bool:
        return self._wanted

    @wanted.setter
    def wanted(self, value: bool) -> None:
        if value != self._wanted:
            self._wanted = value
            self._changed.set()
            self._changed = anyio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def retry_in(self) -> float | None:
        return None if self.retry_at is None else max(self.retry_at - anyio.current_time(), 0.0)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the running process, if any (a second SIGTERM makes a draining bot hand jobs back)."""
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass  # exited between the check and the signal

    def kill_hung(self) -> None:
        """SIGKILL a process the supervisor judged hung; it restarts like any crash."""
        if self.pid is not None:
            self._hung = True
            self.signal(signal.SIGKILL)

    # -- the slot's task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a process running while wanted; return once unwanted and stopped."""
        while self._wanted:
            if self.retry_at is not None:
                self.state = SlotState.BACKOFF
                await self._wait_until(self.retry_at)
                if not self._wanted:
                    break
            await self._run_once()
        self.state = SlotState.IDLE
        self.retry_at = None

    async def _run_once(self) -> None:
        self._stop_requested = self._hung = False
        self.started = self.last_seen = anyio.current_time()
        self.started_at = time.time()
        self.retry_at = None
        try:
            self.process = await self.launcher(self.name)
        except OSError as e:
            self.log.error("fleet.start_failed", error=str(e))
            await self._after_exit(None, None)
            return
        self.state = SlotState.RUNNING
        self.log.info("fleet.started", pid=self.process.pid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stop_when_unwanted)
            code = await self.process.wait()
            tg.cancel_scope.cancel()
        await self._after_exit(self.process.pid, code)

    async def _after_exit(self, pid: int | None, code: int | None) -> None:
        now = anyio.current_time()
        uptime = now - self.started
        if self._stop_requested and not self._hung:
            self.exits = 0
            self.log.info("fleet.stopped", pid=pid, code=code, uptime=round(uptime, 1))
        else:
            self.exits = 1 if uptime >= self.policy.stable_after else self.exits + 1
            self.last_code = code
            self.restarts += 1
            self.last_exit_at = time.time()
            crash_loop = self.exits >= self.policy.crash_loop_after
            self.last_exit = "crash_loop" if crash_loop else "hung" if self._hung else "exited"
            self.retry_at = now + self.policy.backoff.delay(self.exits) if self._wanted else None
        self.state = SlotState.BACKOFF if self.retry_at is not None else SlotState.IDLE
        self.started_at = None
        await self.on_exit(SlotExit(
            slot=self.number, name=self.name, pid=pid, code=code, uptime=uptime,
            requested=self._stop_requested and not self._hung, hung=self._hung, exits=self.exits,
            retry_in=self.retry_in(), crash_loop=self.exits >= self.policy.crash_loop_after,
        ))

    async def _stop_when_unwanted(self) -> None:
        """Drain the process once it is no longer wanted; kill it if the drain overruns."""
        while self._wanted:
            await self._changed.wait()
        self._stop_requested = True
        self.state = SlotState.DRAINING
        self.log.info("fleet.draining", pid=self.pid)
        self.signal(signal.SIGTERM)
        # This task is cancelled as soon as the process exits; reaching the end means it overran.
        await anyio.sleep(self.policy.stop_timeout)
        self.log.warning("fleet.stop_timeout", pid=self.pid, after=self.policy.stop_timeout)
        self.signal(signal.SIGKILL)

    async def _wait_until(self, deadline: float) -> None:
        """Wait for ``deadline`` (anyio clock), returning early if the slot stops being wanted."""
        while self._wanted and anyio.current_time() < deadline:
            with anyio.move_on_after(deadline - anyio.current_time()):
                await self._changed.wait()
