"""One run of the secured profile (nats-secure.conf): a password per user, each process only its own.

nats-secure.conf reads every password from an environment variable
(``password: $CORRAL_<USER>_PASSWORD``) and refuses to start when one is unset.
:class:`SecureRun` reads that list from the file itself, so a user added there
needs nothing here, generates a fresh password for each for this run only, and
hands them out:

* the server's environment holds all of them (it checks them);
* every corral process gets its own login (``CORRAL_NATS_USER``/``PASSWORD``
  and a private inbox prefix) and no other password variable;
* the fleet supervisor's bots get theirs through ``--slot-credentials``: one
  file per slot in a folder only this user can read, removed when the run ends.

Nothing is written outside that folder, and no password appears in argv.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.errors import ConfigError
from corral.core.settings import Settings

#: The fleet host the profile's supervisor user serves: its slots ``bot-1``.. are the bot users.
FLEET_HOST = "bot"
SUPERVISOR_USER = f"fleet-{FLEET_HOST}"
OPERATOR_USER = "admin"
LEDGER_USER = "ledger"

_USER = re.compile(r"user:\s*([\w.-]+)\s*,\s*password:\s*\$(CORRAL_\w+_PASSWORD)")
_SLOT = re.compile(re.escape(FLEET_HOST) + r"-([1-9][0-9]*)")


def profile_users(conf: Path) -> dict[str, str]:
    """User name -> the environment variable holding its password, as nats-secure.conf declares them.

    Raises:
        ConfigError: the file is unreadable or declares no password users.
    """
    try:
        text = conf.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {conf}: {e.strerror or e}") from e
    users = {m.group(1): m.group(2) for m in _USER.finditer(text)}
    if not users:
        raise ConfigError(f"{conf} declares no users with a $CORRAL_..._PASSWORD")
    return users


def login_env(base: Mapping[str, str], user: str, password: str) -> dict[str, str]:
    """``base`` without any password or login variable, plus this one user's login."""
    env = {k: v for k, v in base.items() if not (k.endswith("_PASSWORD") or k.startswith("CORRAL_NATS_"))}
    env.update(CORRAL_NATS_USER=user, CORRAL_NATS_PASSWORD=password, CORRAL_NATS_INBOX_PREFIX=f"_INBOX_{user}")
    return env


@dataclass
class SecureRun:
    """Per-run passwords for every user of ``conf``; :meth:`close` removes the folder holding them."""

    conf: Path
    users: dict[str, str] = field(init=False)  #: user -> password variable
    passwords: dict[str, str] = field(init=False)  #: user -> this run's password
    folder: Path = field(init=False)

    def __post_init__(self) -> None:
        self.users = profile_users(self.conf)
        for needed in (OPERATOR_USER, LEDGER_USER, SUPERVISOR_USER):
            if needed not in self.users:
                raise ConfigError(f"{self.conf} has no user {needed!r}; `corral up --secure` needs it")
        # A letter first: nats-server reads an all-digit value as a number and refuses to start.
        self.passwords = {user: "p" + secrets.token_hex(24) for user in self.users}
        self.folder = Path(tempfile.mkdtemp(prefix="corral-secure-"))  # mode 0700
        self._write_slot_credentials()

    @property
    def slots(self) -> int:
        """How many bots the supervisor can start: the profile's ``bot-<n>`` users, counted from 1."""
        n = 0
        while f"{FLEET_HOST}-{n + 1}" in self.users:
            n += 1
        return n

    @property
    def slot_credentials(self) -> Path:
        return self.folder / "slots"

    def _write_slot_credentials(self) -> None:
        self.slot_credentials.mkdir(mode=0o700)
        for user, password in self.passwords.items():
            if _SLOT.fullmatch(user):
                path = self.slot_credentials / user
                path.touch(mode=0o600)
                path.write_text(password + "\n")

    def server_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The server's environment: every password variable the config reads."""
        return {**base, **{var: self.passwords[user] for user, var in self.users.items()}}

    def env(self, base: Mapping[str, str], user: str) -> dict[str, str]:
        """A corral child process's environment, logged in as ``user`` and as nobody else."""
        return login_env(base, user, self.passwords[user])

    def settings(self, url: str, user: str = OPERATOR_USER) -> Settings:
        """Settings for a connection made in this process (provisioning, the dashboard)."""
        return Settings(servers=(url,), user=user, password=self.passwords[user], inbox_prefix=f"_INBOX_{user}")

    def write_operator_env(self, url: str) -> Path:
        """A file an operator can source to run `corral` commands as the operator in another shell."""
        path = self.folder / "operator.env"
        path.touch(mode=0o600)
        path.write_text(f"export CORRAL_NATS_URL={url}\nexport CORRAL_NATS_USER={OPERATOR_USER}\n"
                        f"export CORRAL_NATS_PASSWORD={self.passwords[OPERATOR_USER]}\n")
        return path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["FLEET_HOST", "SUPERVISOR_USER", "SecureRun", "login_env", "profile_users"]
