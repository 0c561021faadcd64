"""The consumer side's use case: send a confirmed order to the external platform once, and
what operators do with exports that failed."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from exports import metrics
from exports.attempts import PlatformCall, attempts_record
from exports.bulk_writes import pk_in, rows_insert
from exports.clients import TransientExportError
from exports.events import ExportRequest, PoisonRecord
from exports.models import OrderExport, ProcessedEvent, RedriveAudit
from kafka_bridge.dead_letter import DeadLetterPosition
from kafka_bridge.outbox import outbox_resend
from orders.models import Order

logger = logging.getLogger(__name__)


class UnknownOrder(PoisonRecord):
    """The event names an order this database does not have."""


@dataclass(frozen=True)
class ExportPlan:
    """What to do with one export request: `send` it to the platform, or nothing because it is a
    `duplicate` (exported already) or was `dead_lettered_earlier` (a new try is an operator's
    call); `error` instead when it cannot be exported at all (`UnknownOrder`)."""

    request: ExportRequest
    action: Literal["send", "duplicate", "dead_lettered_earlier"] | None
    error: Exception | None = None
    # The order's export as read, or None before its first attempt.
    export: OrderExport | None = None


def order_exports_plan(
    *, requests: Sequence[ExportRequest], redriven_from: Sequence[DeadLetterPosition | None] = ()
) -> list[ExportPlan]:
    """Decide, for many requests at once, which must go to the platform: one read of the orders
    with their exports, and one of the processed event ids only for orders that have an export.

    `redriven_from` gives, per request, the dead letter it is a redrive of (`exports.redrive`
    marks the copies it republishes): a failed export is sent again only for the copy of its own
    latest dead letter, and a redrive need not reopen it before its copy is on the topic.

    The caller sends at most one request per order at a time and records each outcome with
    `order_exports_record` before the next request of that order is planned."""
    order_ids = {request.order_id for request in requests}
    # The orders and their exports in one query (the export is null until a first attempt).
    known_orders: set[int] = set()
    exports: dict[int, OrderExport] = {}
    for order_id, export_id, status, event_id, attempts, dlt_topic, dlt_partition, dlt_offset in Order.objects.filter(
        pk_in(Order, order_ids)
    ).values_list(
        "pk",
        "export__id",
        "export__status",
        "export__event_id",
        "export__attempts",
        "export__dead_letter_topic",
        "export__dead_letter_partition",
        "export__dead_letter_offset",
    ):
        known_orders.add(order_id)
        if export_id is not None:
            exports[order_id] = OrderExport(
                id=export_id,
                order_id=order_id,
                status=status,
                event_id=event_id,
                attempts=attempts,
                dead_letter_topic=dlt_topic,
                dead_letter_partition=dlt_partition,
                dead_letter_offset=dlt_offset,
            )
    # A processed event is written with its order's export, in one transaction, so only events
    # of orders that have an export can have been processed: on a first delivery, none.
    seen_before = {request.event_id for request in requests if request.order_id in exports}
    processed = (
        set(ProcessedEvent.objects.filter(event_id__in=seen_before).values_list("event_id", flat=True))
        if seen_before
        else set()
    )
    plans = []
    redriven_from = list(redriven_from) or [None] * len(requests)
    for request, redrive in zip(requests, redriven_from):
        export = exports.get(request.order_id)
        if request.order_id not in known_orders:
            plans.append(ExportPlan(request, None, UnknownOrder(f"order {request.order_id} does not exist")))
        elif request.event_id in processed or (export is not None and export.status == OrderExport.Status.EXPORTED):
            plans.append(ExportPlan(request, "duplicate", export=export))
        elif (
            export is not None
            and export.status == OrderExport.Status.FAILED
            and not _is_its_latest_dead_letter(export, redrive)
        ):
            plans.append(ExportPlan(request, "dead_lettered_earlier", export=export))
        else:
            plans.append(ExportPlan(request, "send", export=export))
    return plans


def _is_its_latest_dead_letter(export: OrderExport, position: DeadLetterPosition | None) -> bool:
    return position is not None and (
        export.dead_letter_topic,
        export.dead_letter_partition,
        export.dead_letter_offset,
    ) == (position.topic, position.partition, position.offset)


def order_exports_record(
    *,
    sent: Sequence[ExportPlan] = (),
    failed: Sequence[tuple[ExportPlan, Exception]] = (),
    calls: Sequence[PlatformCall] = (),
) -> None:
    """Record what the platform said about planned sends, in one transaction: each success
    marks its export exported and its event id processed, together; each failure counts an
    attempt with its error (the export stays pending: the consumer retries or dead-letters);
    each of `calls` becomes an `ExportAttempt`."""
    now = timezone.now()
    with transaction.atomic():
        if sent:
            _record_exported(sent=sent, now=now)
        if failed:
            _record_failed(failed=failed, now=now)
        if calls:
            attempts_record(calls=calls)
    for _, error in failed:
        kind = "transient" if isinstance(error, TransientExportError) else "permanent"
        metrics.EXPORT_ATTEMPTS_FAILED.labels(kind=kind).inc()
    if sent:
        metrics.EVENTS_EXPORTED.inc(len(sent))
        for plan in sent:
            if plan.request.occurred_at is not None:
                metrics.EXPORT_DELAY.observe(max(0.0, (now - plan.request.occurred_at).total_seconds()))


def _record_exported(*, sent: Sequence[ExportPlan], now) -> None:
    """The exports marked exported and the event ids recorded as processed, in bulk."""
    same_event, other_event, new = [], [], []
    for plan in sent:
        export, request = plan.export, plan.request
        if export is None:
            new.append(request)
        elif export.event_id == request.event_id:
            same_event.append(export.pk)
        else:
            other_event.append((export.pk, request.event_id))
    exported = {
        "status": OrderExport.Status.EXPORTED,
        "attempts": F("attempts") + 1,
        "last_error": None,
        "exported_at": now,
        "updated_at": now,
    }
    if same_event:
        OrderExport.objects.filter(pk__in=same_event).update(**exported)
    for pk, event_id in other_event:
        OrderExport.objects.filter(pk=pk).update(**exported, event_id=event_id)
    rows_insert(
        OrderExport,
        ["order_id", "status", "attempts", "event_id", "exported_at", "updated_at"],
        [(r.order_id, OrderExport.Status.EXPORTED.value, 1, r.event_id, now, now) for r in new],
    )
    rows_insert(
        ProcessedEvent,
        ["event_id", "order_id", "processed_at"],
        [(plan.request.event_id, plan.request.order_id, now) for plan in sent],
    )


def _record_failed(*, failed: Sequence[tuple[ExportPlan, Exception]], now) -> None:
    """An attempt counted for each failure, with its error: one UPDATE per distinct error text
    (an outage gives every call the same one) and one INSERT for first attempts."""
    by_error: dict[str, list[int]] = defaultdict(list)
    new = []
    for plan, error in failed:
        if plan.export is None:
            new.append(
                (plan.request.order_id, OrderExport.Status.PENDING.value, 1, plan.request.event_id, str(error), now)
            )
        else:
            by_error[str(error)].append(plan.export.pk)
    for text, pks in by_error.items():
        OrderExport.objects.filter(pk__in=pks).update(attempts=F("attempts") + 1, last_error=text, updated_at=now)
    rows_insert(OrderExport, ["order_id", "status", "attempts", "event_id", "last_error", "updated_at"], new)


def order_export_fail(
    *, order_id: int, event_id: uuid.UUID | None, reason: str, dead_letter: DeadLetterPosition | None = None
) -> OrderExport | None:
    """Mark the order's export failed: its event went to the dead-letter topic, at
    `dead_letter` when known. None when the order does not exist."""
    if not Order.objects.filter(pk=order_id).exists():
        return None
    export, _ = OrderExport.objects.get_or_create(order_id=order_id, defaults={"event_id": event_id})
    now = timezone.now()
    where = {}
    if dead_letter is not None:
        where = {
            "dead_letter_topic": dead_letter.topic,
            "dead_letter_partition": dead_letter.partition,
            "dead_letter_offset": dead_letter.offset,
            "dead_lettered_at": now,
        }
    OrderExport.objects.filter(pk=export.pk).update(
        status=OrderExport.Status.FAILED, last_error=reason, updated_at=now, **where
    )
    export.refresh_from_db()
    return export


@dataclass
class RetryResult:
    retried: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def order_export_retry(*, export_ids: Iterable[int], actor: str) -> RetryResult:
    """Send failed exports again: each goes back to pending, its outbox event is queued for the
    relay (same event id, so the same Idempotency-Key), and an audit row records who did it."""
    result = RetryResult()
    event_ids: list[str] = []
    with transaction.atomic():
        for export in OrderExport.objects.select_for_update().filter(pk__in=list(export_ids)).order_by("pk"):
            if export.status != OrderExport.Status.FAILED:
                result.skipped.append(f"order {export.order_id} ({export.status}, not failed)")
                continue
            if export.event_id is None or not outbox_resend(event_ids=[export.event_id]):
                result.skipped.append(f"order {export.order_id} (its event is not in the outbox)")
                continue
            export.status, export.attempts, export.last_error = OrderExport.Status.PENDING, 0, None
            export.save(update_fields=["status", "attempts", "last_error", "updated_at"])
            result.retried.append(export.order_id)
            event_ids.append(str(export.event_id))
        if result.retried:
            RedriveAudit.objects.create(
                actor=actor,
                action=RedriveAudit.Action.ADMIN_RETRY,
                event_ids=event_ids,
                order_ids=result.retried,
            )
    return result


def order_exports_reopen(*, dead_letters: Iterable[tuple[int, DeadLetterPosition]]) -> list[int]:
    """Put failed exports back to pending once the redrive has their dead letters' copies on the
    topic: each `(order id, dead letter)` whose export is still failed *at that dead letter*. An
    export the consumer already took up again from the copy (exported, or failed anew at a later
    dead letter) is left as it is. Returns the order ids reopened."""
    wanted: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
    for order_id, position in dead_letters:
        wanted[order_id].add((position.topic, position.partition, position.offset))
    if not wanted:
        return []
    failed = OrderExport.objects.filter(order_id__in=list(wanted), status=OrderExport.Status.FAILED).values_list(
        "order_id", "dead_letter_topic", "dead_letter_partition", "dead_letter_offset"
    )
    reopened = [order_id for order_id, *position in failed if tuple(position) in wanted[order_id]]
    OrderExport.objects.filter(order_id__in=reopened, status=OrderExport.Status.FAILED).update(
        status=OrderExport.Status.PENDING, attempts=0, last_error=None, updated_at=timezone.now()
    )
    return reopened
