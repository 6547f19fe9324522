"""A fleet supervisor's settings, and where its slots' credentials come from.

Both are read once by ``corral fleet`` and passed down; nothing here reads the
environment.

Per-slot credentials (``corral fleet --slot-credentials DIR``): under a
least-privilege profile every bot has its own NATS user, named like its slot
(``<host>-<n>``), so a stolen bot password cannot write another bot's
liveness key or read its inbox (docs/security.md). The supervisor holds no
bot's password itself; it reads the slot's file from ``DIR`` each time it
starts that slot:

    DIR/<host>-<n>.creds   a creds file (JWT accounts): passed as the bot's creds file
    DIR/<host>-<n>         otherwise: the password of user ``<host>-<n>`` (one line)

This is the layout of a Kubernetes Secret mounted as a volume or of systemd's
``LoadCredential=``: one file per key, named by the key. Reading at start time
means a rotated password takes effect at the slot's next start, and a missing
file fails that one start (the slot backs off and retries) instead of the
whole supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from corral.bots.fleet_slot import SlotPolicy


@dataclass(frozen=True)
class SlotLogin:
    """How one slot's bot logs in: the environment its ``corral bot`` process gets."""

    user: str
    password: str | None = None
    creds_file: Path | None = None

    def env(self) -> dict[str, str]:
        # A private inbox: the secured profile lets each bot subscribe only under its own.
        env = {"CORRAL_NATS_USER": self.user, "CORRAL_NATS_INBOX_PREFIX": f"_INBOX_{self.user}"}
        if self.creds_file is not None:
            env["CORRAL_NATS_CREDS"] = str(self.creds_file)
        if self.password is not None:
            env["CORRAL_NATS_PASSWORD"] = self.password
        return env


@dataclass(frozen=True)
class SlotCredentials:
    """A folder holding one credential file per slot name (see the module docstring)."""

    folder: Path

    def login(self, name: str) -> SlotLogin:
        """The login of the bot named ``name``, read now.

        Raises:
            OSError: neither ``name.creds`` nor ``name`` exists or is readable (the slot's
                start fails and is retried with backoff, like any failed start).
        """
        creds = self.folder / f"{name}.creds"
        if creds.is_file():
            return SlotLogin(user=name, creds_file=creds)
        path = self.folder / name
        try:
            password = path.read_text().strip()
        except OSError as e:
            raise OSError(f"no credentials for slot {name}: {path} (or {creds}): {e.strerror or e}") from e
        if not password:
            raise OSError(f"no credentials for slot {name}: {path} is empty")
        return SlotLogin(user=name, password=password)


@dataclass(frozen=True)
class FleetConfig:
    """A supervisor's settings. Times are seconds."""

    host: str
    #: Write this desired count at start (``--count``); None keeps what the bucket says.
    initial_count: int | None = None
    #: The bots' liveness TTL (``corral bot --ttl``); a bot silent for 2 TTL is hung.
    bot_ttl: float = 10.0
    #: The supervisor key's TTL; refreshed every ttl/3.
    ttl: float = 10.0
    policy: SlotPolicy = field(default_factory=SlotPolicy)
    #: Extra ``corral bot`` arguments (queue, concurrency, handlers...).
    bot_args: tuple[str, ...] = ()
    #: Per-slot log files here (``<host>-<slot>.log``); None: bots inherit the supervisor's stderr.
    log_dir: Path | None = None
    log_format: str = "logfmt"
    #: Serve Prometheus metrics on this port (``/metrics``); None: no endpoint.
    metrics_port: int | None = None
    #: The address the metrics endpoint binds. Loopback by default, like the bots': the
    #: endpoint has no authentication, so exposing it is an explicit choice.
    metrics_host: str = "127.0.0.1"
    #: Each slot's own login; None: bots log in as the supervisor does (an open server).
    slot_credentials: SlotCredentials | None = None

    @property
    def hung_after(self) -> float:
        return 2 * self.bot_ttl

    @property
    def heartbeat_interval(self) -> float:
        return self.ttl / 3
