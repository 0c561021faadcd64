"""A row Kafka refuses for a reason of its own (too large for the topic or the producer) is
counted against that row only: the rows around it are sent and marked once, nothing pauses,
and after OUTBOX_QUARANTINE_ATTEMPTS refusals the row is quarantined with its reason, shown in
the admin, left out of the backlog, and released by an operator for another try."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from kafka_bridge.cluster.topics import TopicSpec, topics_ensure
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import OutboxPublisher, request_publisher
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.outbox.store import outbox_claim, outbox_resend
from kafka_bridge.runner import StopFlag
from kafka_bridge.selectors import outbox_backlog
from orders.services import LineInput, order_confirm, order_create
from tests.support.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

# The refusing topic's limit, and a value well over it that lz4 cannot shrink under it.
TOPIC_MAX_MESSAGE_BYTES = 2048
TOO_LARGE_FOR_THE_TOPIC = 8 * 1024
# Over the producer's max_request_size (1 MiB): refused before it leaves the process.
TOO_LARGE_FOR_THE_PRODUCER = 1024 * 1024 + 4096


@pytest.fixture
def refusing_topic(unique_name, kafka_admin):
    """A 3-partition topic whose `max.message.bytes` is 2 KiB, so the broker itself refuses a
    moderately large record."""
    name = unique_name("refusing")
    topics_ensure(
        specs=[
            TopicSpec(
                name=name,
                partitions=3,
                replication_factor=1,
                configs={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)},
            )
        ]
    )
    yield name
    kafka_admin.delete_topics([name])


@pytest.fixture
def relay():
    """A relay of this process without grace, driven round by round by the test."""
    relay = OutboxRelay(stop=StopFlag(), grace=0, batch_size=100, interval=0.05)
    yield relay
    relay.publisher.close()


def outbox_row(topic: str, *, key: str, seq: int = 0, size: int = 0) -> OutboxEvent:
    """An outbox row created a minute ago; `size` pads its value with incompressible bytes."""
    payload = {"key": key, "seq": seq}
    if size:
        payload["padding"] = base64.b64encode(os.urandom(size)).decode()
    return OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        event_type="Probe",
        topic=topic,
        key=key,
        payload=json.dumps(payload),
        headers=[["event_id", ""]],
        created_at=timezone.now() - timedelta(minutes=1),
    )


def on_the_topic(topic: str, expected: int) -> Counter:
    """How often each row (by key and seq) is on `topic`, read back from the broker."""
    records = read_records(topic, expected=expected)
    return Counter((value["key"], value["seq"]) for value in (json.loads(r.value) for r in records))


def assert_marked_where_they_landed(topic: str, rows: list[OutboxEvent]) -> None:
    records = {
        (json.loads(r.value)["key"], json.loads(r.value)["seq"]): r for r in read_records(topic, expected=len(rows))
    }
    for row in rows:
        row.refresh_from_db()
        record = records[(row.key, json.loads(row.payload)["seq"])]
        assert row.sent_at is not None and (row.partition, row.offset) == (record.partition, record.offset)
        assert row.attempts == 1 and row.claimed_by == ""


def test_a_record_the_topic_refuses_is_quarantined_after_the_limit_and_the_rows_around_it_are_sent_once(
    refusing_topic, relay, settings, caplog
):
    settings.OUTBOX_QUARANTINE_ATTEMPTS = 3
    before = [outbox_row(refusing_topic, key=f"k{n}") for n in range(5)]
    bad = outbox_row(refusing_topic, key="order-7", size=TOO_LARGE_FOR_THE_TOPIC)
    # Later events of the refused row's own key, and of other keys, in the same batch.
    after = [outbox_row(refusing_topic, key="order-7", seq=1)] + [
        outbox_row(refusing_topic, key=f"k{n}") for n in range(5, 10)
    ]
    good = before + after

    with caplog.at_level(logging.INFO, logger="kafka_bridge"):
        rounds = [relay.run_once() for _ in range(settings.OUTBOX_QUARANTINE_ATTEMPTS)]

    # Round one sends every other row; no round takes the refusal for the broker's failure.
    assert [(r.sent, r.refused, r.failed, r.quarantined) for r in rounds] == [(11, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 1)]
    assert "broker unreachable" not in caplog.text
    bad.refresh_from_db()
    assert bad.sent_at is None and bad.quarantined_at is not None
    assert (bad.attempts, bad.refusals, bad.claimed_by) == (3, 3, "")
    assert bad.last_error.startswith("MessageSizeTooLargeError") and "bytes" in bad.last_error
    # Quarantined: no longer claimed, sent, or counted as backlog.
    assert (relay.run_once().sent, relay.run_once().refused) == (0, 0)
    bad.refresh_from_db()
    assert bad.attempts == 3
    assert outbox_backlog() == {"unsent": 0, "oldest_unsent_age_seconds": None, "quarantined": 1}

    assert on_the_topic(refusing_topic, expected=len(good)) == Counter(
        {(r.key, json.loads(r.payload)["seq"]): 1 for r in good}
    )
    assert_marked_where_they_landed(refusing_topic, good)


def test_a_record_over_the_producers_request_limit_is_refused_at_send_and_the_others_are_sent(
    kafka_topic, relay, settings
):
    settings.OUTBOX_QUARANTINE_ATTEMPTS = 2
    rows = [
        outbox_row(kafka_topic, key="a"),
        outbox_row(kafka_topic, key="huge", size=TOO_LARGE_FOR_THE_PRODUCER),
        outbox_row(kafka_topic, key="b"),
    ]

    first, second = relay.run_once(), relay.run_once()

    assert (first.sent, first.refused, first.failed) == (2, 1, 0)
    assert (second.sent, second.refused, second.quarantined) == (0, 1, 1)
    huge = OutboxEvent.objects.get(key="huge")
    assert huge.quarantined and (huge.attempts, huge.refusals) == (2, 2)
    assert "max_request_size" in huge.last_error
    assert on_the_topic(kafka_topic, expected=2) == Counter({("a", 0): 1, ("b", 0): 1})
    assert_marked_where_they_landed(kafka_topic, [rows[0], rows[2]])


def test_publish_collects_each_rows_own_outcome_instead_of_stopping_at_the_first_failure(refusing_topic):
    rows = [
        outbox_row(refusing_topic, key="k0"),
        outbox_row(refusing_topic, key="too-large-for-the-topic", size=TOO_LARGE_FOR_THE_TOPIC),
        outbox_row(refusing_topic, key="k1"),
        outbox_row(refusing_topic, key="too-large-to-send", size=TOO_LARGE_FOR_THE_PRODUCER),
        outbox_row(refusing_topic, key="k2"),
    ]
    publisher = OutboxPublisher(timeout=10)
    try:
        result = publisher.publish(rows)
        # The producer the refusal stopped was replaced: the next send goes through.
        assert publisher.publish([outbox_row(refusing_topic, key="k3")]).sent == 1
    finally:
        publisher.close()

    assert (result.sent, result.refused, result.failed) == (3, 2, 0)
    refused = OutboxEvent.objects.filter(key__startswith="too-large").order_by("id")
    assert [(r.attempts, r.refusals, r.sent_at) for r in refused] == [(1, 1, None), (1, 1, None)]
    assert on_the_topic(refusing_topic, expected=4) == Counter({(f"k{n}", 0): 1 for n in range(4)})


@pytest.fixture
def refusing_event_topic(event_topics):
    """ORDER_EXPORT_TOPIC created with the refusing topic's 2 KiB limit."""
    topic, _ = event_topics
    topics_ensure(
        specs=[
            TopicSpec(
                name=topic,
                partitions=3,
                replication_factor=1,
                configs={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)},
            )
        ]
    )
    return topic


def order_with_lines(count: int):
    # SKUs of random hex, so the event's JSON does not compress under the topic's limit.
    return order_create(
        customer_id="c-1",
        lines=[LineInput(sku=uuid.uuid4().hex, quantity=1, unit_price=Decimal("1.00")) for _ in range(count)],
    )


def test_the_fast_path_leaves_a_refused_record_to_the_relay_and_publishes_the_next_confirm_at_once(
    refusing_event_topic, fresh_publisher, relay, settings
):
    topic = refusing_event_topic
    settings.KAFKA_PUBLISH_SUSPEND_SECONDS = 60
    large, small = order_with_lines(150), order_with_lines(1)

    order_confirm(order_id=large.pk)
    assert request_publisher().flush(timeout=10)
    refused = OutboxEvent.objects.get(key=str(large.pk))
    assert refused.sent_at is None and refused.attempts == 1
    assert refused.last_error.startswith("MessageSizeTooLargeError")
    # Counting and quarantining are the relay's: it can tell a refused record from its batch-mates.
    assert (refused.refusals, refused.quarantined_at) == (0, None)
    assert not request_publisher().suspended

    order_confirm(order_id=small.pk)
    assert request_publisher().flush(timeout=10)
    sent = OutboxEvent.objects.get(key=str(small.pk))
    [record] = read_records(topic, expected=1)
    assert record.key == str(small.pk).encode()
    assert (sent.sent_at is not None, sent.partition, sent.offset) == (True, record.partition, record.offset)

    rounds = [relay.run_once() for _ in range(settings.OUTBOX_QUARANTINE_ATTEMPTS)]
    assert [(r.sent, r.refused, r.failed) for r in rounds] == [(0, 1, 0)] * settings.OUTBOX_QUARANTINE_ATTEMPTS
    refused.refresh_from_db()
    assert refused.quarantined and refused.refusals == settings.OUTBOX_QUARANTINE_ATTEMPTS


def test_the_fast_path_skips_a_record_too_large_to_send_and_sends_the_rows_after_it(
    kafka_topic, fresh_publisher, settings
):
    settings.KAFKA_PUBLISH_SUSPEND_SECONDS = 60
    huge, after = (
        outbox_row(kafka_topic, key="huge", size=TOO_LARGE_FOR_THE_PRODUCER),
        outbox_row(kafka_topic, key="after"),
    )

    request_publisher().publish_nowait([huge, after])
    assert request_publisher().flush(timeout=10)

    huge.refresh_from_db()
    after.refresh_from_db()
    assert huge.sent_at is None and huge.attempts == 1 and "max_request_size" in huge.last_error
    assert after.sent_at is not None
    assert not request_publisher().suspended
    assert on_the_topic(kafka_topic, expected=1) == Counter({("after", 0): 1})


# --- per-key order, backlog, resend and the admin (no broker needed) --------------------------


def test_a_quarantined_row_does_not_hold_back_the_later_events_of_its_key():
    quarantined = outbox_row("t", key="order-7", seq=0)
    later = outbox_row("t", key="order-7", seq=1)
    OutboxEvent.objects.filter(pk=quarantined.pk).update(quarantined_at=timezone.now(), refusals=3)

    claimed = outbox_claim(relay_id="r", older_than=0, limit=10, lease=60)

    assert [row.pk for row in claimed] == [later.pk]


def test_a_refused_row_not_yet_quarantined_is_claimed_with_its_key_and_before_its_later_events():
    refused = outbox_row("t", key="order-7", seq=0)
    later = outbox_row("t", key="order-7", seq=1)
    OutboxEvent.objects.filter(pk=refused.pk).update(refusals=1, attempts=1)

    # Another relay may not take the later event while the refused one is held.
    assert [row.pk for row in outbox_claim(relay_id="a", older_than=0, limit=1, lease=60)] == [refused.pk]
    assert outbox_claim(relay_id="b", older_than=0, limit=10, lease=60) == []
    OutboxEvent.objects.update(claimed_by="", claimed_until=None)
    assert [row.pk for row in outbox_claim(relay_id="c", older_than=0, limit=10, lease=60)] == [refused.pk, later.pk]


def test_quarantined_rows_count_apart_from_the_backlog_and_its_oldest_age():
    old = outbox_row("t", key="a")
    OutboxEvent.objects.filter(pk=old.pk).update(
        quarantined_at=timezone.now(), created_at=timezone.now() - timedelta(hours=2)
    )
    outbox_row("t", key="b")

    backlog = outbox_backlog()

    assert (backlog["unsent"], backlog["quarantined"]) == (1, 1)
    assert 50 <= backlog["oldest_unsent_age_seconds"] <= 120


def test_quarantined_rows_are_a_gauge_of_their_own_and_shown_on_the_status_page(admin_client, settings):
    from prometheus_client import REGISTRY

    from kafka_bridge.metrics import outbox_backlog_set

    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]  # the page's outbox part needs no broker
    settings.KAFKA_STATUS_TIMEOUT_MS = 500
    row = outbox_row("t", key="a")
    OutboxEvent.objects.filter(pk=row.pk).update(quarantined_at=timezone.now())
    outbox_row("t", key="b")

    outbox_backlog_set(outbox_backlog())
    page = admin_client.get("/admin/kafka-status/").content.decode()

    assert REGISTRY.get_sample_value("orderflow_outbox_quarantined") == 1
    assert REGISTRY.get_sample_value("orderflow_outbox_unsent") == 1
    assert '<strong id="outbox-quarantined">1</strong>' in page
    assert "?quarantined=yes" in page


def test_outbox_resend_releases_a_quarantined_row_with_a_fresh_count():
    row = outbox_row("t", key="a")
    OutboxEvent.objects.filter(pk=row.pk).update(
        quarantined_at=timezone.now(),
        refusals=3,
        attempts=3,
        last_error="MessageSizeTooLargeError: ...",
    )

    assert outbox_resend(event_ids=[row.event_id]) == 1

    row.refresh_from_db()
    assert (row.quarantined_at, row.refusals, row.last_error, row.resends, row.attempts) == (None, 0, "", 1, 3)
    assert [r.pk for r in outbox_claim(relay_id="r", older_than=0, limit=10, lease=60)] == [row.pk]


def admin_user(*, may_release: bool):
    user = get_user_model().objects.create_user(username=f"ops-{may_release}", password="pw", is_staff=True)
    codenames = ["view_outboxevent"] + (["change_outboxevent"] if may_release else [])
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="kafka_bridge", codename__in=codenames)
    )
    return user


def test_the_admin_filters_quarantined_events_and_releases_them_for_another_try(client):
    quarantined, waiting = outbox_row("t", key="q"), outbox_row("t", key="w")
    OutboxEvent.objects.filter(pk=quarantined.pk).update(
        quarantined_at=timezone.now(), refusals=3, last_error="MessageSizeTooLargeError: too large"
    )
    client.force_login(admin_user(may_release=True))

    page = client.get("/admin/kafka_bridge/outboxevent/", {"quarantined": "yes"})
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [quarantined]
    assert "MessageSizeTooLargeError: too large" in page.content.decode()

    response = client.post(
        "/admin/kafka_bridge/outboxevent/",
        {"action": "release_quarantined", "_selected_action": [quarantined.pk, waiting.pk]},
        follow=True,
    )

    assert "1 event released for another try. 1 not quarantined, left alone." in response.content.decode()
    quarantined.refresh_from_db()
    waiting.refresh_from_db()
    assert (quarantined.quarantined_at, quarantined.refusals, quarantined.resends) == (None, 0, 1)
    assert waiting.resends == 0
    assert LogEntry.objects.filter(object_id=str(quarantined.pk)).count() == 1


def test_the_admin_release_needs_the_change_permission(client):
    quarantined = outbox_row("t", key="q")
    OutboxEvent.objects.filter(pk=quarantined.pk).update(quarantined_at=timezone.now(), refusals=3)
    client.force_login(admin_user(may_release=False))

    page = client.get("/admin/kafka_bridge/outboxevent/")
    assert page.status_code == 200 and "release_quarantined" not in page.content.decode()
    client.post(
        "/admin/kafka_bridge/outboxevent/", {"action": "release_quarantined", "_selected_action": [quarantined.pk]}
    )

    quarantined.refresh_from_db()
    assert quarantined.quarantined and quarantined.resends == 0
