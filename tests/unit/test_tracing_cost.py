"""Without tracing configured, corral imports no OpenTelemetry and reads trace ids by string."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corral.core import tracing
from corral.core.errors import InvalidJobError


def test_a_bot_and_the_client_import_no_opentelemetry():
    """Importing the public API, the bot daemon and the @process worker leaves OpenTelemetry unimported."""
    code = ("import sys, corral, corral.bots.bot, corral.bots.isolated_worker; "
            "sys.exit('opentelemetry' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_trace_id_is_read_from_a_traceparent_header_and_bad_ones_are_refused():
    """The trace id is the second field of a valid traceparent; a malformed or all-zero one gives none."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.trace_id_of({"traceparent": tp}) == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.trace_id_of({"traceparent": "00-xyz-1-01"}) is None and tracing.trace_id_of(None) is None
    for bad in ("00-" + "0" * 32 + "-b7ad6b7169203331-01", "nonsense"):
        with pytest.raises(InvalidJobError, match="W3C traceparent"):
            tracing.check_traceparent(bad)
