"""A record's size is judged as the broker judges it: a value of megabytes that its producer
compressed to kilobytes is accepted on the event topic, and must reach the DLT at its first
failure; a record the DLT refuses even compressed is replaced by a bounded dead letter that names
it, and never stops its partition."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import pytest
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from exports.models import OrderExport
from exports.topics import export_topic_specs
from kafka_bridge.cluster.topics import topics_ensure
from kafka_bridge.connection import connection_config
from kafka_bridge.models import CutDeadLetter
from tests.support.consumers import export_consumer_running
from tests.support.factories import export_event_factory, export_event_headers
from tests.support.faults import orders_create
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, end_offsets, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

# 5,000,000 identical bytes: a few kilobytes gzip-compressed, as a hostile producer sends them.
GIANT_VALUE = b'{"padding": "' + b"a" * 5_000_000 + b'"}'


def hostile_producer() -> KafkaProducer:
    """A producer as another team's service (or an attacker with a leaked credential) could
    configure one: gzip, and a request limit far above the topic's, which judges the compressed
    batch."""
    return KafkaProducer(**connection_config(), compression_type="gzip", max_request_size=64 * 1024 * 1024)


def produce_then_valid(topic: str, *, key: bytes, value: bytes, order_ids: list[int]) -> None:
    """The hostile record, then a valid event of each of `order_ids`, all on partition 0."""
    producer = hostile_producer()
    try:
        producer.send(topic, partition=0, key=key, value=value).get(timeout=10)
        for order_id in order_ids:
            event = export_event_factory(order_id=order_id)
            producer.send(
                topic,
                partition=0,
                key=str(order_id).encode(),
                value=json.dumps(event).encode(),
                headers=export_event_headers(event),
            ).get(timeout=10)
    finally:
        producer.close()


def exported_and_committed(platform, order_ids, kafka_admin, group: str, topic: str, *, past: str) -> None:
    """Until the platform has every one of `order_ids` and `group` committed `topic` to its end."""
    wait_until(
        lambda: sorted(platform.received_order_ids()) == sorted(order_ids),
        timeout=60,
        message=lambda: f"exported {sorted(platform.received_order_ids())} of {sorted(order_ids)}",
    )
    ends = end_offsets(topic)
    wait_until(
        lambda: committed_offsets(kafka_admin, group, topic) == {p: e for p, e in ends.items() if e},
        timeout=30,
        message=f"the partition was not committed past {past}",
    )


def cut_count(group: str, topic: str) -> float:
    return REGISTRY.get_sample_value("orderflow_dead_letters_cut_total", {"group": group, "topic": topic}) or 0.0


def test_a_compressed_giant_the_event_topic_accepted_reaches_the_dlt_at_its_first_failure(
    export_topics, export_group, fake_platform, kafka_admin
):
    topic, dlt = export_topics
    order_ids = orders_create(3)
    produce_then_valid(topic, key=b"giant", value=GIANT_VALUE, order_ids=order_ids)
    with export_consumer_running(fake_platform):
        exported_and_committed(fake_platform, order_ids, kafka_admin, export_group, topic, past="the giant")
    [letter] = read_records(dlt, expected=1)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"giant", GIANT_VALUE)
    assert (headers["dlt.original.offset"], headers["dlt.attempts"]) == (b"0", b"1")
    assert b"EXPORT_MAX_EVENT_BYTES" in headers["dlt.error"]
    assert "dlt.cut" not in headers
    assert not CutDeadLetter.objects.exists()
    assert sorted(OrderExport.objects.filter(status="exported").values_list("order_id", flat=True)) == sorted(order_ids)


@pytest.fixture
def tight_dlt(event_topics, settings, kafka_admin):
    """The event topic (3 partitions) and a DLT that takes records of at most 8 KiB."""
    topic, dlt = event_topics
    kafka_admin.create_topics(
        {dlt: {"num_partitions": 3, "replication_factor": 1, "configs": {"max.message.bytes": "8192"}}},
        wait_for_metadata=True,
    )
    settings.ORDER_EXPORT_PARTITIONS = 3
    topics_ensure(specs=export_topic_specs())
    return topic, dlt


def test_a_record_the_dlt_refuses_even_compressed_is_replaced_by_a_bounded_dead_letter_and_its_partition_moves_on(
    tight_dlt, export_group, fake_platform, kafka_admin, caplog, client, django_user_model
):
    topic, dlt = tight_dlt
    # Random bytes do not compress: 64 KiB is over the DLT's 8 KiB whatever the codec.
    value = os.urandom(64 * 1024)
    order_ids = orders_create(3)
    produce_then_valid(topic, key=b"incompressible", value=value, order_ids=order_ids)
    cut_before = cut_count(export_group, topic)
    with caplog.at_level(logging.ERROR, logger="kafka_bridge.consumer"), export_consumer_running(fake_platform):
        exported_and_committed(fake_platform, order_ids, kafka_admin, export_group, topic, past="the refused record")
    [letter] = read_records(dlt, expected=1)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"incompressible", None)
    assert headers["dlt.original.topic"] == topic.encode()
    assert (headers["dlt.original.partition"], headers["dlt.original.offset"]) == (b"0", b"0")
    assert headers["dlt.original.size"] == str(len(value)).encode()
    assert headers["dlt.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert b"MessageSizeTooLargeError" in headers["dlt.cut"]
    # Only the broker judged it: the record, on its topic, is untouched.
    [original] = [r for r in read_records(topic, expected=4) if r.offset == 0]
    assert original.value == value

    [row] = CutDeadLetter.objects.all()
    assert (row.topic, row.partition, row.offset, row.value_size) == (topic, 0, 0, len(value))
    assert (row.dead_letter_topic, row.dead_letter_partition, row.dead_letter_offset) == (
        dlt,
        letter.partition,
        letter.offset,
    )
    assert row.value_sha256 == hashlib.sha256(value).hexdigest()
    assert cut_count(export_group, topic) == cut_before + 1
    assert any("could not be kept on the dead-letter topic" in r.getMessage() for r in caplog.records)

    client.force_login(django_user_model.objects.create_superuser("ops", "ops@example.com", "pw"))
    page = client.get("/admin/kafka-status/").content.decode()
    assert 'id="export-group-dlt-cut">1<' in page
