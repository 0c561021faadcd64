"""Publishing a record that cannot be processed to a dead-letter topic, as the contract says:
the original key and value bytes, the original headers, and `dlt.original.topic`,
`dlt.original.partition`, `dlt.original.offset`, `dlt.error` (one line) and `dlt.attempts`."""

from __future__ import annotations

import threading
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import IllegalStateError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import TopicPartition

from kafka_bridge.producer import producer_config
from kafka_bridge.text import one_line
from kafka_bridge.topics import DLT_MAX_MESSAGE_BYTES

DLT_HEADER_PREFIX = "dlt."


class DeadLetterPosition(NamedTuple):
    """Where the broker put a dead letter."""

    topic: str
    partition: int
    offset: int


def dead_letter_headers(record: ConsumerRecord, *, error: str, attempts: int) -> list[tuple[str, bytes]]:
    # A record dead-lettered again after a replay keeps one set of dlt.* headers: the latest.
    original = [(name, value) for name, value in (record.headers or []) if not name.startswith(DLT_HEADER_PREFIX)]
    return original + [
        ("dlt.original.topic", record.topic.encode()),
        ("dlt.original.partition", str(record.partition).encode()),
        ("dlt.original.offset", str(record.offset).encode()),
        ("dlt.error", one_line(error).encode()),
        ("dlt.attempts", str(attempts).encode()),
    ]


class _HeadersWithNulls(list):
    """Headers some of whose values are null. The record encoder writes a null value as Kafka's
    null, but the producer batch sums every value's length for a size figure only when the
    headers are truthy; this list is falsy so that sum (which fails on a null) is skipped."""

    def __bool__(self) -> bool:
        return False


class _RecordCopyProducer(KafkaProducer):
    """A producer that sends a record exactly as it was read. kafka-python's `send()` refuses
    two things Kafka itself allows and a dead letter must keep: a record with neither key nor
    value, and a header whose value is null. This takes the same steps as `send()` (metadata,
    size check, the accumulator, the sender) without that check."""

    def send_copy(self, topic: str, *, partition: int | None, key, value, headers) -> FutureRecordMetadata:
        if self._closed:
            raise IllegalStateError("the dead-letter producer is closed")
        if self._metadata.partitions_for_topic(topic) is None:
            self._wait_on_metadata(topic, self.config["max_block_ms"])
        partitions = self._metadata.partitions_for_topic(topic) or {0}
        if partition not in partitions:
            partition = self._partition(topic, None, key, value, key, value) if key is not None else min(partitions)
        if any(header_value is None for _, header_value in headers):
            headers = _HeadersWithNulls(headers)
        self._ensure_valid_record_size(self._estimate_size_in_bytes(key, value, headers))
        future, batch_is_full, new_batch_created, _ = self._accumulator.append(
            TopicPartition(topic, partition), None, key, value, headers, abort_on_new_batch=False
        )
        if batch_is_full or new_batch_created:
            self._sender.wakeup()
        return future


class DeadLetterPublisher:
    """Sends dead letters to `topic` and waits for the broker's acknowledgement, so the caller
    commits past a record only once it is safely on the DLT. A dead letter keeps the record's
    key, value and headers byte for byte, nulls included, and its partition where the DLT has
    it (the DLT is created with as many partitions as the event topic)."""

    def __init__(self, *, topic: str, timeout: float = 10.0):
        self.topic = topic
        self.timeout = timeout
        self._producer: _RecordCopyProducer | None = None
        self._lock = threading.Lock()

    def publish(self, record: ConsumerRecord, *, error: str, attempts: int) -> DeadLetterPosition:
        """Where the dead letter went; raises a `KafkaError` when the DLT did not acknowledge
        within the timeout."""
        with self._lock:
            if self._producer is None:
                self._producer = _RecordCopyProducer(
                    **producer_config(timeout_ms=int(self.timeout * 1000)),
                    # Room for the largest record the event topic takes, plus the dlt.* headers.
                    max_request_size=DLT_MAX_MESSAGE_BYTES,
                )
            producer = self._producer
        metadata = producer.send_copy(
            self.topic,
            partition=record.partition,
            key=record.key,
            value=record.value,
            headers=dead_letter_headers(record, error=error, attempts=attempts),
        ).get(timeout=self.timeout)
        return DeadLetterPosition(metadata.topic, metadata.partition, metadata.offset)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
