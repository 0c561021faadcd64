"""Helpers for tests of asynchronous outcomes."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    The Python counterpart of Awaitility's `await().atMost(...).until(...)`: fails the test with
    `message` (a string, or a callable producing one from the last state) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout:g} s)")
        time.sleep(interval)


def read_records(topic: str, *, expected: int, timeout: float = 20.0) -> list:
    """Read `topic` from the beginning (no consumer group) until `expected` records arrived, and
    a little past that, so that an extra record would be seen too."""
    from kafka import KafkaConsumer, TopicPartition

    from kafka_bridge.client import connection_config

    consumer = KafkaConsumer(**connection_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []

        def poll_more():
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expected

        wait_until(poll_more, timeout=timeout, message=lambda: f"read {len(records)} of {expected} record(s) from {topic}")
        # One more poll: a duplicate would show up here instead of passing unnoticed.
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def end_offsets(topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    from kafka_bridge.client import connection_config

    consumer = KafkaConsumer(**connection_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def logged_text(caplog) -> str:
    """The captured lines, and every attribute of every record (its args and extra fields)."""
    return "\n".join([caplog.text] + [repr(vars(record)) for record in caplog.records])
