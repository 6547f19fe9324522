"""corral: distributed job processing on NATS JetStream.

The public API for applications: write handlers against :class:`JobContext`, build
:class:`Job` values with :func:`make_job` and put them on the jobs stream with :func:`submit`
or :func:`submit_many` over a connection from :func:`connect`::

    import anyio
    from corral import connect, make_job, submit

    async def main():
        nc = await connect("nats://127.0.0.1:4222")
        receipt = await submit(nc.jetstream(), make_job("resize", {"width": 640}))
        print(receipt.job_id)
        await nc.close()

    anyio.run(main)

Everything else lives in the subpackages: the vocabulary and client library in
``corral.core``, the daemons in ``corral.bots`` and ``corral.ledger``, the dashboard in
``corral.tui`` and the command in ``corral.cli`` (docs/architecture.md draws the map).
"""

from corral.core.lean_nats import import_nats

import_nats()  # before anything below imports nats-py: see core/lean_nats.py

from corral._client import connect  # noqa: E402
from corral.core.errors import CorralError  # noqa: E402
from corral.core.handlers import JobContext  # noqa: E402
from corral.core.messages import Job, JobResult, make_job  # noqa: E402
from corral.core.settings import Settings  # noqa: E402
from corral.core.submit import Receipt, SubmitSummary, submit, submit_many  # noqa: E402

__all__ = [
    "CorralError", "Job", "JobContext", "JobResult", "Receipt", "Settings", "SubmitSummary",
    "connect", "make_job", "submit", "submit_many",
]
