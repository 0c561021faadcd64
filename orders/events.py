"""Domain events of the orders app, as plain objects.

`orders` knows nothing about Kafka. An event leaves it through `event_record()`, which hands it,
inside the caller's transaction, to the recorder that the app publishing the events registered
(`event_recorder_register`: the exports app registers the Kafka outbox from its
`AppConfig.ready`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

if TYPE_CHECKING:
    from orders.models import Order


@dataclass(frozen=True)
class OrderExportRequested:
    """A confirmed order is ready to be sent to the external platform."""

    event_type: ClassVar[str] = "OrderExportRequested"
    schema_version: ClassVar[int] = 1

    order_id: int
    order: dict[str, Any]
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=timezone.now)

    @property
    def key(self) -> str:
        """Events of one order share a key, so they keep their order on one partition."""
        return str(self.order_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": _iso_utc(self.occurred_at),
            "order": self.order,
        }


def order_export_requested(order: Order) -> OrderExportRequested:
    """The event of a confirmed order (its lines prefetched)."""
    return OrderExportRequested(order_id=order.pk, order=order_payload_v1(order))


def order_payload_v1(order: Order) -> dict[str, Any]:
    """The event's `order` as schema_version 1 defines it (contracts/): the API's order without
    `export`, as it was when version 1 was published. Written out here rather than taken from
    the API's serializer, so that a change to the API cannot change the event behind its
    consumers' backs; a new field here is a new schema version."""
    return {
        "id": order.pk,
        "customer_id": order.customer_id,
        "status": order.status,
        "total_amount": _money(order.total_amount),
        "lines": [
            {"sku": line.sku, "quantity": line.quantity, "unit_price": _money(line.unit_price)}
            for line in order.lines.all()
        ],
        "created_at": _iso_utc(order.created_at),
        "confirmed_at": _iso_utc(order.confirmed_at) if order.confirmed_at is not None else None,
    }


def _money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01')):f}"


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class EventRecorder(Protocol):
    def __call__(self, *, event: OrderExportRequested) -> object: ...


_recorder: EventRecorder | None = None


def event_recorder_register(*, recorder: EventRecorder) -> None:
    """Where the orders' events go, told once at start-up by the app that publishes them. One
    recorder: an event recorded twice, or by whichever app registered last, would be a bug, so
    another one is refused."""
    global _recorder
    if _recorder is not None and _recorder is not recorder:
        raise ImproperlyConfigured(f"the orders' events already go to {_recorder!r}, not also to {recorder!r}")
    _recorder = recorder


def event_record(event: OrderExportRequested) -> None:
    """Record `event` for publication; call inside the transaction that caused it. Raises
    ImproperlyConfigured when no app registered a recorder: a confirm must not lose its event."""
    if _recorder is None:
        raise ImproperlyConfigured(
            "no recorder for the orders' events: the exports app, which registers the Kafka outbox, is not installed"
        )
    _recorder(event=event)
