"""`manage.py run_export_consumer` as a process: it exports, logs each export, and stops on
SIGTERM within the contract's 15 s with its offsets committed and the group left."""
import os
import signal
from decimal import Decimal

import pytest

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from kafka_bridge.producer import request_publisher
from orders.services import LineInput, order_confirm, order_create
from tests.conftest import database_url_of_test_db
from tests.helpers import end_offsets, wait_until
from tests.processes import ManagedProcess

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def consumer_env(export_topics, export_group):
    topic, dlt = export_topics
    return {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "ORDER_EXPORT_TOPIC": topic,
        "ORDER_EXPORT_DLT_TOPIC": dlt,
        "ORDER_EXPORT_CONSUMER_GROUP": export_group,
    }


def test_sigterm_stops_it_within_15_s_with_offsets_committed(consumer_env, export_topics, export_group, kafka_admin, fresh_publisher):
    topic, _ = export_topics
    orders = [
        order_create(customer_id=f"c-{i}", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])
        for i in range(5)
    ]
    for order in orders:
        order_confirm(order_id=order.pk)
    consumer = ManagedProcess("run_export_consumer", consumer_env)
    try:
        wait_until(
            lambda: OrderExport.objects.filter(status="exported").count() == len(orders),
            timeout=30,
            message=lambda: f"not all exported; consumer said:\n{consumer.output()}",
        )
    finally:
        consumer.process.send_signal(signal.SIGTERM)
        exit_code = consumer.process.wait(timeout=15)

    output = consumer.output()
    assert exit_code == 0, output
    assert request_publisher().flush(timeout=10)
    for order in orders:
        row = OutboxEvent.objects.get(key=str(order.pk))
        assert (
            f"export: order {order.pk} event {row.event_id} partition {row.partition} offset {row.offset}: exported"
            in output
        )
    assert f"left group {export_group}" in output

    committed = kafka_admin.list_group_offsets({export_group: None})[export_group]
    ends = end_offsets(topic)
    assert {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic} == {
        p: end for p, end in ends.items() if end > 0
    }
    group = kafka_admin.describe_groups([export_group])[export_group]
    assert (group["group_state"], group["members"]) == ("Empty", [])
