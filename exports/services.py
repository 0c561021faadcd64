"""The consumer side's use case: send a confirmed order to the external platform once, and
what operators do with exports that failed."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from exports.clients import ExternalPlatformClient, PermanentExportError, TransientExportError
from exports.events import ExportRequest, PoisonRecord
from exports.models import OrderExport, ProcessedEvent, RedriveAudit
from kafka_bridge import metrics
from kafka_bridge.outbox import outbox_resend
from orders.models import Order

logger = logging.getLogger(__name__)


class UnknownOrder(PoisonRecord):
    """The event names an order this database does not have."""


@dataclass(frozen=True)
class ExportOutcome:
    status: Literal["exported", "duplicate", "dead_lettered_earlier"]
    export: OrderExport


def order_export(*, request: ExportRequest, client: ExternalPlatformClient) -> ExportOutcome:
    """Send the event's order to the platform unless that was done already, and record the
    result; the event id is recorded as processed in the same transaction as the success.

    Raises `TransientExportError` or `PermanentExportError` after recording the attempt (the
    consumer retries or dead-letters the record), and `UnknownOrder`.
    """
    with transaction.atomic():
        if not Order.objects.filter(pk=request.order_id).exists():
            raise UnknownOrder(f"order {request.order_id} does not exist")
        export, _ = OrderExport.objects.select_for_update().get_or_create(
            order_id=request.order_id, defaults={"event_id": request.event_id}
        )
        if ProcessedEvent.objects.filter(event_id=request.event_id).exists():
            return ExportOutcome("duplicate", export)
        if export.status == OrderExport.Status.EXPORTED:
            return ExportOutcome("duplicate", export)
        if export.status == OrderExport.Status.FAILED:
            # Dead-lettered already (this is a redelivery): a new try is an operator's call.
            return ExportOutcome("dead_lettered_earlier", export)

    try:
        # Outside any transaction: no row lock is held while waiting on the network. The
        # Idempotency-Key lets the platform drop a repeat if we crash before the commit below.
        client.send(order=request.order, idempotency_key=str(request.event_id))
    except (TransientExportError, PermanentExportError) as exc:
        _count_attempt(export, last_error=str(exc))
        kind = "transient" if isinstance(exc, TransientExportError) else "permanent"
        metrics.EXPORT_ATTEMPTS_FAILED.labels(kind=kind).inc()
        raise
    with transaction.atomic():
        _count_attempt(
            export,
            status=OrderExport.Status.EXPORTED,
            last_error=None,
            exported_at=timezone.now(),
            event_id=request.event_id,
        )
        ProcessedEvent.objects.create(event_id=request.event_id, order_id=request.order_id)
    metrics.EVENTS_EXPORTED.inc()
    if request.occurred_at is not None:
        metrics.EXPORT_DELAY.observe(max(0.0, (export.exported_at - request.occurred_at).total_seconds()))
    return ExportOutcome("exported", export)


def _count_attempt(export: OrderExport, **fields) -> None:
    OrderExport.objects.filter(pk=export.pk).update(attempts=F("attempts") + 1, updated_at=timezone.now(), **fields)
    export.refresh_from_db()


def order_export_fail(*, order_id: int, event_id: uuid.UUID | None, reason: str) -> OrderExport | None:
    """Mark the order's export failed: its event went to the dead-letter topic. None when the
    order does not exist."""
    if not Order.objects.filter(pk=order_id).exists():
        return None
    export, _ = OrderExport.objects.get_or_create(order_id=order_id, defaults={"event_id": event_id})
    OrderExport.objects.filter(pk=export.pk).update(
        status=OrderExport.Status.FAILED, last_error=reason, updated_at=timezone.now()
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


def order_export_reopen(*, order_ids: Iterable[int]) -> list[int]:
    """Put failed exports of these orders back to pending before their events are replayed;
    returns the order ids reopened."""
    order_ids = list(order_ids)
    reopened = list(
        OrderExport.objects.filter(order_id__in=order_ids, status=OrderExport.Status.FAILED).values_list("order_id", flat=True)
    )
    OrderExport.objects.filter(order_id__in=reopened).update(
        status=OrderExport.Status.PENDING, attempts=0, last_error=None, updated_at=timezone.now()
    )
    return reopened
