"""The broker that `make test` starts is a real Kafka: what kafka-python writes, it reads back."""

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from kafka_bridge.connection import connection_config
from tests.support.helpers import wait_until
from tests.support.records import produce_records

pytestmark = pytest.mark.kafka


def test_a_record_produced_with_kafka_python_is_consumed_back(kafka_topic, consumer_group):
    value = f'{{"probe": "{uuid.uuid4()}"}}'.encode()
    [metadata] = produce_records(
        kafka_topic, [{"key": b"42", "value": value, "headers": [("event_type", b"Probe")]}], acks="all"
    )

    consumer = KafkaConsumer(
        kafka_topic,
        **connection_config(),
        group_id=consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received = []
    try:
        wait_until(
            lambda: received.extend(r for recs in consumer.poll(timeout_ms=200).values() for r in recs) or received,
            # A new group: the join and the first fetch, on a machine the other tests keep busy.
            timeout=60,
            message="the produced record was not consumed",
        )
        consumer.commit()
        committed = consumer.committed(TopicPartition(kafka_topic, 0))
    finally:
        consumer.close()

    [record] = received
    assert (record.topic, record.partition, record.offset) == (kafka_topic, 0, metadata.offset)
    assert record.key == b"42"
    assert record.value == value
    assert record.headers == [("event_type", b"Probe")]
    assert committed == metadata.offset + 1


def test_records_of_one_key_keep_their_order_on_one_partition(kafka_topic_factory, consumer_group):
    topic = kafka_topic_factory(partitions=3)
    sent = produce_records(topic, [{"key": b"order-7", "value": str(i).encode()} for i in range(20)])
    partitions = {metadata.partition for metadata in sent}
    assert len(partitions) == 1

    consumer = KafkaConsumer(topic, **connection_config(), group_id=consumer_group, auto_offset_reset="earliest")
    values: list[bytes] = []
    try:
        wait_until(
            lambda: (
                values.extend(r.value for recs in consumer.poll(timeout_ms=200).values() for r in recs)
                or len(values) >= 20
            ),
            timeout=60,
            message=lambda: f"consumed {len(values)} of 20 records",
        )
    finally:
        consumer.close()
    assert values == [str(i).encode() for i in range(20)]
