"""The connection banner: green when the server answers, red while it does not."""

from __future__ import annotations

from textual.widgets import Static

from corral.tui.store import Store


class ConnectionBanner(Static):
    DEFAULT_CSS = """
    ConnectionBanner { height: 1; padding: 0 1; }
    ConnectionBanner.-up { background: $success-darken-2; color: $text; }
    ConnectionBanner.-down { background: $error; color: $text; text-style: bold; }
    """

    def show(self, store: Store, server: str) -> None:
        up = store.reachable
        self.set_class(up, "-up")
        self.set_class(not up, "-down")
        if up:
            text = f"● connected to {server}"
            if store.varz:
                v = store.varz
                text += (f"  ·  nats-server {v.get('version', '?')}  ·  {v.get('connections', '?')} connections"
                         f"  ·  up {v.get('uptime', '?')}")
        elif not store.connected:
            text = f"✖ NATS server unreachable at {server} ({store.connection_detail}); retrying"
        else:
            text = f"✖ JetStream not answering at {server} ({store.snapshot_error or 'waiting for the first snapshot'}); retrying"
        self.update(text)
