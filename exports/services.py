"""The consumer side's use case: send a confirmed order to the external platform once, and
what operators do with exports that failed."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from exports import metrics
from exports.attempts import PlatformCall, attempts_record
from exports.bulk_writes import rows_insert
from exports.events import ExportRequest, PoisonRecord
from exports.models import OrderExport, ProcessedEvent, RedriveAudit
from exports.platform.client import TransientExportError
from exports.selectors import order_exports_of
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from kafka_bridge.outbox.store import outbox_resend
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
    # The orders and their exports in one statement (no export until a first attempt).
    known_orders, exports = order_exports_of({request.order_id for request in requests})
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


@dataclass(frozen=True)
class OutboxRedrive:
    """Failed exports an operator chose (the admin's "Retry failed exports"), sent again from
    their outbox events: same event id, so the same Idempotency-Key."""

    export_ids: tuple[int, ...]


@dataclass(frozen=True)
class ReplayedDeadLetter:
    """A dead letter whose copy the broker acknowledged on its topic; `event_id` and `order_id`
    as read from it (None when it is not an export request)."""

    position: DeadLetterPosition
    event_id: str | None
    order_id: int | None


@dataclass(frozen=True)
class DeadLetterRedrive:
    """Dead letters a replay has republished (`exports.redrive.dlt_replay`), from the time it
    `began_at`; `selected` when an operator named them, `refused` what it could not republish."""

    replayed: tuple[ReplayedDeadLetter, ...]
    began_at: datetime
    selected: bool = False
    refused: tuple[str, ...] = ()


@dataclass
class RedriveResult:
    """The orders whose exports were reopened, and the ones named but left as they were, each
    with its reason."""

    reopened: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def order_exports_redrive(*, actor: str, source: OutboxRedrive | DeadLetterRedrive) -> RedriveResult:
    """Put failed exports back to pending (no attempts, no error) and audit who did it, in one
    transaction: the redrive's one reset of an export and one audit row, whatever sends it again.

    From the outbox, each chosen export that is failed and whose event is still in the outbox
    is reopened and its event queued for the relay; any other is skipped with a reason. From
    dead letters, which must already be on the topic again, an export is reopened only while it
    is still failed *at that dead letter*: one the consumer took up again from the copy
    (exported, or failed anew at a later dead letter) is left as it is."""
    with transaction.atomic():
        if isinstance(source, OutboxRedrive):
            chosen, skipped = _outbox_requeue(source)
        else:
            chosen, skipped = _still_failed_at(source)
        OrderExport.objects.filter(pk__in=[export.pk for export in chosen], status=OrderExport.Status.FAILED).update(
            status=OrderExport.Status.PENDING, attempts=0, last_error=None, updated_at=timezone.now()
        )
        if audit := _redrive_audit(actor=actor, source=source, reopened=chosen):
            audit.save()
    return RedriveResult(reopened=[export.order_id for export in chosen], skipped=skipped)


def _outbox_requeue(source: OutboxRedrive) -> tuple[list[OrderExport], list[str]]:
    """The chosen exports that are failed and whose event the outbox queued again, locked; and
    why each other is skipped."""
    chosen, skipped = [], []
    for export in OrderExport.objects.select_for_update().filter(pk__in=list(source.export_ids)).order_by("pk"):
        if export.status != OrderExport.Status.FAILED:
            skipped.append(f"order {export.order_id} ({export.status}, not failed)")
        elif export.event_id is None or not outbox_resend(event_ids=[export.event_id]):
            skipped.append(f"order {export.order_id} (its event is not in the outbox)")
        else:
            chosen.append(export)
    return chosen, skipped


def _still_failed_at(source: DeadLetterRedrive) -> tuple[list[OrderExport], list[str]]:
    """The exports of the replayed dead letters still failed at one of them, locked; and why
    each other order named is left as it is."""
    wanted: dict[int, set[tuple[str, int, int]]] = defaultdict(set)
    for dead_letter in source.replayed:
        if dead_letter.order_id is not None:
            wanted[dead_letter.order_id].add(tuple(_position(dead_letter.position)))
    if not wanted:
        return [], []
    chosen = [
        export
        for export in OrderExport.objects.select_for_update()
        .filter(order_id__in=list(wanted), status=OrderExport.Status.FAILED)
        .order_by("pk")
        if (export.dead_letter_topic, export.dead_letter_partition, export.dead_letter_offset)
        in wanted[export.order_id]
    ]
    reopened = {export.order_id for export in chosen}
    skipped = [
        f"order {order_id} (not failed at that dead letter)" for order_id in sorted(wanted) if order_id not in reopened
    ]
    return chosen, skipped


def _redrive_audit(
    *, actor: str, source: OutboxRedrive | DeadLetterRedrive, reopened: list[OrderExport]
) -> RedriveAudit | None:
    """The audit row of a redrive: from the outbox, the exports reopened (none, no row); from
    dead letters, every record replayed, whether its export was reopened or not."""
    if isinstance(source, OutboxRedrive):
        if not reopened:
            return None
        return RedriveAudit(
            actor=actor,
            action=RedriveAudit.Action.ADMIN_RETRY,
            event_ids=[str(export.event_id) for export in reopened],
            order_ids=[export.order_id for export in reopened],
        )
    if not source.replayed:
        return None
    detail = f"{len(source.replayed)} record(s) from {settings.ORDER_EXPORT_DLT_TOPIC}" + (
        " selected by partition and offset or key" if source.selected else ""
    )
    if source.refused:
        detail += f"; {len(source.refused)} refused: " + "; ".join(source.refused)
    return RedriveAudit(
        # Dated when the redrive began: the row is written once the copies are on the topic, and
        # a consumer may have exported them by then.
        created_at=source.began_at,
        actor=actor,
        action=RedriveAudit.Action.REPLAY_DLT,
        event_ids=[dead_letter.event_id for dead_letter in source.replayed],
        order_ids=[dead_letter.order_id for dead_letter in source.replayed if dead_letter.order_id is not None],
        dlt_positions=[_position(dead_letter.position) for dead_letter in source.replayed],
        detail=detail,
    )


def _position(position: DeadLetterPosition) -> list:
    return [position.topic, position.partition, position.offset]
