"""Domain events of the orders app, as plain objects.

`orders` knows nothing about Kafka. An event leaves it through `event_record()`, which hands it
to the recorder named by the `DOMAIN_EVENT_RECORDER` setting (the Kafka outbox by default),
inside the caller's transaction.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from typing import Any, ClassVar

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string


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


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def event_record(event: OrderExportRequested) -> None:
    """Record `event` for publication; call inside the transaction that caused it."""
    import_string(settings.DOMAIN_EVENT_RECORDER)(event=event)
