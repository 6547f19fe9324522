"""corral: distributed job processing on NATS JetStream.

The public API for applications: write handlers against :class:`JobContext`, build
:class:`Job` values and put them on the jobs stream with :func:`submit` or :func:`submit_many`
over a connection from :func:`connect`. Everything else lives in the subpackages: the
vocabulary and client library in ``corral.core``, the daemons in ``corral.bots`` and
``corral.ledger``, the dashboard in ``corral.tui`` and the command in ``corral.cli``
(docs/architecture.md draws the map).
"""

from corral.core.connect import connect
from corral.core.handlers import JobContext
from corral.core.messages import Job, JobResult
from corral.core.settings import Settings
from corral.core.submit import submit, submit_many

__all__ = ["Job", "JobContext", "JobResult", "Settings", "connect", "submit", "submit_many"]
