"""The on-commit fast path: a confirm queues its event and returns; the publisher's own threads
hand it to the producer and write the acknowledgements to the outbox in bulk, without the
request waiting for either, and nothing is sent twice or left behind."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox import publisher as producer
from kafka_bridge.outbox.publisher import request_publisher, reset_request_publisher
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.services import order_confirm
from tests.support.factories import order_factory
from tests.support.helpers import wait_until
from tests.support.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def test_a_confirm_returns_while_the_broker_cannot_answer_and_its_row_is_marked_sent_after(
    private_broker, export_topics, fresh_publisher
):
    topic, _ = export_topics
    first, second = order_factory(), order_factory()
    order_confirm(order_id=first.pk)  # the producer is connected and knows the topic
    assert request_publisher().flush(timeout=10)

    with private_broker.frozen():
        confirmed = order_confirm(order_id=second.pk)
        row = OutboxEvent.objects.get(key=str(second.pk))
        # Returned with the broker frozen: the send is in the producer's hands, not acked.
        assert confirmed.status == "confirmed"
        assert (row.sent_at, row.attempts) == (None, 0)

    row = wait_until(
        lambda: (row := OutboxEvent.objects.get(key=str(second.pk))).sent_at and row,
        timeout=15,
        message="the row was not marked sent once the broker answered",
    )
    [record] = [r for r in read_records(topic, expected=2) if r.key == str(second.pk).encode()]
    assert (row.partition, row.offset, row.attempts) == (record.partition, record.offset, 1)


def test_concurrent_confirms_are_each_sent_once_and_marked_with_their_place_on_the_topic(
    export_topics, fresh_publisher
):
    topic, _ = export_topics
    orders = [order_factory() for _ in range(80)]
    errors: list[BaseException] = []

    def confirm(share):
        try:
            for order in share:
                order_confirm(order_id=order.pk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=confirm, args=(orders[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert request_publisher().flush(timeout=15)

    records = read_records(topic, expected=80)
    event_ids = Counter(dict(record.headers)["event_id"].decode() for record in records)
    rows = {str(row.event_id): row for row in OutboxEvent.objects.all()}
    assert len(records) == 80 and set(event_ids.values()) == {1}
    assert set(event_ids) == set(rows)
    for record in records:
        row = rows[dict(record.headers)["event_id"].decode()]
        assert (row.partition, row.offset, row.attempts) == (record.partition, record.offset, 1)
        assert row.sent_at is not None and row.claimed_by == ""


def test_closing_the_publisher_writes_every_acknowledgement_it_was_waiting_for(export_topics, fresh_publisher):
    orders = [order_factory() for _ in range(30)]
    for order in orders:
        order_confirm(order_id=order.pk)

    reset_request_publisher()  # what the process's exit does

    assert producer._request_publisher is None
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()
    assert OutboxEvent.objects.filter(sent_at__isnull=False).count() == 30


def test_the_request_thread_queues_its_event_and_a_thread_of_the_publisher_hands_it_to_the_producer(
    export_topics, fresh_publisher, monkeypatch
):
    sending_threads: set[str] = set()
    send_row = producer.send_row

    def recording_send_row(kafka_producer, row):
        sending_threads.add(threading.current_thread().name)
        return send_row(kafka_producer, row)

    monkeypatch.setattr(producer, "send_row", recording_send_row)
    orders = [order_factory() for _ in range(5)]
    for order in orders:
        order_confirm(order_id=order.pk)
    assert request_publisher().flush(timeout=10)

    assert sending_threads == {"outbox-sender"}
    assert OutboxEvent.objects.filter(sent_at__isnull=False).count() == 5


def test_a_confirm_does_not_wait_for_a_producer_that_cannot_reach_the_broker(
    private_broker, export_topics, fresh_publisher, settings
):
    settings.KAFKA_PUBLISH_TIMEOUT_MS = 3000
    settings.KAFKA_PUBLISH_SUSPEND_SECONDS = 60
    order = order_factory()
    private_broker.stop()

    started = time.monotonic()
    order_confirm(order_id=order.pk)
    # Building the producer waits up to the bound for the broker: on the hand-off's thread.
    assert time.monotonic() - started < 1.0
    assert request_publisher().flush(timeout=15)

    row = OutboxEvent.objects.get(key=str(order.pk))
    assert (row.sent_at, row.attempts) == (None, 1) and row.last_error
    assert request_publisher().suspended


def test_with_the_broker_gone_the_failure_is_recorded_the_path_suspends_and_nothing_is_marked_sent(
    private_broker, export_topics, fresh_publisher, settings
):
    settings.KAFKA_PUBLISH_SUSPEND_SECONDS = 60
    orders = [order_factory() for _ in range(5)]
    private_broker.stop()

    for order in orders:
        order_confirm(order_id=order.pk)
    assert request_publisher().flush(timeout=15)

    rows = list(OutboxEvent.objects.order_by("id"))
    assert all(row.sent_at is None for row in rows)
    # The first send failed and suspended the path: the others were left to the relay untried.
    assert [row.attempts for row in rows] == [1, 0, 0, 0, 0]
    assert rows[0].last_error
    assert request_publisher().suspended


def test_a_late_fast_path_acknowledgement_does_not_move_a_row_the_relay_already_marked(
    export_topics, fresh_publisher, settings
):
    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    order = order_factory(confirmed=True)
    relay = OutboxRelay(stop=StopFlag(), grace=0)
    try:
        assert relay.run_once().sent == 1
    finally:
        relay.publisher.close()
    row = OutboxEvent.objects.get(key=str(order.pk))
    marked = (row.sent_at, row.partition, row.offset, row.attempts)

    # The same row sent by the fast path too, its acknowledgement written after the relay's.
    request_publisher().publish_nowait([row])
    assert request_publisher().flush(timeout=10)

    first, second = read_records(topic, expected=2)
    row.refresh_from_db()
    assert (row.sent_at, row.partition, row.offset, row.attempts) == marked
    assert (row.partition, row.offset) == (first.partition, first.offset) != (second.partition, second.offset)
