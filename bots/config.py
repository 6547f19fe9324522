"""A bot's settings, fixed at start and passed down explicitly."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.names import DEFAULT_QUEUE, PRIORITIES, subject_token


@dataclass(frozen=True)
class BotConfig:
    """Times are seconds."""

    name: str = field(default_factory=lambda: subject_token(f"{socket.gethostname().split('.')[0]}-{os.getpid()}"))
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    #: Priorities served, highest first (bots/feeds.py: strict order plus the fairness rule).
    priorities: tuple[str, ...] = PRIORITIES
    #: Every fair_every-th start is offered to the lower priorities first (0: strict priority, starvation allowed).
    fair_every: int = 10
    concurrency: int = 8
    #: Liveness key TTL; the heartbeat refreshes it every ttl/3.
    liveness_ttl: float = 10.0
    #: How long a draining bot lets running jobs finish before handing them back.
    drain_timeout: float = 30.0
    #: Retry spacing after a failure: min(backoff_base * 2**(attempt-1), backoff_max) plus up to 25% jitter.
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    #: Deliveries that died with no outcome, while running alone on their bot, before a job is
    #: quarantined as poison (docs/jobs.md, "Poison jobs and bystanders").
    poison_after: int = 3
    #: Deaths beside other jobs (not attributable to this one) before a job is quarantined anyway:
    #: the ceiling that keeps a job from being redelivered forever.
    bystander_deaths_max: int = 10
    #: How often the reaper sweeps the jobs stream for messages past max_deliver.
    sweep_interval: float = 60.0
    handlers: tuple[str, ...] = ()
    #: Also write the events a first delivery's result already implies: its ``started`` and, on
    #: success, its ``succeeded``. Off by default: readers derive both from the result
    #: (core/timeline.py), and a first delivery that dies is inferred from the redelivery
    #: (core/history.py). Everything else is always recorded.
    full_events: bool = False
    #: Commit results that finish while a commit is in flight as one atomic batch (bots/commit.py):
    #: one fsync for many under ``sync_interval: always``. Off for a lazy-fsync server, where a
    #: batch commit costs an fsync that individual publishes do not.
    group_commit: bool = True
    #: Run plain first deliveries of async jobs eagerly, their results committed together
    #: (bots/eager.py). Off: every job takes the full path (a task switch and a cancel scope each).
    eager: bool = True
    #: Port for /metrics, /healthz and /readyz (None: no endpoint; 0: any free port).
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    #: Seconds to wait for the stream's ack of a result or event before it goes to the outbox.
    publish_timeout: float = 10.0
    #: Where unpublished results and events wait for the server (None: no outbox).
    outbox_dir: Path | None = None
    version: str = "0.1.0"

    @property
    def heartbeat_interval(self) -> float:
        return self.liveness_ttl / 3
