"""Small factories for tests: plain functions that go through the services, so every object they
make is one the application itself could have made."""
from __future__ import annotations

import itertools
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
            if headers else -1
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
