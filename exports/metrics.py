"""The Prometheus metrics of exporting, moved by the export consumer (`run_export_consumer`
serves them on its metrics port, with `kafka_bridge.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_EXPORTED = Counter(
    "orderflow_events_exported",
    "Orders the external platform took (redeliveries of exported orders not counted).",
)
EXPORT_ATTEMPTS_FAILED = Counter(
    "orderflow_export_attempts_failed",
    "Export attempts that failed at the platform, by kind (transient: retried; permanent).",
    ["kind"],
)
EXPORT_DELAY = Histogram(
    "orderflow_export_delay_seconds",
    "From the confirm (the event's occurred_at) to the platform's acknowledgement.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
REDRIVES_REFUSED = Counter(
    "orderflow_redrives_refused",
    "Dead letters a redrive would not or could not republish, by reason (target: not an event topic of this "
    "app; cut: a bounded dead letter; send: the broker refused it).",
    ["reason"],
)
