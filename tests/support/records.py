"""Records on the real broker: producing them, reading a topic back, its end offsets and what a
group committed. Every client is built from the settings (`connection_config()`), so it talks to
the broker the test points them at."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.producer.future import RecordMetadata

from kafka_bridge.connection import connection_config
from tests.support.helpers import wait_until


def produce_records(topic: str, records: Iterable[Mapping[str, Any]], **producer_options: Any) -> list[RecordMetadata]:
    """Send `records` to `topic`, each a dict of `KafkaProducer.send()`'s keyword arguments
    (`key`, `value`, `headers`, `partition`), and wait until the broker acknowledged every one;
    returns where each went, in order."""
    producer = KafkaProducer(**connection_config(), **producer_options)
    try:
        futures = [producer.send(topic, **record) for record in records]
        return [future.get(timeout=30) for future in futures]
    finally:
        producer.close(timeout=5)


def read_records(topic: str, *, expected: int, timeout: float = 20.0, **consumer_options: Any) -> list:
    """Read `topic` from the beginning (no consumer group) until `expected` records arrived, and
    a little past that, so that an extra record would be seen too. `consumer_options` go to the
    consumer (`isolation_level="read_committed"`, say)."""
    consumer = KafkaConsumer(**connection_config(), enable_auto_commit=False, group_id=None, **consumer_options)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []

        def poll_more():
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expected

        wait_until(
            poll_more, timeout=timeout, message=lambda: f"read {len(records)} of {expected} record(s) from {topic}"
        )
        # One more poll: a duplicate would show up here instead of passing unnoticed.
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def end_offsets(topic: str) -> dict[int, int]:
    """The offset the next record of each partition of `topic` will get."""
    consumer = KafkaConsumer(**connection_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """The offsets `group` committed on the partitions of `topic` (those it committed none on
    are left out); {} for a group the broker does not know."""
    committed = admin.list_group_offsets({group: None}).get(group, {})
    return {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic}
