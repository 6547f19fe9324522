"""Who an operator action is recorded as (core/control.py ``actor``)."""

from __future__ import annotations

import getpass
import socket

from corral.core.control import actor
from corral.core.settings import Settings


def test_the_nats_user_names_the_operator_when_the_settings_have_one():
    """Given settings logging in as admin, when an action is recorded, then its actor is admin@<this host>."""
    assert actor(Settings(user="admin", password="p")) == f"admin@{socket.gethostname()}"


def test_the_login_name_names_the_operator_without_a_nats_user():
    """Given settings without a user (the open profile) or none at all, then the actor is the shell's login name."""
    expected = f"{getpass.getuser()}@{socket.gethostname()}"
    assert actor(Settings()) == expected
    assert actor() == expected
