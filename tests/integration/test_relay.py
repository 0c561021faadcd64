"""The outbox relay's claims: concurrent relays send each row once and keep per-key order; and
how a send is marked: by the database's clock, once, and never over an operator's resend."""

import json
import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, connections
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.relay import OutboxRelay, outbox_claim
from kafka_bridge.outbox.store import SentMark, outbox_mark_sent, outbox_resend
from kafka_bridge.runner import StopFlag
from tests.support.helpers import wait_until
from tests.support.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def outbox_rows(topic: str, *, keys: int, per_key: int) -> list[OutboxEvent]:
    """Rows interleaved by key (k0, k1, ..., k0, k1, ...), created a minute ago."""
    rows = [
        OutboxEvent(
            event_id=uuid.uuid4(),
            event_type="Probe",
            topic=topic,
            key=f"k{k}",
            payload=json.dumps({"key": f"k{k}", "seq": seq}),
            headers=[],
            created_at=timezone.now() - timedelta(minutes=1),
        )
        for seq in range(per_key)
        for k in range(keys)
    ]
    return OutboxEvent.objects.bulk_create(rows)


def test_a_claim_skips_keys_whose_older_rows_another_relay_holds(kafka_topic):
    outbox_rows(kafka_topic, keys=2, per_key=3)  # ids in order: k0 k1 k0 k1 k0 k1

    first = outbox_claim(relay_id="a", older_than=0, limit=1, lease=60)
    second = outbox_claim(relay_id="b", older_than=0, limit=10, lease=60)

    assert [(r.key, json.loads(r.payload)["seq"]) for r in first] == [("k0", 0)]
    # b may not take k0's later rows while a holds k0's oldest: only k1's rows, in order.
    assert [(r.key, json.loads(r.payload)["seq"]) for r in second] == [("k1", 0), ("k1", 1), ("k1", 2)]


def test_an_expired_claim_is_taken_over(kafka_topic):
    outbox_rows(kafka_topic, keys=1, per_key=2)
    first = outbox_claim(relay_id="dead", older_than=0, limit=10, lease=60)
    OutboxEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))

    second = outbox_claim(relay_id="alive", older_than=0, limit=10, lease=60)

    assert [r.pk for r in second] == [r.pk for r in first]
    assert set(OutboxEvent.objects.values_list("claimed_by", flat=True)) == {"alive"}


def test_two_relays_keep_per_key_order_and_send_each_row_once(kafka_topic_factory):
    topic = kafka_topic_factory(partitions=3)
    rows = outbox_rows(topic, keys=10, per_key=30)
    relays = [OutboxRelay(stop=StopFlag(), grace=0, batch_size=7, interval=0.05) for _ in range(2)]
    sent_by: list[int] = [0, 0]

    def drain(index: int) -> None:
        relay = relays[index]
        try:
            while OutboxEvent.objects.filter(sent_at__isnull=True).exists():
                sent_by[index] += relay.run_once().sent
        finally:
            relay.publisher.close()
            connections.close_all()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    records = read_records(topic, expected=len(rows))
    assert len(records) == len(rows) == sum(sent_by)
    assert min(sent_by) > 0, f"one relay sent everything: {sent_by}"
    by_key: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        by_key.setdefault(event["key"], []).append(event["seq"])
    assert by_key == {f"k{k}": list(range(30)) for k in range(10)}
    wait_until(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=5)


# --- marking a send -----------------------------------------------------------------------------


def database_now():
    """The database's current time, read the way the marking writes it."""
    return OutboxEvent.objects.annotate(now=Now()).values_list("now", flat=True)[:1].get()


def test_the_relay_marks_sent_by_the_databases_clock_whatever_the_relays_clock_says(kafka_topic):
    [row] = outbox_rows(kafka_topic, keys=1, per_key=1)
    relay = OutboxRelay(stop=StopFlag(), grace=0)
    # The relay's host clock a day ahead: a claim still works, and the mark must not use it.
    ahead = timezone.now() + timedelta(days=1)
    try:
        before = database_now()
        with mock.patch("django.utils.timezone.now", return_value=ahead):
            assert relay.run_once().sent == 1
        after = database_now()
    finally:
        relay.publisher.close()

    row.refresh_from_db()
    assert before <= row.sent_at <= after


def test_marking_sent_is_one_statement_that_takes_the_time_from_the_database():
    rows = outbox_rows("t", keys=3, per_key=1)
    with CaptureQueriesContext(connection) as queries:
        marked = outbox_mark_sent(acked=[SentMark(row.pk, 0, 0, n) for n, row in enumerate(rows)])

    assert marked == 3
    # One statement run for the three rows (Django logs an executemany as "3 times: ...").
    [update] = [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"]]
    assert update.startswith("3 times: UPDATE")
    now_sql = OutboxEvent.objects.all().query.get_compiler(connection=connection).compile(Now())[0]
    assert f"{connection.ops.quote_name('sent_at')} = {now_sql}," in update
    assert update.endswith(
        f"{connection.ops.quote_name('sent_at')} IS NULL AND {connection.ops.quote_name('resends')} = %s"
    )


def test_a_row_already_marked_keeps_its_time_and_place_when_an_acknowledgement_comes_again():
    [row] = outbox_rows("t", keys=1, per_key=1)
    outbox_mark_sent(acked=[SentMark(row.pk, 0, 1, 10)])
    row.refresh_from_db()
    first = (row.sent_at, row.partition, row.offset, row.attempts)

    # e.g. the fast path's acknowledgement arriving after the relay sent and marked the row.
    assert outbox_mark_sent(acked=[SentMark(row.pk, 0, 2, 20)]) == 0

    row.refresh_from_db()
    assert (row.sent_at, row.partition, row.offset, row.attempts) == first == (first[0], 1, 10, 1)


def test_a_late_acknowledgement_of_a_send_made_before_a_resend_leaves_the_row_to_be_sent_again():
    [row] = outbox_rows("t", keys=1, per_key=1)
    # The first send is in flight, not yet acknowledged, when an operator queues the event again.
    assert outbox_resend(event_ids=[row.event_id]) == 1

    assert outbox_mark_sent(acked=[SentMark(row.pk, 0, 1, 10)]) == 0
    row.refresh_from_db()
    assert (row.sent_at, row.resends) == (None, 1)
    assert [r.pk for r in outbox_claim(relay_id="r", older_than=0, limit=10, lease=60)] == [row.pk]

    # The send made after the resend marks it.
    assert outbox_mark_sent(acked=[SentMark(row.pk, 1, 2, 20)]) == 1
    row.refresh_from_db()
    assert (row.sent_at is not None, row.partition, row.offset) == (True, 2, 20)


def test_the_relay_leaves_a_row_marked_while_it_was_sending_as_it_was_marked(kafka_topic):
    outbox_rows(kafka_topic, keys=1, per_key=1)
    [row] = outbox_claim(relay_id="r", older_than=0, limit=10, lease=60)
    # The fast path's acknowledgement of the same event is written while the relay sends it.
    outbox_mark_sent(acked=[SentMark(row.pk, 0, 0, 0)])
    OutboxEvent.objects.filter(pk=row.pk).update(offset=99)
    marked = OutboxEvent.objects.values_list("sent_at", "partition", "offset", "attempts").get(pk=row.pk)

    relay = OutboxRelay(stop=StopFlag(), grace=0)
    try:
        assert relay.publisher.publish([row]).sent == 1
    finally:
        relay.publisher.close()

    assert OutboxEvent.objects.values_list("sent_at", "partition", "offset", "attempts").get(pk=row.pk) == marked
