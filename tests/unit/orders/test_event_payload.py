"""The event's `order` (schema_version 1) is written out by `orders.events`, not taken from the
API's serializer: at version 1 the two agree, and the test below says so for odd orders too; a
change to the API that breaks this must become a new schema version, not a silent change."""

import json
from datetime import UTC, datetime

import pytest

from kafka_bridge.models import OutboxEvent
from orders.events import order_payload_v1
from orders.models import Order
from orders.serializers import OrderSerializer
from tests.support.factories import order_factory

pytestmark = pytest.mark.django_db

ORDERS = {
    "one line": dict(lines=[{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}]),
    "free and costly lines": dict(
        lines=[
            {"sku": "FREE", "quantity": 1, "unit_price": "0.00"},
            {"sku": "MAX", "quantity": 2_147_483_647, "unit_price": "9999999999.99"},
            {"sku": "ONE-DIGIT", "quantity": 3, "unit_price": "0.1"},
        ]
    ),
    "unicode ids": dict(customer_id="kundin-ü-東京-😀", lines=[{"sku": "ß-١", "quantity": 1, "unit_price": "5"}]),
    "longest ids": dict(customer_id="c" * 64, lines=[{"sku": "s" * 64, "quantity": 1, "unit_price": "1.00"}]),
}


@pytest.mark.parametrize("shape", ORDERS.values(), ids=ORDERS.keys())
@pytest.mark.parametrize("confirmed", [False, True], ids=["pending", "confirmed"])
def test_version_1_is_the_apis_order_without_export(shape, confirmed):
    order = Order.objects.prefetch_related("lines").get(pk=order_factory(confirmed=confirmed, **shape).pk)

    assert order_payload_v1(order) == json.loads(json.dumps(OrderSerializer(order).data))


def test_version_1_has_exactly_these_fields_and_formats():
    order = order_factory(
        customer_id="c-9",
        lines=[{"sku": "A", "quantity": 3, "unit_price": "2.50"}, {"sku": "B", "quantity": 1, "unit_price": "0.00"}],
    )
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    Order.objects.filter(pk=order.pk).update(created_at=moment, confirmed_at=moment, status="confirmed")
    order = Order.objects.prefetch_related("lines").get(pk=order.pk)

    assert order_payload_v1(order) == {
        "id": order.pk,
        "customer_id": "c-9",
        "status": "confirmed",
        "total_amount": "7.50",
        "lines": [{"sku": "A", "quantity": 3, "unit_price": "2.50"}, {"sku": "B", "quantity": 1, "unit_price": "0.00"}],
        "created_at": "2026-01-02T03:04:05.678901Z",
        "confirmed_at": "2026-01-02T03:04:05.678901Z",
    }


def test_the_confirmed_orders_outbox_event_carries_the_version_1_payload():
    order = order_factory(confirmed=True)

    value = json.loads(OutboxEvent.objects.get(key=str(order.pk)).payload)

    order = Order.objects.prefetch_related("lines").get(pk=order.pk)
    assert value["schema_version"] == 1 and value["order"] == order_payload_v1(order)


def test_an_order_without_lines_is_neither_created_nor_confirmed():
    from orders.services import OrderHasNoLines, order_confirm, order_create

    with pytest.raises(OrderHasNoLines):
        order_create(customer_id="c-empty", lines=[])
    assert not Order.objects.filter(customer_id="c-empty").exists()

    order = order_factory()
    order.lines.all().delete()
    with pytest.raises(OrderHasNoLines):
        order_confirm(order_id=order.pk)
    order.refresh_from_db()
    assert (order.status, order.confirmed_at) == ("pending", None)
    assert not OutboxEvent.objects.filter(key=str(order.pk)).exists()
