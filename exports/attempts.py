"""The attempt log: every call to the platform about an order, as `ExportAttempt` rows written
in the transaction that records the export's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from exports.bulk_writes import rows_insert
from exports.events import ExportRequest
from exports.models import ExportAttempt


@dataclass(frozen=True)
class PlatformCall:
    """One call to the platform as a consumer made it, for its order's attempt log: the request
    it sent, the record it came from, and what came of it (`error` None: exported).
    `first_attempt`: the order had no export before this call, so no older attempts to prune."""

    request: ExportRequest
    first_attempt: bool
    topic: str
    partition: int
    offset: int
    consumer: str
    started_at: datetime
    duration: float
    error: BaseException | None


ATTEMPT_COLUMNS = [
    "order_id",
    "event_id",
    "topic",
    "partition",
    "offset",
    "consumer",
    "started_at",
    "duration_ms",
    "outcome",
    "error",
]


def attempts_record(*, calls: Sequence[PlatformCall]) -> None:
    """The calls inserted in bulk; then, for orders that had attempts before (a first attempt
    leaves nothing to prune, and is the common case), all but their newest
    EXPORT_ATTEMPTS_KEPT deleted."""
    exported, failed = ExportAttempt.Outcome.EXPORTED.value, ExportAttempt.Outcome.FAILED.value
    rows = []
    for call in calls:
        request, error = call.request, call.error
        rows.append(
            (
                request.order_id,
                request.event_id,
                call.topic,
                call.partition,
                call.offset,
                call.consumer,
                call.started_at,
                round(call.duration * 1000, 3),
                exported if error is None else failed,
                "" if error is None else f"{type(error).__name__}: {error}"[:2000],
            )
        )
    rows_insert(ExportAttempt, ATTEMPT_COLUMNS, rows)
    retried = {call.request.order_id for call in calls if not call.first_attempt}
    if retried:
        stale = list(
            ExportAttempt.objects.filter(order_id__in=retried)
            .annotate(newer=Window(RowNumber(), partition_by=[F("order_id")], order_by=F("id").desc()))
            .filter(newer__gt=settings.EXPORT_ATTEMPTS_KEPT)
            .values_list("pk", flat=True)
        )
        if stale:
            ExportAttempt.objects.filter(pk__in=stale).delete()
