"""Job handlers: the built-in kinds and the registry that maps a kind to a callable.

A handler is ``handler(args: dict, ctx: JobContext) -> value``, sync or async.
Its return value must be JSON-encodable; it becomes the job's result. Raising
fails the attempt (the job is retried with backoff, then dead-lettered).

Register your own on the bot's command line as import strings::

    corral bot --handler resize=myapp.images:resize
    corral bot --handler resize=myapp.images:resize@process

A sync handler runs in a thread of the bot, which nothing can interrupt: on a
cancellation, a timeout or a drain the thread is abandoned and runs on. With
``@process`` it runs in a child process instead (bots/isolation.py), which those
stop for real: :class:`HandlerCancelled` is raised inside the handler, and the
process is killed if it has not ended shortly after.

Kinds are only ever resolved from the bot's own registry, never from a job
payload, so a submitter cannot make a bot import arbitrary code.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from corral.core.errors import ConfigError, InvalidJobError, JobError, UnknownKindError
from corral.core.messages import Job, new_id
from corral.core.names import DEFAULT_PRIORITY


#: The ``--handler`` suffix that runs a sync kind in a child process.
PROCESS_SUFFIX = "@process"
#: The ``--handler`` suffix of a kind whose handler takes a list: ``@batch[:SIZE[:WAIT]]``.
BATCH_SUFFIX = "@batch"


class HandlerCancelled(BaseException):
    """Raised inside a ``@process`` handler when its job is cancelled, times out or its bot drains.

    A BaseException, like anyio's cancellation, so ``except Exception`` does not swallow it. The
    handler may clean up in ``finally``; its process is killed soon after regardless
    (``corral.bots.isolation.KILL_GRACE``).
    """


@dataclass
class JobContext:
    """What a handler may know about its run. ``attempt`` counts from 1."""

    job: Job
    attempt: int
    bot: str
    #: ``ctx.progress(42, "resizing")``: percent and an optional message, shown live by
    #: `corral job`, the dashboard and the bot's heartbeat. Safe from sync handlers' threads,
    #: and from ``@process`` handlers (it travels to the bot over the child's pipe).
    progress: Callable[..., None] = field(default=lambda percent, message=None: None, repr=False)
    #: The bot's JetStream context (for ``lock``); None outside a bot and in ``@process`` handlers.
    js: Any = field(default=None, repr=False)

    def lock(self, name: str, *, lease: float = 30.0, wait: float = 30.0):
        """``async with ctx.lock("invoices"):``: a fleet-wide leased lock (core/locks.py).

        Raises:
            JobError: there is no connection to lock with (outside a bot, or a ``@process`` handler).
        """
        from corral.core.locks import lock

        if self.js is None:
            raise JobError("ctx.lock needs the bot's connection, which handlers registered @process "
                           "(and code outside a bot) do not have; use an async handler")
        return lock(self.js, name, owner=f"{self.bot}/{self.job.id}", lease=lease, wait=wait)


Handler = Callable[[dict[str, Any], JobContext], Any]


@dataclass(frozen=True)
class BatchItem:
    """One job of a batch handler's call: its id, args, attempt and own context."""

    id: str
    args: dict[str, Any]
    attempt: int
    ctx: JobContext = field(repr=False)


@dataclass(frozen=True)
class BatchSpec:
    """A batch kind's call: up to ``size`` jobs, or those that arrived within ``wait`` seconds."""

    size: int = 20
    wait: float = 0.05

    @classmethod
    def parse(cls, spec: str, text: str) -> BatchSpec:
        """``SIZE[:WAIT]`` (WAIT in s or ms, e.g. ``100ms``), as after ``@batch:``; '' for the defaults.

        Raises:
            ConfigError: not a whole size of at least 1 and a wait of at least 0.
        """
        size_text, _, wait_text = text.partition(":")
        try:
            size = int(size_text) if size_text else cls.size
            wait = _seconds(wait_text) if wait_text else cls.wait
        except ValueError:
            size, wait = 0, 0.0
        if size < 1 or not 0 <= wait <= 60 or text.count(":") > 1:
            raise ConfigError(f"--handler {spec!r}: {BATCH_SUFFIX} takes [:SIZE[:WAIT]], a size of at least 1 "
                              f"and a wait of 0 to 60 s, e.g. {BATCH_SUFFIX}:50:100ms")
        return cls(size, wait)


def _seconds(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.removesuffix("s"))


def batch(size: int = BatchSpec.size, wait: float = BatchSpec.wait) -> Callable[[Any], Any]:
    """Mark an async handler as taking a list: ``@batch(size=50, wait=0.1)``.

    It is called as ``handler(items: list[BatchItem], ctx)`` (``ctx`` is the first item's) and
    returns a list of results of the same length, in order; an Exception instance fails just
    its job, raising fails every job of the call.
    """
    def mark(fn: Any) -> Any:
        fn.__corral_batch__ = BatchSpec(size, wait)
        return fn
    return mark


# The built-ins are async so they run inline on the event loop: handing a microsecond of work to
# a worker thread cost about 10% of a bot's loop in the profile (docs/performance.md).
async def sum_handler(args: dict[str, Any], ctx: JobContext) -> float:
    """``sum``: a + b (the seed's job)."""
    return args["a"] + args["b"]


async def sleep_handler(args: dict[str, Any], ctx: JobContext) -> float:
    """``sleep``: wait ``seconds`` (cancellable), reporting progress every ``step`` seconds if given."""
    seconds = float(args.get("seconds", 1.0))
    step = float(args.get("step", 0) or 0)
    if step <= 0:
        await anyio.sleep(seconds)
        return seconds
    waited = 0.0
    while waited < seconds:
        await anyio.sleep(min(step, seconds - waited))
        waited += step
        ctx.progress(min(100.0, 100 * waited / seconds), f"slept {min(waited, seconds):.1f}s of {seconds:.1f}s")
    return seconds


async def fail_handler(args: dict[str, Any], ctx: JobContext) -> str:
    """``fail``: raise with probability ``p`` (default 1.0), like the seed's FAILURE_RATE."""
    p = float(args.get("p", 1.0))
    if random.random() < p:
        raise RuntimeError(args.get("message", f"simulated failure (p={p})"))
    return "ok"


def crash_handler(args: dict[str, Any], ctx: JobContext) -> None:
    """``crash``: kill the bot's process outright (tests poison-job quarantine)."""
    import os

    os._exit(int(args.get("code", 70)))


async def echo_handler(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """``echo``: return the args (used by `corral health --probe`)."""
    return args


async def locked_sleep_handler(args: dict[str, Any], ctx: JobContext) -> float:
    """``locked_sleep``: hold lock ``lock`` while sleeping ``seconds`` (demos and tests of ctx.lock)."""
    async with ctx.lock(args.get("lock", "demo"), lease=float(args.get("lease", 5)), wait=float(args.get("wait", 60))):
        await anyio.sleep(float(args.get("seconds", 1.0)))
    return float(args.get("seconds", 1.0))


POPULATE_KINDS: dict[str, Callable[[], dict[str, Any]]] = {
    "sum": lambda: {"a": random.randint(0, 1000), "b": random.randint(0, 1000)},
    "sleep": lambda: {"seconds": round(random.uniform(0.1, 2.0), 2)},
    "fail": lambda: {"p": 0.1},
    "echo": lambda: {"n": random.randint(0, 1_000_000)},
}


def generate(kind: str, count: int, queue: str, priority: str = DEFAULT_PRIORITY) -> list[Job]:
    """``count`` new jobs of a :data:`POPULATE_KINDS` kind with random arguments (`corral populate`, benchmarks)."""
    now = time.time()
    args = POPULATE_KINDS[kind]
    return [Job(id=new_id(), kind=kind, args=args(), queue=queue, priority=priority, created_at=now) for _ in range(count)]


async def populate_handler(args: dict[str, Any], ctx: JobContext) -> dict[str, int]:
    """``populate``: submit ``count`` generated jobs of ``kind`` (the seed's periodic population).

    The jobs' ids are ``<this job's id>-<i>``: a redelivery after this bot died part-way submits
    the same ids, which the jobs stream drops as duplicates, so a firing never populates twice.
    """
    from corral.core.messages import make_job
    from corral.core.submit import raise_for, submit_many

    kind, count = args.get("kind", "sum"), int(args.get("count", 100))
    if kind not in POPULATE_KINDS or not 1 <= count <= 100_000:
        raise ValueError(f"populate needs kind in {sorted(POPULATE_KINDS)} and 1 <= count <= 100000, got {kind!r}, {count}")
    fields = {"queue": args.get("queue", "default"), "priority": args.get("priority", "normal")}
    jobs = [make_job(kind, POPULATE_KINDS[kind](), id=f"{ctx.job.id[:100]}-{i}", **fields) for i in range(count)]
    summary = await submit_many(ctx.js, jobs)
    raise_for(summary)
    return {"accepted": summary.accepted, "duplicates": summary.duplicates}


@dataclass(frozen=True)
class ArgSchema:
    """What a kind's ``args`` must hold: required and optional keys, each with the JSON types it may have.

    Checked by `corral submit` before anything is enqueued, so ``sum a=`` is refused at once
    instead of failing three attempts and dead-lettering minutes later. Keys not named are allowed.
    """

    required: dict[str, tuple[type, ...]] = field(default_factory=dict)
    optional: dict[str, tuple[type, ...]] = field(default_factory=dict)

    def check(self, kind: str, args: dict[str, Any]) -> None:
        """
        Raises:
            InvalidJobError: a required key is missing, or a key has a value of the wrong type.
        """
        for key, types in {**self.required, **self.optional}.items():
            if key in args and not _is(args[key], types):
                raise InvalidJobError(f"kind {kind!r}: argument {key} must be {_type_names(types)}, got {args[key]!r}")
        for key, types in self.required.items():
            if key not in args:
                raise InvalidJobError(f"kind {kind!r} needs argument {key} ({_type_names(types)}), e.g. {key}=1")


NUMBER = (int, float)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)  # True is not a number


def _type_names(types: tuple[type, ...]) -> str:
    names: dict[tuple[type, ...], str] = {NUMBER: "a number", (str,): "a string", (int,): "a whole number"}
    return names.get(types, " or ".join(t.__name__ for t in types))


#: The built-in kinds' arguments. A bot that registers its own handler under a built-in's name
#: changes what it accepts; `corral submit --no-check` skips these checks for such a fleet.
SCHEMAS: dict[str, ArgSchema] = {
    "sum": ArgSchema(required={"a": NUMBER, "b": NUMBER}),
    "sleep": ArgSchema(optional={"seconds": NUMBER, "step": NUMBER}),
    "fail": ArgSchema(optional={"p": NUMBER, "message": (str,)}),
    "locked_sleep": ArgSchema(optional={"seconds": NUMBER, "lease": NUMBER, "wait": NUMBER, "lock": (str,)}),
    "populate": ArgSchema(optional={"kind": (str,), "count": (int,), "queue": (str,), "priority": (str,)}),
    "crash": ArgSchema(optional={"code": (int,)}),
}


def check_args(kind: str, args: dict[str, Any]) -> None:
    """Check ``args`` against the kind's declared schema, if it has one.

    Raises:
        InvalidJobError: they do not fit it.
    """
    if (schema := SCHEMAS.get(kind)) is not None:
        schema.check(kind, args)


BUILTINS: dict[str, Handler] = {
    "populate": populate_handler,
    "locked_sleep": locked_sleep_handler,
    "sum": sum_handler,
    "sleep": sleep_handler,
    "fail": fail_handler,
    "crash": crash_handler,
    "echo": echo_handler,
}


def import_handler(spec: str) -> Handler:
    """Resolve ``module:function``.

    Raises:
        ConfigError: the string is malformed, or the module or function is missing.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"handler {spec!r} must look like package.module:function")
    # The application's modules are found from the folder the bot runs in, as uvicorn and celery
    # do: the `corral` console script puts only its own bin/ folder on sys.path.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load handler {spec!r}: {e}") from e
    if not callable(fn):
        raise ConfigError(f"handler {spec!r} is not callable")
    return fn


@dataclass(frozen=True)
class Registry:
    """kind -> handler, fixed when the bot starts."""

    handlers: dict[str, Handler]
    #: kind -> ``module:function`` for the kinds registered ``@process``: the child process
    #: imports the handler from this string (bots/isolation.py).
    isolated: dict[str, str] = field(default_factory=dict)
    #: kind -> how its jobs are batched, for the kinds whose handler takes a list.
    batches: dict[str, BatchSpec] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Sequence[str] = ()) -> Registry:
        """The built-ins plus ``kind=module:function[@process]`` specs from the command line.

        Raises:
            ConfigError: a spec is malformed, its handler cannot be loaded, or ``@process``
                names an async handler (anyio cancellation already stops those where they run).
        """
        handlers = dict(BUILTINS)
        isolated: dict[str, str] = {}
        batches: dict[str, BatchSpec] = {}
        for spec in specs:
            kind, sep, target = spec.partition("=")
            if not sep or not kind:
                raise ConfigError(f"--handler {spec!r} must look like kind=package.module:function[{PROCESS_SUFFIX}]")
            target, at, mode = target.partition("@")
            is_batch = (at + mode).partition(":")[0] == BATCH_SUFFIX
            if at and not is_batch and at + mode != PROCESS_SUFFIX:
                raise ConfigError(f"--handler {spec!r}: the suffixes are {PROCESS_SUFFIX} and {BATCH_SUFFIX}[:SIZE[:WAIT]]")
            batch_spec = BatchSpec.parse(spec, (at + mode).partition(":")[2]) if is_batch else None
            handlers[kind] = import_handler(target)
            isolated.pop(kind, None)  # a later spec for the same kind replaces an earlier one
            batches.pop(kind, None)
            batch_spec = batch_spec or getattr(handlers[kind], "__corral_batch__", None)
            if batch_spec is not None:
                if not cls.is_async(handlers[kind]):
                    raise ConfigError(f"--handler {spec!r}: a {BATCH_SUFFIX} handler must be async")
                batches[kind] = batch_spec
                continue
            if at:
                if cls.is_async(handlers[kind]):
                    raise ConfigError(f"--handler {spec!r}: {PROCESS_SUFFIX} is for sync handlers; "
                                      "an async handler is cancelled where it runs")
                isolated[kind] = target
        return cls(handlers, isolated, batches)

    def get(self, kind: str) -> Handler:
        try:
            return self.handlers[kind]
        except KeyError:
            raise UnknownKindError(f"no handler for kind {kind!r} on this bot") from None

    @staticmethod
    def is_async(fn: Handler) -> bool:
        return inspect.iscoroutinefunction(fn)
