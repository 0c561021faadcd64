"""The order-export flow end to end, on the real broker: confirm (API or admin) -> outbox ->
Kafka -> export consumer -> platform."""

import json
import time
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from kafka.partitioner.default import murmur2
from rest_framework.test import APIClient

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.models import Order
from orders.permissions import ORDER_OPERATOR_PERMISSIONS
from orders.services import LineInput, order_confirm, order_create
from tests.support.factories import user_factory
from tests.support.helpers import wait_until
from tests.support.records import end_offsets, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(db) -> APIClient:
    user = user_factory(username="api-user", permissions=ORDER_OPERATOR_PERMISSIONS)
    client = APIClient()
    client.force_authenticate(user)
    return client


def new_order(customer_id: str = "c-1") -> Order:
    return order_create(
        customer_id=customer_id,
        lines=[LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("10.00"))],
    )


def expected_partition(key: str, partitions: int = 3) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) picks."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def test_a_confirmed_order_reaches_the_platform_within_5_s(api, running_export_consumer, fresh_publisher):
    fake_platform = running_export_consumer
    created = api.post(
        "/api/orders/",
        {"customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}]},
        format="json",
    )
    order_id = created.json()["id"]

    confirmed = api.post(f"/api/orders/{order_id}/confirm/")

    assert confirmed.status_code == 200
    wait_until(
        lambda: order_id in fake_platform.received_order_ids(),
        timeout=5,
        message="the fake platform did not receive the order",
    )
    export = wait_until(
        lambda: (
            api.get(f"/api/orders/{order_id}/").json()["export"]["status"] == "exported"
            and api.get(f"/api/orders/{order_id}/").json()["export"]
        ),
        timeout=5,
        message="the export was not recorded",
    )
    assert export["attempts"] == 1 and export["last_error"] is None and export["exported_at"]
    event_id = OutboxEvent.objects.get(key=str(order_id)).event_id
    assert fake_platform.received() == [(order_id, str(event_id))]


def test_the_record_on_the_topic_is_the_contracts_event(export_topics, fresh_publisher, transactional_db):
    topic, _ = export_topics
    orders = [new_order(customer_id=f"c-{i}") for i in range(12)]
    for order in orders:
        order_confirm(order_id=order.pk)

    records = read_records(topic, expected=len(orders))
    # Acknowledged rows are marked sent in bulk shortly after the acks: wait for that.
    assert request_publisher().flush(timeout=10)

    assert len(records) == len(orders)
    by_key = {record.key.decode(): record for record in records}
    assert set(by_key) == {str(order.pk) for order in orders}
    for order in orders:
        record = by_key[str(order.pk)]
        event = json.loads(record.value.decode("utf-8"))
        outbox = OutboxEvent.objects.get(key=str(order.pk))
        assert record.partition == expected_partition(str(order.pk))
        assert (outbox.sent_at is not None, outbox.partition, outbox.offset) == (True, record.partition, record.offset)
        assert set(event) == {"event_id", "event_type", "schema_version", "occurred_at", "order"}
        assert uuid.UUID(event["event_id"]).version == 4
        assert event["event_id"] == str(outbox.event_id)
        assert (event["event_type"], event["schema_version"]) == ("OrderExportRequested", 1)
        assert event["occurred_at"].endswith("Z")
        assert event["order"]["id"] == order.pk
        assert event["order"]["status"] == "confirmed"
        assert event["order"]["total_amount"] == "20.00"
        assert event["order"]["lines"] == [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}]
        assert "export" not in event["order"]
        assert record.headers == [("event_type", b"OrderExportRequested"), ("event_id", event["event_id"].encode())]
    assert len({record.partition for record in records}) > 1, "12 orders should spread over the 3 partitions"


def test_a_rolled_back_confirm_publishes_nothing(export_topics, fresh_publisher, transactional_db):
    topic, _ = export_topics
    rolled_back, kept = new_order(), new_order()

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            order_confirm(order_id=rolled_back.pk)
            raise RuntimeError("something later in the same transaction failed")
    order_confirm(order_id=kept.pk)

    records = read_records(topic, expected=1)
    assert [record.key for record in records] == [str(kept.pk).encode()]
    rolled_back.refresh_from_db()
    assert rolled_back.status == Order.Status.PENDING
    assert not OutboxEvent.objects.filter(key=str(rolled_back.pk)).exists()


def test_confirming_twice_gives_one_event_and_a_409(api, export_topics, fresh_publisher):
    topic, _ = export_topics
    order = new_order()

    first = api.post(f"/api/orders/{order.pk}/confirm/")
    second = api.post(f"/api/orders/{order.pk}/confirm/")

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["code"] == "order_not_pending"
    assert len(read_records(topic, expected=1)) == 1
    assert sum(end_offsets(topic).values()) == 1
    assert OutboxEvent.objects.filter(key=str(order.pk)).count() == 1


def test_the_admin_action_confirms_and_publishes(client, export_topics, fresh_publisher):
    topic, _ = export_topics
    admin_user = get_user_model().objects.create_superuser(username="boss", password="pw", email="b@example.com")
    client.force_login(admin_user)
    pending, already = new_order(), new_order()
    order_confirm(order_id=already.pk)

    response = client.post(
        "/admin/orders/order/",
        {"action": "mark_confirmed", "_selected_action": [pending.pk, already.pk]},
        follow=True,
    )

    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"Confirmed 1 order(s): #{pending.pk}.",
        f"Refused 1 order(s): #{already.pk} (confirmed, not pending).",
    ]
    pending.refresh_from_db()
    assert pending.status == Order.Status.CONFIRMED
    keys = sorted(record.key.decode() for record in read_records(topic, expected=2))
    assert keys == sorted([str(pending.pk), str(already.pk)])


def test_with_the_broker_down_the_confirm_succeeds_and_the_relay_delivers_later(
    private_broker, api, running_export_consumer, fresh_publisher, settings
):
    fake_platform = running_export_consumer
    order = new_order()
    private_broker.stop()

    started = time.monotonic()
    response = api.post(f"/api/orders/{order.pk}/confirm/")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] == "confirmed"
    # The request waited on Kafka no longer than the configured bound (plus start-up slack).
    assert elapsed < settings.KAFKA_PUBLISH_TIMEOUT_MS / 1000 * 2 + 1
    # The failure is recorded on the row by the publisher's marking thread, after the response.
    row = wait_until(
        lambda: (row := OutboxEvent.objects.get(key=str(order.pk))).attempts and row,
        timeout=10,
        message="the failed send was not recorded on the outbox row",
    )
    assert row.sent_at is None and row.attempts == 1 and row.last_error

    private_broker.start()
    relay = OutboxRelay(stop=StopFlag(), grace=0)
    try:
        wait_until(lambda: relay.run_once().sent == 1, timeout=30, message="the relay did not deliver")
    finally:
        relay.publisher.close()

    wait_until(
        lambda: order.pk in fake_platform.received_order_ids(), timeout=30, message="the relayed event was not exported"
    )
    row.refresh_from_db()
    assert row.sent_at is not None
    assert wait_until(lambda: OrderExport.objects.filter(order=order, status="exported").exists(), timeout=10)
    assert fake_platform.received_order_ids() == [order.pk]
