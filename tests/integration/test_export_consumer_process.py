"""`manage.py run_export_consumer` as a process: it exports, logs each export, and stops on
SIGTERM within the contract's 15 s with its offsets committed and the group left. Without
EXPORT_PLATFORM_URL it refuses to start in production, unless EXPORT_PLATFORM=fake asks for the
fake platform, and warns whenever the fake is in use."""

import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from config.env import BASE_DIR
from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from orders.services import LineInput, order_confirm, order_create
from tests.support.helpers import wait_until
from tests.support.processes import ManagedProcess, database_url_of_test_db
from tests.support.records import committed_offsets, end_offsets

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

FAKE_PLATFORM_WARNING = "WARNING exports.consumer export: exporting to the fake platform"


@pytest.fixture
def consumer_env(export_topics, export_group):
    topic, dlt = export_topics
    # The test settings ask for the fake platform (EXPORT_PLATFORM = "fake"), and every child
    # process runs with them.
    return {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "ORDER_EXPORT_TOPIC": topic,
        "ORDER_EXPORT_DLT_TOPIC": dlt,
        "ORDER_EXPORT_CONSUMER_GROUP": export_group,
        # The line per export, which the tests read, is at DEBUG.
        "LOG_LEVELS": "exports.consumer=DEBUG",
    }


def test_sigterm_stops_it_within_15_s_with_offsets_committed(
    consumer_env, export_topics, export_group, kafka_admin, fresh_publisher
):
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
    assert FAKE_PLATFORM_WARNING in output

    ends = end_offsets(topic)
    assert committed_offsets(kafka_admin, export_group, topic) == {p: end for p, end in ends.items() if end > 0}
    group = kafka_admin.describe_groups([export_group])[export_group]
    assert (group["group_state"], group["members"]) == ("Empty", [])


def without_platform(env: dict[str, str], *, debug: bool) -> dict[str, str]:
    """`env` with neither EXPORT_PLATFORM_URL nor the test settings' fake, in production or development."""
    env = {**env, "TEST_SETTINGS": '{"EXPORT_PLATFORM": null}', "DJANGO_DEBUG": "true" if debug else "false"}
    env.pop("EXPORT_PLATFORM_URL", None)
    return env


def test_in_production_without_a_platform_url_it_refuses_to_start_in_one_line():
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "run_export_consumer"],
        cwd=BASE_DIR,
        env=without_platform(dict(os.environ), debug=False),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("CommandError: EXPORT_PLATFORM_URL is not set")
    assert "DJANGO_DEBUG=true" in line


def test_in_development_it_runs_on_the_fake_platform_and_warns(consumer_env):
    consumer = ManagedProcess("run_export_consumer", without_platform(consumer_env, debug=True))
    try:
        wait_until(
            lambda: "partitions assigned" in consumer.output() or consumer.process.poll() is not None,
            timeout=30,
            message=lambda: f"the consumer did not start; it said:\n{consumer.output()}",
        )
        exit_code, _ = consumer.terminate()
    finally:
        consumer.stop_if_running()

    assert exit_code == 0, consumer.output()
    [warning] = [line for line in consumer.output().splitlines() if FAKE_PLATFORM_WARNING in line]
    assert "sends them nowhere" in warning
