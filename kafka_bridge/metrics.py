"""The Prometheus metrics of publishing and consuming (the exports app's own are in
`exports.metrics`).

They live in prometheus_client's process-wide default registry: the web process serves them at
`/metrics` (django-prometheus, which adds its request metrics), `run_export_consumer` and
`run_outbox_relay` on a port of their own (`metrics_serve`). Each process exports the ones it
moves: the web process the fast path's publishes, the relay its publishes and the outbox
backlog, the consumer what it consumed and dead-lettered, and its lag.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, start_http_server

logger = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "orderflow_events_published",
    "Outbox events Kafka acknowledged, by the path that sent them (fast: on commit; relay).",
    ["path"],
)
EVENTS_CONSUMED = Counter(
    "orderflow_events_consumed",
    "Records a consumer loop is done with (handled or dead-lettered) and will commit.",
    ["group", "topic"],
)
EVENTS_DEAD_LETTERED = Counter(
    "orderflow_events_dead_lettered",
    "Records a consumer loop gave up on (sent to the dead-letter topic).",
    ["group", "topic"],
)
DEAD_LETTERS_CUT = Counter(
    "orderflow_dead_letters_cut",
    "Records the dead-letter topic refused to keep even compressed: a bounded dead letter names each instead.",
    ["group", "topic"],
)
CONSUMER_LAG = Gauge(
    "orderflow_consumer_lag",
    "Records between a consumer's commit point (the first record it is not done with) and the partition's end, as the consumer last saw them.",
    ["group", "topic", "partition"],
)
CONSUMER_CALLS_IN_FLIGHT = Gauge(
    "orderflow_consumer_calls_in_flight",
    "Calls a consumer loop has running on its worker threads.",
    ["group"],
)
CONSUMER_RETRIES_WAITING = Gauge(
    "orderflow_consumer_retries_waiting",
    "Keys (orders) whose record waits for a retry; the records behind each wait with it.",
    ["group"],
)
CONSUMER_DONE_UNCOMMITTED = Gauge(
    "orderflow_consumer_done_uncommitted",
    "Records done with but not committable yet, because an earlier record of the partition is not done.",
    ["group", "topic", "partition"],
)
CONSUMER_BREAKER_STATE = Gauge(
    "orderflow_consumer_breaker_state",
    "The circuit breaker in front of the called system: 0 closed, 1 half-open (probing), 2 open.",
    ["group"],
)
OUTBOX_UNSENT = Gauge(
    "orderflow_outbox_unsent",
    "Outbox events not yet acknowledged by Kafka, quarantined ones aside (set by run_outbox_relay each round).",
)
OUTBOX_QUARANTINED = Gauge(
    "orderflow_outbox_quarantined",
    "Outbox events quarantined after Kafka refused them for a reason of their own, waiting for an operator.",
)
OUTBOX_OLDEST_UNSENT_AGE = Gauge(
    "orderflow_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unsent outbox event, 0 when none (set by run_outbox_relay each round).",
)


def outbox_backlog_set(backlog: dict) -> None:
    """Set the outbox gauges from `kafka_bridge.selectors.outbox_backlog()`."""
    OUTBOX_UNSENT.set(backlog["unsent"])
    OUTBOX_OLDEST_UNSENT_AGE.set(backlog["oldest_unsent_age_seconds"] or 0)
    OUTBOX_QUARANTINED.set(backlog.get("quarantined", 0))


def metrics_serve(*, port: int, addr: str) -> None:
    """Serve this process's metrics at http://addr:port/metrics in a daemon thread; port 0 is off."""
    if not port:
        return
    start_http_server(port, addr=addr)
    logger.info("metrics: serving on http://%s:%d/metrics", addr, port)
