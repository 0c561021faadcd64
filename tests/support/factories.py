"""Small factories for tests: models made through the services, so every object they make is one
the application itself could have made; OrderExportRequested events as the contract writes them;
consumer records as `KafkaConsumer.poll()` hands them out."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from kafka.consumer.fetcher import ConsumerRecord

from kafka_bridge.models import OutboxEvent
from orders.models import Order
from orders.services import LineInput, order_confirm, order_create

DEFAULT_PASSWORD = "pw-for-tests"
DEFAULT_LINES = ({"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},)

_usernames = (f"user-{n}" for n in itertools.count(1))
_offsets = itertools.count()

# An `export_event_factory` change to MISSING leaves that member out of the event.
MISSING = object()
# The order of `export_event_factory`'s events: the contract's `order` member, schema_version 1.
EVENT_ORDER: dict[str, Any] = {
    "id": 7,
    "customer_id": "c-1",
    "status": "confirmed",
    "total_amount": "20.00",
    "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}],
    "created_at": "2025-01-01T10:00:00Z",
    "confirmed_at": "2025-01-01T10:05:00Z",
}


def user_factory(
    *,
    username: str | None = None,
    password: str = DEFAULT_PASSWORD,
    permissions: Iterable[str] = (),
    is_staff: bool = False,
):
    """A saved user with a usable password (for session logins), granted `permissions` given as
    "app_label.codename" (e.g. "orders.view_order")."""
    user = get_user_model().objects.create_user(
        username=username or next(_usernames), password=password, is_staff=is_staff
    )
    user.user_permissions.add(*(permission_get(name) for name in permissions))
    return user


def permission_get(name: str) -> Permission:
    """The Permission named "app_label.codename", as `user.has_perm()` names it."""
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def order_factory(
    *,
    customer_id: str = "c-1",
    lines: Iterable[Mapping[str, Any]] | None = None,
    confirmed: bool = False,
) -> Order:
    """An order made by `order_create` (and `order_confirm` when `confirmed`); `lines` take the
    API's shape: `{"sku": ..., "quantity": ..., "unit_price": "10.00"}`."""
    order = order_create(
        customer_id=customer_id,
        lines=[
            LineInput(sku=line["sku"], quantity=line["quantity"], unit_price=Decimal(str(line["unit_price"])))
            for line in (DEFAULT_LINES if lines is None else lines)
        ],
    )
    if confirmed:
        order = order_confirm(order_id=order.pk)
    return order


def consumer_record_factory(
    *,
    value: bytes | None,
    key: bytes | None = None,
    topic: str = "order-export",
    partition: int = 0,
    offset: int | None = None,
    headers: Iterable[tuple[str, bytes | None]] = (),
    timestamp: int = 1_735_725_900_000,
) -> ConsumerRecord:
    """A record as `KafkaConsumer.poll()` hands it out (sizes computed as kafka-python's fetcher
    does); each record gets an offset of its own unless one is given."""
    headers = list(headers)
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        leader_epoch=0,
        offset=next(_offsets) if offset is None else offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        headers=headers,
        checksum=None,
        serialized_key_size=len(key) if key is not None else -1,
        serialized_value_size=len(value) if value is not None else -1,
        serialized_header_size=(
            sum(len(name.encode("utf-8")) + (len(data) if data is not None else 0) for name, data in headers)
            if headers
            else -1
        ),
    )


def export_record_factory(order: Order, **options: Any) -> ConsumerRecord:
    """The record of `order`'s OrderExportRequested event, with the bytes the producer sends for
    its outbox row (so the order must have been confirmed)."""
    row = OutboxEvent.objects.get(event_type="OrderExportRequested", key=str(order.pk))
    return consumer_record_factory(
        key=row.key.encode(),
        value=row.payload.encode(),
        headers=[(name, data.encode()) for name, data in row.headers],
        **options,
    )


def export_event_factory(*, order_id: int | None = None, **changes: Any) -> dict[str, Any]:
    """An OrderExportRequested event (schema_version 1) as a dict: a fresh event id, and EVENT_ORDER
    (under `order_id` when given) as its order. `changes` replace members; a member changed to
    MISSING is left out."""
    order = copy.deepcopy(EVENT_ORDER)
    if order_id is not None:
        order["id"] = order_id
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "OrderExportRequested",
        "schema_version": 1,
        "occurred_at": "2025-01-01T10:05:00Z",
        "order": order,
    }
    event.update(changes)
    return {name: value for name, value in event.items() if value is not MISSING}


def export_event_headers(event: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers the producer sends with `event`: its event_type and event_id."""
    return [("event_type", event["event_type"].encode()), ("event_id", event["event_id"].encode())]


def event_record_factory(event: Mapping[str, Any], **options: Any) -> ConsumerRecord:
    """The record of `event` (a dict) as the producer writes it: the order id as key, the JSON as
    value, `export_event_headers` as headers. `options` replace the key or headers, or set what
    `consumer_record_factory` takes besides (topic, partition, offset)."""
    options.setdefault("key", str(event["order"]["id"]).encode())
    options.setdefault("headers", export_event_headers(event))
    return consumer_record_factory(value=json.dumps(event).encode(), **options)
