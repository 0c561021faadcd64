"""Where one order stands between its confirm and the platform, from both ends: the database
(its outbox event, export, attempts, redrives) and the topics (its record and dead letter,
read back at the positions the broker acknowledged). The order's Delivery panel in the admin
and `manage.py order_trace` show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, router
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from exports.models import ExportAttempt, OrderExport, RedriveAudit
from kafka_bridge.connection import KafkaBridgeError
from kafka_bridge.console.browser.reading import RecordView, record_at
from kafka_bridge.models import OutboxEvent
from kafka_bridge.tracing import trace_id_of, trace_url
from orders.models import Order

# Redrives shown per order, newest first.
MAX_REDRIVES = 50


@dataclass(frozen=True)
class RecordRead:
    """A record looked up at its position: `record` when found, else `missing` says why."""

    topic: str
    partition: int
    offset: int
    record: RecordView | None = None
    missing: str = ""


@dataclass(frozen=True)
class Step:
    """One step of the order's way: `at` None when it has not happened (yet)."""

    name: str
    label: str
    at: datetime | None
    # From the step before it that happened, when both did.
    after: timedelta | None = None


@dataclass
class OrderTrace:
    order: Order
    # The order's events on the event topic, oldest first (one per confirm: normally one).
    events: list[OutboxEvent]
    export: OrderExport | None
    attempts: list[ExportAttempt]
    redrives: list[RedriveAudit]
    # Read from the topics only when asked: None when not read, or nothing to read.
    record: RecordRead | None = None
    dead_letter: RecordRead | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def event(self) -> OutboxEvent | None:
        return self.events[-1] if self.events else None

    @property
    def trace_id(self) -> str | None:
        """The trace the event was recorded in (its `traceparent`), if it was."""
        return trace_id_of(self.event.headers) if self.event is not None else None

    @property
    def trace_url(self) -> str | None:
        """That trace in the tracing UI, when OTEL_TRACE_URL_TEMPLATE is set."""
        return trace_url(self.trace_id)

    @property
    def confirm_to_exported(self) -> timedelta | None:
        exported = self.export.exported_at if self.export is not None else None
        if exported is None or self.order.confirmed_at is None:
            return None
        return exported - self.order.confirmed_at


def order_trace(*, order_id: int, read_topics: bool = True, timeout_ms: int | None = None) -> OrderTrace | None:
    """The order's trace, None when there is no such order. With `read_topics`, its record and
    its dead letter are read back from the broker (each bounded by `timeout_ms`, by default
    KAFKA_STATUS_TIMEOUT_MS); an unreachable broker is reported in `RecordRead.missing`."""
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return None
    events = list(OutboxEvent.objects.filter(topic=settings.ORDER_EXPORT_TOPIC, key=str(order_id)).order_by("id"))
    trace = OrderTrace(
        order=order,
        events=events,
        export=OrderExport.objects.filter(order_id=order_id).first(),
        # The newest EXPORT_ATTEMPTS_KEPT are all there are.
        attempts=list(ExportAttempt.objects.filter(order_id=order_id).order_by("id")),
        redrives=_redrives_of(order_id),
    )
    if read_topics:
        timeout_ms = timeout_ms or settings.KAFKA_STATUS_TIMEOUT_MS
        export, position = trace.export, _record_position(trace)
        if position is not None:
            topic, partition, offset = position
            trace.record = _read(topic=topic, partition=partition, offset=offset, timeout_ms=timeout_ms)
        if export is not None and export.dead_letter_partition is not None and export.dead_letter_offset is not None:
            trace.dead_letter = _read(
                topic=export.dead_letter_topic,
                partition=export.dead_letter_partition,
                offset=export.dead_letter_offset,
                timeout_ms=timeout_ms,
            )
    trace.steps = _steps(trace)
    return trace


def _redrives_of(order_id: int) -> list[RedriveAudit]:
    """The redrives whose `order_ids` hold the order. SQLite has no JSON containment lookup in
    Django, so it asks `json_each`; PostgreSQL's `@>` is what `contains` does."""
    audits = RedriveAudit.objects.exclude(action=RedriveAudit.Action.RESET_OFFSETS)
    db = connections[router.db_for_read(RedriveAudit)]
    if db.vendor == "postgresql":
        audits = audits.filter(order_ids__contains=[order_id])
    else:
        column = f"{db.ops.quote_name(RedriveAudit._meta.db_table)}.{db.ops.quote_name('order_ids')}"
        audits = audits.filter(
            RawSQL(
                f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value = %s)",
                (order_id,),
                output_field=BooleanField(),
            )
        )
    return list(audits.order_by("-id")[:MAX_REDRIVES])


def _steps(trace: OrderTrace) -> list[Step]:
    """confirmed → outbox → on the topic → (dead-lettered, redriven: as often as they happened,
    in time order) → accepted by the platform."""
    event, export = trace.event, trace.export
    steps = [
        ("confirmed", "Confirmed", trace.order.confirmed_at),
        ("outbox", "Event recorded (outbox)", event.created_at if event is not None else None),
        ("on-topic", "On the topic", _on_topic_at(trace)),
    ]
    detours = [("redriven", f"Redriven by {r.actor}", r.created_at) for r in trace.redrives]
    if export is not None and export.dead_lettered_at is not None:
        detours.append(("dead-lettered", "Dead-lettered", export.dead_lettered_at))
    steps += sorted(detours, key=lambda step: step[2])
    steps.append(("exported", "Accepted by the platform", export.exported_at if export is not None else None))
    result, previous = [], None
    for name, label, at in steps:
        result.append(Step(name, label, at, at - previous if at is not None and previous is not None else None))
        previous = at if at is not None else previous
    return result


def _on_topic_at(trace: OrderTrace) -> datetime | None:
    """The earliest sign that the event was on the topic: the record's own timestamp (set as it
    was sent), the first attempt (a consumer had read it), or the acknowledgement's mark. The
    mark alone can come after the export: it is written once the broker's answer is back."""
    event = trace.event
    if event is None:
        return None
    signs = [event.sent_at]
    if trace.record is not None and trace.record.record is not None:
        signs.append(trace.record.record.timestamp)
    signs += [attempt.started_at for attempt in trace.attempts[:1] if attempt.event_id == event.event_id]
    known = [at for at in signs if at is not None]
    return min(known) if known else None


def _record_position(trace: OrderTrace) -> tuple[str, int, int] | None:
    """Where the event's record is: as the broker acknowledged it, or, before that
    acknowledgement is written, where a consumer read it."""
    event = trace.event
    if event is None:
        return None
    if event.partition is not None and event.offset is not None:
        return event.topic, event.partition, event.offset
    for attempt in trace.attempts:
        if attempt.event_id == event.event_id:
            return attempt.topic, attempt.partition, attempt.offset
    return None


def _read(*, topic: str, partition: int, offset: int, timeout_ms: int) -> RecordRead:
    where = {"topic": topic, "partition": partition, "offset": offset}
    try:
        record = record_at(**where, timeout_ms=timeout_ms)
    except KafkaBridgeError as exc:
        return RecordRead(**where, missing=f"not read: {exc}")
    if record is None:
        return RecordRead(
            **where, missing="not on the topic any more (deleted by retention, or the topic was recreated)"
        )
    return RecordRead(**where, record=record)
