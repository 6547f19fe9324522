"""Connection settings, read once at the entry point and passed down explicitly.

No other module reads the environment. Credentials come from flags or the
environment (``CORRAL_NATS_USER``/``CORRAL_NATS_PASSWORD``, ``CORRAL_NATS_TOKEN``,
``CORRAL_NATS_CREDS`` for a creds file, ``CORRAL_NATS_NKEY`` for an nkey seed
file, ``CORRAL_NATS_INBOX_PREFIX`` for a private reply inbox, ``CORRAL_NATS_TLS_CA``,
``CORRAL_NATS_TLS_CERT`` and ``CORRAL_NATS_TLS_KEY`` for TLS), never from code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from collections.abc import Mapping

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Settings:
    """Where NATS is and how to log in. ``servers`` is one or more URLs (a cluster)."""

    servers: tuple[str, ...] = (DEFAULT_URL,)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkeys_seed: str | None = None
    #: TLS: the CA that signed the server's certificate, and a client certificate and key
    #: when the server verifies clients (mutual TLS). Any of them switches TLS on.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Reply-inbox prefix; least-privilege users may only subscribe under their own (docs/security.md).
    inbox_prefix: str | None = None
    client_name: str = "corral"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, server: str | None = None) -> Settings:
        """Settings from ``--server`` (wins) or ``CORRAL_NATS_URL`` (comma-separated for a cluster)."""
        env = os.environ if env is None else env
        url = server or env.get("CORRAL_NATS_URL") or DEFAULT_URL
        return cls(
            servers=tuple(u.strip() for u in url.split(",") if u.strip()),
            user=env.get("CORRAL_NATS_USER") or None,
            password=env.get("CORRAL_NATS_PASSWORD") or None,
            token=env.get("CORRAL_NATS_TOKEN") or None,
            creds_file=env.get("CORRAL_NATS_CREDS") or None,
            nkeys_seed=env.get("CORRAL_NATS_NKEY") or None,
            inbox_prefix=env.get("CORRAL_NATS_INBOX_PREFIX") or None,
            tls_ca=env.get("CORRAL_NATS_TLS_CA") or None,
            tls_cert=env.get("CORRAL_NATS_TLS_CERT") or None,
            tls_key=env.get("CORRAL_NATS_TLS_KEY") or None,
        )

    def named(self, client_name: str) -> Settings:
        return replace(self, client_name=client_name)

    def ssl_context(self):
        """An SSL context for the connection, or None when no TLS setting is given.

        Raises:
            ConfigError: a file is missing or unreadable.
        """
        if not (self.tls_ca or self.tls_cert):
            return None
        import ssl

        from corral.core.errors import ConfigError

        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"TLS settings unusable ({self.tls_ca or ''} {self.tls_cert or ''}): {e}") from e
        return ctx

    @property
    def display(self) -> str:
        """The server list for messages, without credentials."""
        return ",".join(self.servers)
