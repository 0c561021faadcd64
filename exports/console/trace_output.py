"""An order's trace (`exports.console.trace`) as `order_trace` prints it: text lines, or JSON-ready data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from exports.console.trace import OrderTrace, RecordRead
from kafka_bridge.models import OutboxEvent
from kafka_bridge.tracing import trace_id_of, trace_url

# --- as text, for `order_trace` -----------------------------------------------------------------


def order_trace_lines(trace: OrderTrace) -> list[str]:
    """The trace as the lines `order_trace` prints."""
    order, export = trace.order, trace.export
    lines = [f"order {order.pk}: {order.status}, customer {order.customer_id}, created {_when(order.created_at)}", ""]
    lines.append("steps:")
    for step in trace.steps:
        after = f"  (+{duration_text(step.after)})" if step.after is not None else ""
        lines.append(f"  {step.label:<26} {_when(step.at) if step.at else 'not yet'}{after}")
    if trace.confirm_to_exported is not None:
        lines.append(f"  confirm -> exported: {duration_text(trace.confirm_to_exported)}")
    for event in trace.events:
        lines += [
            "",
            f"event {event.event_id} ({event.event_type}) on {event.topic}:",
            f"  created {_when(event.created_at)}, send attempts {event.attempts}, "
            + (
                f"sent {_when(event.sent_at)} to partition {event.partition} offset {event.offset}"
                if event.sent_at
                # Debezium reads the row from the write-ahead log and marks nothing: the record
                # below says whether it is on the topic.
                else "published by Debezium, which marks no row sent"
                if settings.OUTBOX_PUBLISHER == "debezium"
                else "not sent yet"
            ),
        ]
        event_trace = trace_id_of(event.headers)
        if event_trace is not None:
            url = trace_url(event_trace)
            lines.append(f"  trace {event_trace}" + (f": {url}" if url else ""))
        if event.last_error:
            lines.append(f"  last send error: {event.last_error}")
        if event.quarantined_at:
            lines.append(f"  quarantined {_when(event.quarantined_at)}")
    lines += _record_lines("record", trace.record)
    lines += [
        "",
        "export: "
        + (
            "none yet"
            if export is None
            else f"{export.status}, {export.attempts} attempt(s)"
            + (f", accepted {_when(export.exported_at)}" if export.exported_at else "")
            + (f", Idempotency-Key {export.event_id}" if export.event_id else "")
        ),
    ]
    if export is not None and export.last_error:
        lines.append(f"  last error: {export.last_error}")
    if trace.attempts:
        lines.append("attempts:")
        for a in trace.attempts:
            error = f": {a.error}" if a.error else ""
            lines.append(
                f"  {_when(a.started_at)}  {a.duration_ms:9.1f} ms  {a.outcome:<8} {a.consumer} "
                f"({a.topic}[{a.partition}]@{a.offset}){error}"
            )
    lines += _record_lines("dead letter", trace.dead_letter)
    if trace.redrives:
        lines += ["", "redrives:"]
        lines += [f"  {_when(r.created_at)}  {r.get_action_display()} by {r.actor}" for r in trace.redrives]
    return lines


def _record_lines(title: str, read: RecordRead | None) -> list[str]:
    if read is None:
        return []
    lines = ["", f"{title} at {read.topic}[{read.partition}]@{read.offset}:"]
    record = read.record
    if record is None:
        return lines + [f"  {read.missing}"]
    lines.append(f"  timestamp {_when(record.timestamp) if record.timestamp else 'none'}, key {record.key_text!r}")
    lines += [f"  header {name}={'null' if text is None else text}" for name, text in record.header_texts]
    lines += ["  " + line for line in (record.value_text or "null").splitlines()]
    if not record.value_complete:
        lines.append(f"  (the first {len(record.value_head)} of {record.value_length} bytes)")
    return lines


def _when(at: datetime) -> str:
    return at.isoformat(sep=" ", timespec="milliseconds")


def duration_text(span: timedelta) -> str:
    """A span as people read it: milliseconds under a second, else seconds."""
    seconds = span.total_seconds()
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.2f} s"


# --- as data, for `order_trace --json` --------------------------------------------------------


def order_trace_data(trace: OrderTrace) -> dict[str, Any]:
    """The trace as JSON-ready data: times in ISO 8601, durations in seconds."""
    order, export = trace.order, trace.export
    return {
        "order": {
            "id": order.pk,
            "status": order.status,
            "customer_id": order.customer_id,
            "created_at": _iso(order.created_at),
            "confirmed_at": _iso(order.confirmed_at),
        },
        "steps": [{"step": s.name, "at": _iso(s.at), "after_seconds": _seconds(s.after)} for s in trace.steps],
        "confirm_to_exported_seconds": _seconds(trace.confirm_to_exported),
        "events": [_event_data(event) for event in trace.events],
        "record": _record_data(trace.record),
        "export": None
        if export is None
        else {
            "status": export.status,
            "attempts": export.attempts,
            "exported_at": _iso(export.exported_at),
            "idempotency_key": str(export.event_id) if export.event_id else None,
            "last_error": export.last_error,
        },
        "attempts": [
            {
                "started_at": _iso(a.started_at),
                "duration_ms": a.duration_ms,
                "consumer": a.consumer,
                "outcome": a.outcome,
                "error": a.error,
                "event_id": str(a.event_id),
                "topic": a.topic,
                "partition": a.partition,
                "offset": a.offset,
            }
            for a in trace.attempts
        ],
        "dead_letter": _record_data(trace.dead_letter),
        "redrives": [
            {"at": _iso(r.created_at), "actor": r.actor, "action": r.action, "detail": r.detail} for r in trace.redrives
        ],
    }


def _event_data(event: OutboxEvent) -> dict[str, Any]:
    event_trace = trace_id_of(event.headers)
    return {
        "event_id": str(event.event_id),
        # The trace the event was recorded in (its traceparent), and its link when
        # OTEL_TRACE_URL_TEMPLATE is set.
        "trace_id": event_trace,
        "trace_url": trace_url(event_trace),
        "event_type": event.event_type,
        "topic": event.topic,
        "created_at": _iso(event.created_at),
        "sent_at": _iso(event.sent_at),
        "send_attempts": event.attempts,
        "last_error": event.last_error or None,
        "partition": event.partition,
        "offset": event.offset,
        "quarantined_at": _iso(event.quarantined_at),
    }


def _record_data(read: RecordRead | None) -> dict[str, Any] | None:
    if read is None:
        return None
    data: dict[str, Any] = {"topic": read.topic, "partition": read.partition, "offset": read.offset}
    record = read.record
    if record is None:
        return {**data, "missing": read.missing}
    value: Any = record.value_text
    if record.value_is_json:
        value = json.loads(record.value_head)
    return {
        **data,
        "timestamp": _iso(record.timestamp),
        "key": record.key_text,
        "headers": [[name, text] for name, text in record.header_texts],
        # A value longer than what was read of it is its first bytes as text.
        "value": value,
        "value_bytes": record.value_length,
        "value_complete": record.value_complete,
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _seconds(span: timedelta | None) -> float | None:
    return round(span.total_seconds(), 3) if span is not None else None
