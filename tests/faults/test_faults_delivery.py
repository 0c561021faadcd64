"""Fault injection on the delivery path, with the consumer loop in a thread: the broker stopped
while orders are confirmed, a platform that fails 30 % of its calls, poison records on the
event topic, and a platform down for longer than `max_poll_interval_ms`.

What is counted, and where: the platform stub counts exports (one accepted Idempotency-Key per
confirmed order, none missing, none twice) and the repeats it deduplicated (409). Each test
reports one `faults:` line (`report_figures`) with how many events flowed, were lost and were
doubled (`pytest -rP` shows it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from kafka.partitioner.default import murmur2

from exports.consumer import export_consumer
from exports.models import OrderExport
from exports.platform.http import HttpExternalPlatformClient
from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from kafka_bridge.runner import StopFlag
from orders.services import order_confirm
from tests.support.consumers import LoopThread
from tests.support.factories import export_event_factory, export_event_headers
from tests.support.faults import (
    event_ids_by_order,
    exported_count,
    orders_create,
    outbox_backlog_publish,
    platform_tally,
    records_per_event,
    unsent_rows,
)
from tests.support.figures import report_figures
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, end_offsets, produce_records, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

# Other suites share the machine's two cores: waits are generous, the tests themselves are not.
WAIT = 90


# --- the consumer in a thread -----------------------------------------------------------------


@pytest.fixture
def start_consumer(
    export_topics, export_group, platform_stub, transactional_db
) -> Iterator[Callable[..., ConsumerLoop]]:
    """`start_consumer()` builds the export loop from the settings as they are now (so a test
    sets consumer settings first) and runs it in a thread against `platform_stub`; the loop is
    stopped after the test the way a signal stops it."""
    started: list[LoopThread] = []

    def start(*, timeout: float = 10.0) -> ConsumerLoop:
        client = HttpExternalPlatformClient(url=platform_stub.url, timeout=timeout)
        consumer = LoopThread(export_consumer(stop=StopFlag(), client=client), name="export-consumer")
        started.append(consumer.start())
        return consumer.loop

    yield start
    for consumer in started:
        consumer.loop.stop.set()
    for consumer in started:
        consumer.stop()
        consumer.check_stopped()


# --- data and counting ------------------------------------------------------------------------


def orders_confirm(order_ids: list[int]) -> list[float]:
    """Confirm each order; returns the seconds each confirm took (its fast-path send included)."""
    durations = []
    for order_id in order_ids:
        started = time.monotonic()
        order_confirm(order_id=order_id)
        durations.append(time.monotonic() - started)
    return durations


def wait_for_exports(count: int, stub) -> None:
    wait_until(
        lambda: exported_count() == count,
        timeout=WAIT,
        message=lambda: (
            f"{exported_count()} of {count} exports recorded; the platform accepted "
            f"{len(stub.exported_order_ids())} after {stub.call_count()} call(s)"
        ),
    )


def assert_each_order_exported_once(tally: dict[str, object], order_ids: list[int]) -> None:
    missing = tally["missing"]
    assert missing == [], f"{len(missing)} order(s) never reached the platform: {missing[:20]}"
    assert tally["doubled"] == [], f"order(s) exported twice: {tally['doubled'][:20]}"
    assert tally["unexpected"] == [], f"order(s) exported that were never confirmed: {tally['unexpected'][:20]}"
    assert tally["wrong_keys"] == [], f"order(s) sent with another Idempotency-Key: {tally['wrong_keys'][:20]}"
    assert tally["statuses"][201] == len(order_ids)
    exports = dict(OrderExport.objects.values_list("order_id", "status"))
    assert exports == dict.fromkeys(order_ids, OrderExport.Status.EXPORTED)


def group_member_ids(kafka_admin, group: str) -> list[str]:
    return sorted(member["member_id"] for member in kafka_admin.describe_groups([group])[group]["members"])


def expected_partition(key: str, partitions: int = 3) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) picks."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


# --- the tests --------------------------------------------------------------------------------


def test_broker_stopped_while_200_orders_are_confirmed_then_started_all_200_exported(
    private_broker, export_topics, export_group, start_consumer, platform_stub, fresh_publisher, settings
):
    topic, dlt = export_topics
    order_ids = orders_create(200)
    # The consumer is in the group before the outage and lives through it.
    loop = start_consumer()
    wait_until(lambda: loop.assignments >= 1, timeout=WAIT, message="the consumer got no partitions")

    private_broker.stop()
    started = time.monotonic()
    durations = orders_confirm(order_ids)
    confirming = time.monotonic() - started

    # Each confirm waited on Kafka no longer than the fast path's bound (plus start-up slack),
    # and after a failure the fast path is suspended: most rows were not even tried.
    bound = settings.KAFKA_PUBLISH_TIMEOUT_MS / 1000 * 2 + 1
    assert max(durations) < bound, f"the slowest confirm took {max(durations):.1f} s"
    # Failed sends are recorded on their rows by the publisher's marking thread.
    assert request_publisher().flush(timeout=10)
    assert unsent_rows().count() == 200
    tried = OutboxEvent.objects.filter(attempts__gt=0).count()
    suspensions = int(confirming / settings.KAFKA_PUBLISH_SUSPEND_SECONDS) + 1
    assert 1 <= tried <= suspensions, f"{tried} rows were tried in {confirming:.1f} s of confirming"
    assert tried < 100

    private_broker.start()
    relayed = outbox_backlog_publish(timeout=WAIT)
    wait_for_exports(200, platform_stub)

    event_ids = event_ids_by_order()
    tally = platform_tally(platform_stub, order_ids, event_ids)
    records = read_records(topic, expected=200, timeout=WAIT)
    per_event = records_per_event(records)
    report_figures(
        "broker stopped during 200 confirms",
        events_flowed=len(records),
        doubled_on_topic=sum(n - 1 for n in per_event.values()),
        confirm_seconds=round(confirming, 1),
        slowest_confirm_seconds=round(max(durations), 2),
        rows_tried_by_fast_path=tried,
        relayed=relayed,
        lost=len(tally["missing"]),
        doubled_at_platform=len(tally["doubled"]),
        platform_calls=sum(tally["statuses"].values()),
        repeated_calls_409=tally["statuses"][409],
        consumer_assignments=loop.assignments,
    )
    assert relayed == 200
    assert_each_order_exported_once(tally, order_ids)
    assert set(per_event) == set(event_ids.values())
    assert sum(end_offsets(dlt).values()) == 0


def test_platform_failing_30_percent_of_calls_all_orders_exported_with_attempts_recorded(
    export_topics, export_group, start_consumer, platform_stub, fresh_publisher, settings
):
    topic, dlt = export_topics
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS = 20
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS = 200
    # 0.3 ** 10: about one order in 170,000 would fail ten times in a row and be dead-lettered.
    settings.EXPORT_MAX_ATTEMPTS = 10
    platform_stub.failure_rate = 0.3
    order_ids = orders_create(100)
    loop = start_consumer()

    orders_confirm(order_ids)
    # A fast-path send that overran its bound on a busy machine is the relay's to finish.
    relayed = outbox_backlog_publish(timeout=WAIT)
    wait_for_exports(100, platform_stub)

    event_ids = event_ids_by_order()
    tally = platform_tally(platform_stub, order_ids, event_ids)
    attempts = dict(OrderExport.objects.values_list("order_id", "attempts"))
    records = read_records(topic, expected=100, timeout=WAIT)
    per_event = records_per_event(records)
    report_figures(
        "platform failing 30 %",
        events_flowed=len(records),
        doubled_on_topic=sum(n - 1 for n in per_event.values()),
        relayed_after_fast_path=relayed,
        lost=len(tally["missing"]),
        doubled_at_platform=len(tally["doubled"]),
        platform_calls=sum(tally["statuses"].values()),
        failed_calls_503=tally["statuses"][503],
        repeated_calls_409=tally["statuses"][409],
        most_attempts=max(attempts.values()),
        dead_lettered=loop.dead_lettered_total,
    )
    assert_each_order_exported_once(tally, order_ids)
    assert tally["statuses"][503] > 0, "the platform was meant to fail some calls"
    assert attempts == {order_id: tally["calls_per_order"][order_id] for order_id in order_ids}
    assert sum(attempts.values()) == platform_stub.call_count()
    assert loop.dead_lettered_total == 0
    assert sum(end_offsets(dlt).values()) == 0


def test_poison_records_go_to_the_dlt_with_headers_and_the_consumer_keeps_going(
    export_topics, export_group, start_consumer, platform_stub, fresh_publisher, kafka_admin
):
    topic, dlt = export_topics
    [order_id] = orders_create(1)
    # The poison goes to the partition the valid order's event will take, ahead of it: the
    # consumer must get past all three to export the order.
    partition = expected_partition(str(order_id))
    missing_order_id = 10**9 + order_id

    v2 = export_event_factory(order_id=order_id, schema_version=2)
    missing = export_event_factory(order_id=missing_order_id)
    poison = [
        # (key, value, headers, what dlt.error must name)
        (b"not-json", b"\xff\xfe this is not JSON {", [], "not UTF-8 JSON"),
        (str(order_id).encode(), json.dumps(v2).encode(), export_event_headers(v2), "schema_version 2"),
        (
            str(missing_order_id).encode(),
            json.dumps(missing).encode(),
            export_event_headers(missing),
            f"order {missing_order_id} does not exist",
        ),
    ]
    sent_to = produce_records(
        topic,
        [{"key": key, "value": value, "headers": headers, "partition": partition} for key, value, headers, _ in poison],
    )
    sent = {key: metadata for (key, *_), metadata in zip(poison, sent_to)}
    loop = start_consumer()

    order_confirm(order_id=order_id)
    outbox_backlog_publish(timeout=WAIT)
    wait_for_exports(1, platform_stub)

    row = OutboxEvent.objects.get(key=str(order_id))
    # Offset 3 unless a fast-path send overran its bound and the relay sent the event again.
    assert row.partition == partition and row.offset >= 3, "the valid event was meant to follow the poison"
    dead_letters = read_records(dlt, expected=3, timeout=WAIT)
    assert len(dead_letters) == 3
    by_key = {record.key: record for record in dead_letters}
    assert set(by_key) == {key for key, _, _, _ in poison}
    for key, value, headers, reason in poison:
        record = by_key[key]
        dlt_headers = {name: header for name, header in record.headers if name.startswith("dlt.")}
        error = dlt_headers["dlt.error"].decode()
        assert record.value == value
        assert [(name, header) for name, header in record.headers if not name.startswith("dlt.")] == headers
        assert dlt_headers["dlt.original.topic"] == topic.encode()
        assert dlt_headers["dlt.original.partition"] == str(sent[key].partition).encode()
        assert dlt_headers["dlt.original.offset"] == str(sent[key].offset).encode()
        assert dlt_headers["dlt.attempts"] == b"1"
        assert reason in error and "\n" not in error and "\r" not in error, error
    assert sorted(metadata.offset for metadata in sent.values()) == [0, 1, 2]

    ends = {p: end for p, end in end_offsets(topic).items() if end > 0}
    assert set(ends) == {partition}
    wait_until(
        lambda: committed_offsets(kafka_admin, export_group, topic) == ends,
        timeout=WAIT,
        message=lambda: f"committed {committed_offsets(kafka_admin, export_group, topic)}, end offsets {ends}",
    )
    event_ids = event_ids_by_order()
    tally = platform_tally(platform_stub, [order_id], event_ids)
    export = OrderExport.objects.get(order_id=order_id)
    report_figures(
        "poison records",
        events_flowed=ends[partition],
        poison_dead_lettered=len(dead_letters),
        lost=len(tally["missing"]),
        doubled_at_platform=len(tally["doubled"]),
        platform_calls=sum(tally["statuses"].values()),
        repeated_calls_409=tally["statuses"][409],
        lag=sum(ends.values()) - sum(committed_offsets(kafka_admin, export_group, topic).values()),
    )
    assert_each_order_exported_once(tally, [order_id])
    # The v2 event named the real order: being dead-lettered did not mark its export failed.
    assert (export.attempts, str(export.event_id), export.last_error) == (1, event_ids[order_id], None)
    assert loop.dead_lettered_total == 3
    assert not OrderExport.objects.filter(order_id=missing_order_id).exists()


def test_platform_down_longer_than_max_poll_interval_causes_no_rebalance(
    export_topics, export_group, start_consumer, platform_stub, fresh_publisher, settings, kafka_admin
):
    topic, dlt = export_topics
    # The broker's minimum session (group.min.session.timeout.ms) is 6 s.
    settings.KAFKA_CONSUMER_OPTIONS = {
        **settings.KAFKA_CONSUMER_OPTIONS,
        "max_poll_interval_ms": 6000,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS = 100
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS = 500
    settings.EXPORT_MAX_ATTEMPTS = 1000
    # Calls go on all through the outage: the breaker, which would space them out, has tests of
    # its own (tests/faults/test_platform_pace.py).
    settings.EXPORT_BREAKER_FAILURES = 0
    outage = 10.0
    order_ids = orders_create(10)
    loop = start_consumer()
    wait_until(lambda: loop.assignments >= 1, timeout=WAIT, message="the consumer got no partitions")
    member_ids_before = group_member_ids(kafka_admin, export_group)
    assert len(member_ids_before) == 1

    platform_stub.down_status = 503
    orders_confirm(order_ids)
    outbox_backlog_publish(timeout=WAIT)
    wait_until(platform_stub.call_arrived.is_set, timeout=WAIT, message="no call reached the platform")
    retrying_since = time.monotonic()
    # The consumer keeps retrying for longer than max_poll_interval_ms.
    wait_until(
        lambda: time.monotonic() - retrying_since >= outage and platform_stub.call_count() >= 20,
        timeout=WAIT,
        message=lambda: f"only {platform_stub.call_count()} call(s) reached the platform while it was down",
    )
    calls_while_down = platform_stub.call_count()
    retrying_seconds = time.monotonic() - retrying_since
    platform_stub.down_status = None
    wait_for_exports(10, platform_stub)

    event_ids = event_ids_by_order()
    tally = platform_tally(platform_stub, order_ids, event_ids)
    attempts = dict(OrderExport.objects.values_list("order_id", "attempts"))
    member_ids_after = group_member_ids(kafka_admin, export_group)
    report_figures(
        "platform down past max.poll.interval",
        events_flowed=len(records_per_event(read_records(topic, expected=10, timeout=WAIT))),
        retrying_seconds=round(retrying_seconds, 1),
        calls_while_down=calls_while_down,
        lost=len(tally["missing"]),
        doubled_at_platform=len(tally["doubled"]),
        platform_calls=sum(tally["statuses"].values()),
        repeated_calls_409=tally["statuses"][409],
        assignments=loop.assignments,
        dead_lettered=loop.dead_lettered_total,
    )
    assert retrying_seconds > settings.KAFKA_CONSUMER_OPTIONS["max_poll_interval_ms"] / 1000
    assert_each_order_exported_once(tally, order_ids)
    assert sum(attempts.values()) == platform_stub.call_count()
    assert loop.assignments == 1, "the group rebalanced during the outage"
    assert member_ids_after == member_ids_before, "the consumer was thrown out of the group and rejoined"
    assert loop.dead_lettered_total == 0
    assert sum(end_offsets(dlt).values()) == 0


def test_database_failing_under_a_batch_after_its_platform_calls_loses_and_doubles_nothing(
    export_topics, export_group, start_consumer, platform_stub, fresh_publisher, monkeypatch
):
    from django.db import OperationalError

    from exports import services

    topic, _ = export_topics
    order_ids = orders_create(60)
    record_exported = services._record_exported
    failed_batches: list[int] = []

    def fails_once(*, sent, now):
        # The platform has these orders; the transaction that would record them fails.
        if not failed_batches:
            failed_batches.append(len(sent))
            raise OperationalError("database is locked")
        return record_exported(sent=sent, now=now)

    monkeypatch.setattr(services, "_record_exported", fails_once)
    orders_confirm(order_ids)
    relayed = outbox_backlog_publish(timeout=WAIT)
    # Started on a backlog, so the batch that fails holds many orders.
    loop = start_consumer()
    wait_for_exports(60, platform_stub)

    tally = platform_tally(platform_stub, order_ids)
    report_figures(
        "database failing under a batch",
        events_flowed=sum(end_offsets(topic).values()),
        relayed_after_fast_path=relayed,
        batch_lost_at_commit=failed_batches[0],
        lost=len(tally["missing"]),
        doubled_at_platform=len(tally["doubled"]),
        repeated_calls_409=tally["statuses"][409],
    )
    assert failed_batches and failed_batches[0] >= 1
    assert_each_order_exported_once(tally, order_ids)
    # Each order of the failed transaction was sent again with its one key, and the platform
    # answered that repeat with 409, which counts as exported.
    assert tally["statuses"][409] == failed_batches[0]
    assert set(OrderExport.objects.values_list("attempts", flat=True)) == {1}
    assert loop.dead_lettered_total == 0
