"""Starting one slot's ``corral bot`` process: its command line, environment and login.

The process is started through :mod:`corral.bots.fleet_launch`, so it dies with
the supervisor, in a session of its own, with its log in ``--log-dir`` or on
the supervisor's stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.abc
import anyio.to_thread

from corral.bots.fleet_config import FleetConfig
from corral.core.settings import Settings
from corral.core.spawn import corral_argv

LAUNCH_SCRIPT = Path(__file__).with_name("fleet_launch.py")

#: The supervisor's own login. A bot given a login of its own must not inherit any of it.
LOGIN_VARIABLES = (
    "CORRAL_NATS_USER", "CORRAL_NATS_PASSWORD", "CORRAL_NATS_TOKEN", "CORRAL_NATS_CREDS",
    "CORRAL_NATS_NKEY", "CORRAL_NATS_INBOX_PREFIX",
)


def bot_environment(base: Mapping[str, str], settings: Settings, config: FleetConfig, name: str) -> dict[str, str]:
    """The environment of bot ``name``.

    The server list travels here, not in argv: URLs may hold credentials, and argv is
    visible to every user in ``ps``. With per-slot credentials the supervisor's login and
    every other ``*_PASSWORD`` variable are dropped, so one bot's process holds only its
    own secret.

    Raises:
        OSError: the slot's credentials cannot be read.
    """
    env = dict(base)
    if config.slot_credentials is not None:
        login = config.slot_credentials.login(name)
        for key in list(env):
            if key in LOGIN_VARIABLES or key.endswith("_PASSWORD"):
                del env[key]
        env.update(login.env())
    env.update({"CORRAL_NATS_URL": ",".join(settings.servers), "PYTHONUNBUFFERED": "1"})
    return env


class BotLauncher:
    """Starts ``corral bot --name <name>`` through :mod:`corral.bots.fleet_launch` (dies with the supervisor).

    Not :func:`corral.core.spawn.spawn_corral`: that adds this process's whole environment,
    which would hand the supervisor's login back to a bot that must hold only its own,
    and it blocks, where a slot starts its bot from the event loop.
    """

    def __init__(self, settings: Settings, config: FleetConfig) -> None:
        self.settings = settings
        self.config = config

    def command(self, name: str) -> list[str]:
        bot = corral_argv("--log-format", self.config.log_format, "bot",
                          "--name", name, "--ttl", f"{self.config.bot_ttl:g}", *self.config.bot_args)
        return [sys.executable, str(LAUNCH_SCRIPT), str(os.getpid()), *bot]

    async def __call__(self, name: str) -> anyio.abc.Process:
        """Start the bot.

        Raises:
            OSError: it could not be started, or its credentials could not be read
                (the slot logs it and retries with backoff).
        """
        env = bot_environment(os.environ, self.settings, self.config, name)
        out = None
        if self.config.log_dir is not None:
            # in a worker thread: a slow disk must not stall the supervisor's heartbeats
            out = await anyio.to_thread.run_sync(_open_log, self.config.log_dir, name)
        try:
            # A new session: a Ctrl-C in the supervisor's terminal reaches the supervisor only,
            # which then drains the bots in order instead of all of them at once.
            return await anyio.open_process(
                self.command(name), stdin=None, stdout=out, stderr=out, env=env, start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()


def _open_log(folder: Path, name: str) -> BinaryIO:
    """Slot ``name``'s log file in ``folder``, opened for appending."""
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / f"{name}.log", "ab")
