"""Names the ledger adds to corral's vocabulary (candidates for core/names.py).

The ledger never consumes CORRAL_JOBS: it is a work queue, so a message
vanishes on ack and a second consumer overlapping the bots' filter is refused
(``10100 filtered consumer not unique on workqueue stream``). Jobs reach the
ledger through the results (each carries its Job), the events and the dead
letters (original job bytes).
"""

from __future__ import annotations

from corral.core.names import DLQ_STREAM, EVENTS_STREAM, RESULTS_STREAM

#: Durable pull consumer per stream; declared in streams/consumer-ledger-*.json.
CONSUMERS = {
    RESULTS_STREAM: "ledger-results",
    EVENTS_STREAM: "ledger-events",
    DLQ_STREAM: "ledger-dlq",
}

#: The subject filter covering each whole stream (ephemeral rebuild consumers use it).
STREAM_SUBJECTS = {
    RESULTS_STREAM: "corral.results.*",
    EVENTS_STREAM: "corral.events.>",
    DLQ_STREAM: "corral.dlq.>",
}

SERVICE_NAME = "corral-ledger"
SERVICE_VERSION = "1.0.0"
QUERY_SUBJECT = "corral.ledger.query"
