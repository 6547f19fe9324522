"""A slot's login and environment (bots/fleet_config.py, bots/fleet_spawn.py): no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.bots.fleet_config import FleetConfig, SlotCredentials
from corral.bots.fleet_spawn import bot_environment
from corral.core.settings import Settings

SUPERVISOR_ENV = {
    "HOME": "/home/corral", "CORRAL_NATS_USER": "fleet-web1", "CORRAL_NATS_PASSWORD": "pSupervisor",
    "CORRAL_NATS_INBOX_PREFIX": "_INBOX_fleet-web1", "CORRAL_WEB1_2_PASSWORD": "pOtherBot",
}


def test_a_slot_logs_in_with_the_password_in_its_own_file(tmp_path: Path):
    """Given DIR/web1-1 holding a password, then slot web1-1's bot logs in as web1-1 with it and a private inbox."""
    (tmp_path / "web1-1").write_text("pSlotOne\n")
    env = SlotCredentials(tmp_path).login("web1-1").env()
    assert env == {"CORRAL_NATS_USER": "web1-1", "CORRAL_NATS_PASSWORD": "pSlotOne", "CORRAL_NATS_INBOX_PREFIX": "_INBOX_web1-1"}


def test_a_creds_file_is_preferred_over_a_password(tmp_path: Path):
    """Given both DIR/web1-1.creds and DIR/web1-1, then the bot gets the creds file and no password."""
    (tmp_path / "web1-1").write_text("pSlotOne\n")
    (tmp_path / "web1-1.creds").write_text("-----BEGIN NATS USER JWT-----\n")
    env = SlotCredentials(tmp_path).login("web1-1").env()
    assert env["CORRAL_NATS_CREDS"] == str(tmp_path / "web1-1.creds") and "CORRAL_NATS_PASSWORD" not in env


@pytest.mark.parametrize("content", [None, "\n"])
def test_a_missing_or_empty_credential_fails_that_slots_start_with_its_name(tmp_path: Path, content):
    """Given no file (or an empty one) for web1-3, then its login raises OSError naming the slot and the path."""
    if content is not None:
        (tmp_path / "web1-3").write_text(content)
    with pytest.raises(OSError, match=r"no credentials for slot web1-3: .*web1-3"):
        SlotCredentials(tmp_path).login("web1-3")


def test_a_bot_inherits_no_password_but_its_own(tmp_path: Path):
    """Given a supervisor environment holding its own login and another bot's password, then the bot's
    environment holds only its own login and the server list."""
    (tmp_path / "web1-1").write_text("pSlotOne\n")
    config = FleetConfig(host="web1", slot_credentials=SlotCredentials(tmp_path))
    env = bot_environment(SUPERVISOR_ENV, Settings(servers=("nats://a:1", "nats://b:2")), config, "web1-1")
    assert env == {"HOME": "/home/corral", "CORRAL_NATS_USER": "web1-1", "CORRAL_NATS_PASSWORD": "pSlotOne",
                   "CORRAL_NATS_INBOX_PREFIX": "_INBOX_web1-1", "CORRAL_NATS_URL": "nats://a:1,nats://b:2",
                   "PYTHONUNBUFFERED": "1"}


def test_without_slot_credentials_a_bot_inherits_the_supervisors_login():
    """Given no --slot-credentials, then the bot's environment is the supervisor's (the open profile)."""
    env = bot_environment(SUPERVISOR_ENV, Settings(), FleetConfig(host="web1"), "web1-1")
    assert env["CORRAL_NATS_USER"] == "fleet-web1" and env["CORRAL_WEB1_2_PASSWORD"] == "pOtherBot"


def test_the_metrics_endpoint_defaults_to_loopback():
    """Given a FleetConfig with no metrics host, then the endpoint binds 127.0.0.1."""
    assert FleetConfig(host="web1", metrics_port=9100).metrics_host == "127.0.0.1"
