"""Publishing a record that cannot be processed to a dead-letter topic, as the contract says:
the original key and value bytes, the original headers, and `dlt.original.topic`,
`dlt.original.partition`, `dlt.original.offset`, `dlt.error` (one line) and `dlt.attempts`."""
from __future__ import annotations

import threading

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from kafka_bridge.producer import producer_config

DLT_HEADER_PREFIX = "dlt."
MAX_ERROR_LENGTH = 1000


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR_LENGTH]


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


class DeadLetterPublisher:
    """Sends dead letters to `topic` and waits for the broker's acknowledgement, so the caller
    commits past a record only once it is safely on the DLT."""

    def __init__(self, *, topic: str, timeout: float = 10.0):
        self.topic = topic
        self.timeout = timeout
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def publish(self, record: ConsumerRecord, *, error: str, attempts: int) -> None:
        """Raises a `KafkaError` when the DLT did not acknowledge within the timeout."""
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(**producer_config(timeout_ms=int(self.timeout * 1000)))
            producer = self._producer
        producer.send(
            self.topic,
            key=record.key,
            value=record.value,
            headers=dead_letter_headers(record, error=error, attempts=attempts),
        ).get(timeout=self.timeout)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
