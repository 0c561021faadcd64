"""The consumer loop where only the real broker and kafka-python can show it: hostile records go
to the DLT byte for byte and the consumer goes on; a dead letter to a DLT that does not exist
yet is retried, never a crash; a frozen broker under the loop; calls in flight finishing before
a real rebalance moves their partitions; records parked in the fetcher of a paused partition.
What the loop decides by itself (per-key order, retries, the bound, commit points) is proven
without a broker in tests/unit/kafka_bridge/consumer/test_loop.py."""

from __future__ import annotations

import json
import threading

import pytest

from exports.models import OrderExport
from kafka_bridge.connection import connection_config
from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.consumer.dead_letters import DeadLetterPublisher
from kafka_bridge.runner import StopFlag
from tests.support.consumers import CallEach, LoopThread, loop_running
from tests.support.factories import export_event_factory, export_event_headers
from tests.support.faults import orders_confirmed_on_the_topic, orders_create, platform_tally
from tests.support.figures import report_figures
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, produce_records, read_records

pytestmark = pytest.mark.kafka


@pytest.fixture
def run_loop(consumer_group):
    """`run_loop(**options)` starts a ConsumerLoop in a thread; stopped after the test."""
    started: list[LoopThread] = []

    def start(**options) -> ConsumerLoop:
        loop = ConsumerLoop(group_id=consumer_group, stop=StopFlag(), backoff_base=0.05, backoff_max=0.2, **options)
        started.append(LoopThread(loop).start())
        return loop

    yield start
    for running in started:
        running.stop()
        running.check_stopped()


HOSTILE = {
    "null key": lambda valid: {"key": None, "value": valid, "headers": [("event_type", b"OrderExportRequested")]},
    "null value": lambda valid: {"key": b"1", "value": None},
    "null key and value": lambda valid: {"key": None, "value": None, "headers": [("origin", b"x")]},
    "null header value": lambda valid: {"key": None, "value": valid, "headers": [("event_id", None)]},
    "non-UTF-8 key": lambda valid: {"key": b"\xff\xfe\x00", "value": valid},
    "oversized value": lambda valid: {"key": b"7", "value": b"{" + b" " * 1_000_000 + b"}"},
}


@pytest.mark.django_db(transaction=True)
def test_hostile_records_are_dead_lettered_byte_for_byte_and_each_valid_order_after_them_is_exported(
    settings, export_topics, export_group, running_export_consumer
):
    topic, dlt = export_topics
    settings.EXPORT_MAX_EVENT_BYTES = 512 * 1024
    order_ids = orders_create(len(HOSTILE))
    sent = []
    for (name, hostile), order_id in zip(HOSTILE.items(), order_ids):
        event = export_event_factory(order_id=order_id)
        valid = json.dumps(event).encode()
        record = hostile(valid)
        # The null-header case keeps a valid key and value, so only the header is at fault.
        if name == "null header value":
            record["key"] = str(order_id).encode()
        sent.append((name, record))
        _produce_raw(topic, record, order_id, valid, export_event_headers(event))

    wait_until(
        lambda: sorted(running_export_consumer.received_order_ids()) == sorted(order_ids),
        timeout=60,
        message=lambda: f"exported {sorted(running_export_consumer.received_order_ids())} of {sorted(order_ids)}",
    )
    dead = read_records(dlt, expected=len(HOSTILE))
    assert len(dead) == len(HOSTILE)
    by_offset = {int(dict(r.headers)["dlt.original.offset"]): r for r in dead}
    for index, (name, record) in enumerate(sent):
        letter = by_offset[2 * index]
        original = [(k, v) for k, v in letter.headers if not k.startswith("dlt.")]
        assert (letter.key, letter.value) == (record.get("key"), record.get("value")), name
        assert original == list(record.get("headers") or []), name
        assert dict(letter.headers)["dlt.attempts"] == b"1", name
    assert sorted(OrderExport.objects.filter(status="exported").values_list("order_id", flat=True)) == sorted(order_ids)
    report_figures("hostile records", hostile=len(HOSTILE), dead_lettered=len(dead), valid_exported=len(order_ids))


def _produce_raw(topic, record, order_id, valid, valid_headers) -> None:
    """The hostile record, then a valid event, on partition 0. kafka-python's `send()` refuses a
    record with neither key nor value and a null header value, which Kafka allows: they are sent
    the way the dead-letter publisher sends them."""
    from kafka_bridge.consumer.dead_letters import _RecordCopyProducer

    producer = _RecordCopyProducer(**connection_config())
    try:
        producer.send_copy(
            topic, partition=0, key=record.get("key"), value=record.get("value"), headers=record.get("headers") or []
        ).get(timeout=10)
        producer.send_copy(topic, partition=0, key=str(order_id).encode(), value=valid, headers=valid_headers).get(
            timeout=10
        )
    finally:
        producer.close()


def test_a_dead_letter_that_cannot_be_sent_is_retried_until_it_can_and_nothing_else_waits(
    kafka_topic_factory, run_loop, unique_name, kafka_admin
):
    topic = kafka_topic_factory(partitions=1)
    # The DLT does not exist yet (topics are never auto-created): every send fails.
    dlt = unique_name("dlt")
    produce_records(topic, [{"key": b"bad", "value": b"poison"}, {"key": b"good", "value": b"fine"}])
    handled: list[bytes] = []

    def handler(record):
        if record.value == b"poison":
            from kafka_bridge.consumer import NonRetryableError

            raise NonRetryableError("not an event")
        handled.append(record.value)

    loop = run_loop(topics=[topic], processor=CallEach(handler), dead_letter=DeadLetterPublisher(topic=dlt, timeout=1))
    wait_until(lambda: handled == [b"fine"], timeout=30, message=lambda: f"handled {handled}")
    assert loop.dead_lettered_total == 0
    kafka_admin.create_topics({dlt: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    try:
        wait_until(lambda: loop.dead_lettered_total == 1, timeout=60, message="the dead letter was never sent")
        [letter] = read_records(dlt, expected=1)
        assert (letter.key, letter.value) == (b"bad", b"poison")
        assert loop.processed_total == 2
    finally:
        kafka_admin.delete_topics([dlt])


def test_a_frozen_broker_under_the_loop_times_out_its_commits_and_the_loop_rides_it_out(private_broker, caplog):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**connection_config())
    admin.create_topics({"frozen": {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    produce_records("frozen", [{"key": f"k{n}".encode(), "value": b"v"} for n in range(200)])
    handled: list[int] = []
    gate = threading.Event()

    def handler(record):
        if len(handled) >= 50:
            gate.wait(30)
        handled.append(record.offset)

    loop = ConsumerLoop(
        topics=["frozen"], group_id="frozen-group", processor=CallEach(handler), stop=StopFlag(), concurrency=4
    )
    with loop_running(loop) as running:
        wait_until(lambda: len(handled) >= 50, timeout=60, message="the loop did not start")
        with private_broker.frozen():
            gate.set()
            wait_until(lambda: "commit failed" in caplog.text, timeout=30, message="no commit was attempted")
            assert running.is_alive()
        wait_until(lambda: loop.processed_total == 200, timeout=60, message=lambda: f"{loop.processed_total} done")
        admin = KafkaAdminClient(**connection_config())
        try:
            wait_until(
                lambda: sum(committed_offsets(admin, "frozen-group", "frozen").values()) == 200,
                timeout=30,
                message="not committed to the end after the broker came back",
            )
        finally:
            admin.close()
        wait_until(lambda: "committing again" in caplog.text, timeout=10)
    assert len(handled) >= 200


@pytest.mark.django_db(transaction=True)
def test_on_a_rebalance_the_calls_in_flight_finish_and_are_committed_before_the_partitions_move(
    settings, export_topics, export_group, platform_stub, kafka_admin
):
    from exports.consumer import export_consumer
    from exports.platform.http import HttpExternalPlatformClient

    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    platform_stub.delay = 1.0
    order_ids = orders_confirmed_on_the_topic(60)
    consumers: list[LoopThread] = []

    def start() -> ConsumerLoop:
        client = HttpExternalPlatformClient(url=platform_stub.url, timeout=5, pool_size=8)
        consumer = LoopThread(export_consumer(stop=StopFlag(), client=client, concurrency=8), name="export-consumer")
        consumers.append(consumer.start())
        return consumer.loop

    try:
        first = start()
        wait_until(lambda: platform_stub.in_flight == 8, timeout=30, message="the first consumer made no calls")
        # A second member joins: the first gives up its partitions only after its 8 calls.
        second = start()
        wait_until(
            lambda: second.assignments >= 1 and first.assignments >= 2,
            timeout=60,
            message=lambda: f"assignments {first.assignments}, {second.assignments}",
        )
        wait_until(
            lambda: OrderExport.objects.filter(status="exported").count() == len(order_ids),
            timeout=120,
            message=lambda: f"{OrderExport.objects.filter(status='exported').count()} exported",
        )
    finally:
        for consumer in consumers:
            consumer.loop.stop.set()
        for consumer in consumers:
            consumer.stop()
    for consumer in consumers:
        consumer.check_stopped()

    tally = platform_tally(platform_stub, order_ids)
    report_figures(
        "rebalance with calls in flight",
        orders=len(order_ids),
        repeated_calls_409=tally["statuses"][409],
        lost=len(tally["missing"]),
        doubled=len(tally["doubled"]),
    )
    assert tally["missing"] == [] and tally["doubled"] == []
    # No call made before the rebalance was made again after it.
    assert tally["statuses"][409] == 0, tally["statuses"]


def test_partitions_paused_at_the_bound_with_fetched_records_parked_are_read_again_once_resumed(
    kafka_topic_factory, run_loop, kafka_admin, consumer_group
):
    from kafka_bridge.consumer import RetryableError

    topic = kafka_topic_factory(partitions=2)
    # Thousands of small records per partition: each fetch brings many more than the bound, so
    # the fetcher holds records of partition 0 when it is paused behind its stuck first record,
    # while partition 1 goes on being read.
    produce_records(
        topic,
        [{"key": b"stuck", "value": b"v", "partition": 0}]
        + [{"key": f"k{n}".encode(), "value": b"v", "partition": n % 2} for n in range(6000)],
    )
    handled = []
    lock = threading.Lock()
    unstuck = threading.Event()

    def handler(record):
        if record.key == b"stuck" and not unstuck.is_set():
            raise RetryableError("later")
        with lock:
            handled.append((record.partition, record.offset))

    loop = run_loop(
        topics=[topic], processor=CallEach(handler), concurrency=8, max_uncommitted=200, max_attempts=10_000
    )
    wait_until(
        lambda: sum(1 for p, _ in handled if p == 1) == 3000,
        timeout=120,
        message=lambda: f"{len(handled)} handled: {loop.status()}",
    )
    status = {p["partition"]: p for p in loop.status()["partitions"]}
    assert status[0]["paused"] and status[0]["uncommitted"] < 200 + 500

    unstuck.set()
    wait_until(lambda: len(handled) == 6001, timeout=120, message=lambda: f"{len(handled)} of 6001: {loop.status()}")
    assert len(set(handled)) == 6001
    wait_until(
        lambda: committed_offsets(kafka_admin, consumer_group, topic) == {0: 3001, 1: 3000},
        timeout=15,
        message="not committed to the end",
    )
