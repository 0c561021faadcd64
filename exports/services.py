"""The consumer side's use case: send a confirmed order to the external platform once."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from exports.clients import ExternalPlatformClient, PermanentExportError, TransientExportError
from exports.events import ExportRequest, PoisonRecord
from exports.models import OrderExport
from orders.models import Order

logger = logging.getLogger(__name__)


class UnknownOrder(PoisonRecord):
    """The event names an order this database does not have."""


@dataclass(frozen=True)
class ExportOutcome:
    status: Literal["exported", "duplicate", "failed"]
    export: OrderExport


def order_export(*, request: ExportRequest, client: ExternalPlatformClient) -> ExportOutcome:
    """Send the event's order to the platform unless it already has it, and record the result.

    Raises `TransientExportError` (after recording the attempt) when a retry may help, and
    `UnknownOrder` when the order does not exist. A permanent refusal marks the export failed.
    """
    with transaction.atomic():
        if not Order.objects.filter(pk=request.order_id).exists():
            raise UnknownOrder(f"order {request.order_id} does not exist")
        export, _ = OrderExport.objects.select_for_update().get_or_create(order_id=request.order_id)
        if export.status != OrderExport.Status.PENDING:
            # Exported already (a redelivery), or refused for good: no second call.
            return ExportOutcome("duplicate", export)

    try:
        # Outside any transaction: no row lock is held while waiting on the network.
        client.send(order=request.order, idempotency_key=str(request.event_id))
    except TransientExportError as exc:
        _record(export, status=OrderExport.Status.PENDING, last_error=str(exc))
        raise
    except PermanentExportError as exc:
        _record(export, status=OrderExport.Status.FAILED, last_error=str(exc))
        return ExportOutcome("failed", export)
    _record(
        export,
        status=OrderExport.Status.EXPORTED,
        last_error=None,
        exported_at=timezone.now(),
        event_id=request.event_id,
    )
    return ExportOutcome("exported", export)


def _record(export: OrderExport, **fields) -> None:
    OrderExport.objects.filter(pk=export.pk).update(attempts=F("attempts") + 1, updated_at=timezone.now(), **fields)
    export.refresh_from_db()
