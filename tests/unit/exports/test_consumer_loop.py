"""The export consumer's loop without a broker: `ExportProcessor` on the test database, driven by a
`ConsumerLoop` given an in-memory consumer (`tests/support/local_consumer.py`), exporting to the
fake platform. What the loop does with the processor's outcomes: one order retried holds back
only itself and its partition's commit point."""

from __future__ import annotations

import threading

import pytest
from kafka.structs import TopicPartition

from exports.consumer import ExportProcessor, export_dead_lettered
from exports.models import OrderExport
from exports.platform.client import TransientExportError
from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from kafka_bridge.runner import StopFlag
from tests.support.consumers import loop_running
from tests.support.factories import export_record_factory, order_factory
from tests.support.helpers import wait_until
from tests.support.local_consumer import LocalConsumer
from tests.support.platforms import RecordingPlatform

pytestmark = pytest.mark.django_db(transaction=True)

P0, P1 = TopicPartition("order-export", 0), TopicPartition("order-export", 1)


class FailingForOneOrder(RecordingPlatform):
    """The fake platform, failing one order's calls (transiently) until told to take it."""

    def __init__(self, order_id: int):
        super().__init__()
        self.failing_order = order_id
        self.healed = threading.Event()
        self._failed = 0
        self._failed_lock = threading.Lock()

    @property
    def failed_calls(self) -> int:
        with self._failed_lock:
            return self._failed

    def send(self, *, order, idempotency_key):
        if order["id"] == self.failing_order and not self.healed.is_set():
            with self._failed_lock:
                self._failed += 1
            raise TransientExportError("HTTP 503 from the platform")
        super().send(order=order, idempotency_key=idempotency_key)


class NoDeadLetters:
    """A dead-letter publisher for a test in which nothing may be dead-lettered."""

    def publish(self, record, *, error: str, attempts: int, trace_headers=()) -> DeadLetterPosition:
        raise AssertionError(f"dead-lettered {record.partition}@{record.offset}: {error}")

    def close(self) -> None:
        pass


def test_one_order_retried_holds_back_only_itself_and_the_commit_point_of_its_partition(settings):
    # The confirms only write outbox rows: the records are the test's own.
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    orders = [order_factory(confirmed=True) for _ in range(12)]
    consumer = LocalConsumer(partitions=[P0, P1])
    for n, order in enumerate(orders):
        tp = (P0, P1)[n % 2]
        record = export_record_factory(order)
        consumer.append(tp, key=record.key, value=record.value, headers=record.headers)
    # The failing order is the first of its partition: everything after it is behind it.
    failing = orders[0].pk
    client = FailingForOneOrder(failing)
    loop = ConsumerLoop(
        topics=["order-export"],
        group_id="export-g",
        stop=StopFlag(),
        processor=ExportProcessor(client=client),
        concurrency=8,
        max_attempts=1000,
        backoff_base=0.01,
        backoff_max=0.05,
        poll_timeout_ms=20,
        dead_letter=NoDeadLetters(),
        on_dead_letter=export_dead_lettered,
        consumer_factory=lambda: consumer,
    )

    with loop_running(loop):
        others = {order.pk for order in orders[1:]}
        wait_until(
            lambda: set(client.received_order_ids()) == others,
            message=lambda: f"{len(set(client.received_order_ids()))} of {len(others)} other orders exported",
        )
        wait_until(lambda: client.failed_calls >= 3, message="the failing order was not retried")
        # Everything else of its partition is done, yet the commit point stays at it.
        wait_until(lambda: consumer.committed.get(P1) == 6, message=lambda: f"committed {consumer.committed}")
        assert consumer.committed.get(P0, 0) == 0, "the commit point passed the order being retried"
        assert OrderExport.objects.get(order_id=failing).status == "pending"
        # Its key is between retries most of the time, and for a moment in flight or ready at each.
        wait_until(
            lambda: loop.status()["retries_waiting"] == 1,
            message=lambda: f"the failing key never showed as waiting for its retry: {loop.status()}",
        )

        client.healed.set()
        wait_until(lambda: failing in client.received_order_ids(), message="the healed order was not exported")
        wait_until(
            lambda: consumer.committed == {P0: 6, P1: 6},
            message=lambda: f"not committed past the healed order: {consumer.committed}",
        )

    export = OrderExport.objects.get(order_id=failing)
    assert (export.status, export.attempts) == ("exported", client.failed_calls + 1)
    assert sorted(client.received_order_ids()) == sorted(order.pk for order in orders), "an order was sent twice"
    assert loop.dead_lettered_total == 0
