"""Reading the `OrderExportRequested` event off the wire, as the contract defines it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from kafka_bridge.consumer import NonRetryableError
from kafka_bridge.consumer.dead_letters import DeadLetterPosition

EVENT_TYPE = "OrderExportRequested"
SCHEMA_VERSION = 1
# On a record a redrive republished: the dead letter it is a copy of, "<DLT>:<partition>:<offset>".
# The copy keeps the original's key, value and headers byte for byte; this one header is added,
# so that the consumer sends a failed export again for that copy only (exports.services).
REDRIVE_HEADER = "redrive.from"


class PoisonRecord(NonRetryableError):
    """A record no retry can process: undecodable, or of an unknown type or version."""


@dataclass(frozen=True)
class ExportRequest:
    event_id: uuid.UUID
    order_id: int
    order: dict[str, Any]
    # When the order was confirmed; only measured (the export delay), so a missing or malformed
    # value does not make the record poison.
    occurred_at: datetime | None = field(default=None, compare=False)


def export_request_decode(value: bytes | None) -> ExportRequest:
    try:
        event = json.loads(value.decode("utf-8")) if value is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PoisonRecord(f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise PoisonRecord("value is not a JSON object")
    if event.get("event_type") != EVENT_TYPE:
        raise PoisonRecord(f"unknown event_type {event.get('event_type')!r}")
    version = event.get("schema_version")
    # bool is an int: `true == 1` must not pass for version 1.
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise PoisonRecord(f"unknown schema_version {version!r}")
    try:
        event_id = uuid.UUID(str(event["event_id"]))
    except (KeyError, ValueError) as exc:
        raise PoisonRecord("event_id is missing or not a UUID") from exc
    order = event.get("order")
    if not isinstance(order, dict) or isinstance(order.get("id"), bool) or not isinstance(order.get("id"), int):
        raise PoisonRecord("order is missing or has no integer id")
    occurred_at = _moment(event.get("occurred_at"))
    return ExportRequest(event_id=event_id, order_id=order["id"], order=order, occurred_at=occurred_at)


def _moment(value: Any) -> datetime | None:
    try:
        moment = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def redrive_header(position: DeadLetterPosition) -> tuple[str, bytes]:
    return REDRIVE_HEADER, f"{position.topic}:{position.partition}:{position.offset}".encode()


def redriven_from(headers: list[tuple[str, bytes | None]] | None) -> DeadLetterPosition | None:
    """The dead letter a record is a redrive of, from its `REDRIVE_HEADER`; None when it has no
    such header, or one that does not parse."""
    value = next((v for name, v in headers or () if name == REDRIVE_HEADER), None)
    if value is None:
        return None
    topic, _, rest = value.decode("utf-8", "replace").rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not (topic and partition.isascii() and partition.isdigit() and rest.isascii() and rest.isdigit()):
        return None
    return DeadLetterPosition(topic, int(partition), int(rest))
