"""The in-flight registry refuses a second copy of a delivery that is already running."""

from __future__ import annotations

from nats.aio.msg import Msg

from corral.bots.inflight import InFlightJobs


def test_the_same_delivery_twice_is_registered_once_and_removed_once():
    """Given a delivery registered, when the very same delivery (same ack subject) is added again, it is refused;
    removing it twice is harmless."""
    jobs = InFlightJobs()
    msg = Msg(_client=None, subject="corral.jobs.default.normal", reply="$JS.ACK.CORRAL_JOBS.work-default-normal.1.65.65.1.0")
    key = jobs.add(msg, "j1", "sum")
    assert key == msg.reply and jobs.add(msg, "j1", "sum") is None and len(jobs) == 1
    jobs.remove(key)
    jobs.remove(key)
    assert len(jobs) == 0 and jobs.idle.is_set()
