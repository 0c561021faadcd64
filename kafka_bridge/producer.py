"""The process's Kafka producer and the publisher that sends outbox rows with it.

One producer per process, built lazily from settings (`acks=all`, idempotence on, linger,
batch size and compression configurable) and closed at exit. A publisher sends outbox rows,
waits for the broker's acknowledgement no longer than its bound, and marks the acknowledged
rows sent. What it could not send within the bound stays unsent for `run_outbox_relay`.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from kafka import KafkaProducer
from kafka.errors import KafkaError

from kafka_bridge import metrics
from kafka_bridge.client import connection_config
from kafka_bridge.models import OutboxEvent

logger = logging.getLogger(__name__)


def producer_config(*, timeout_ms: int) -> dict:
    """Producer settings; `timeout_ms` bounds bootstrap, metadata waits and each request."""
    linger_ms = settings.KAFKA_PRODUCER_LINGER_MS
    return {
        **connection_config(),
        "client_id": settings.KAFKA_CLIENT_ID,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "batch_size": settings.KAFKA_PRODUCER_BATCH_SIZE,
        "compression_type": settings.KAFKA_PRODUCER_COMPRESSION,
        "bootstrap_timeout_ms": timeout_ms,
        "max_block_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        # The producer gives up on a record soon after the caller stopped waiting for it, so an
        # unacknowledged outbox row is not also delivered minutes later behind the relay's back.
        "delivery_timeout_ms": timeout_ms + linger_ms + 1000,
        # The project's topics are created by ensure_topics; never by a typo in a send.
        "allow_auto_create_topics": False,
    }


@dataclass(frozen=True)
class PublishResult:
    sent: int
    failed: int
    error: str = ""


class OutboxPublisher:
    """Sends outbox rows to Kafka through one lazily built producer.

    `timeout` bounds the time one `publish()` call waits on the network. After a failure the
    publisher stays `suspended` for `suspend_after_failure` seconds: publish() returns at once
    and leaves rows to the relay, so a dead broker does not cost every request the full bound.
    `path` labels its sends in `orderflow_events_published_total` ("fast" or "relay").
    """

    def __init__(self, *, timeout: float, suspend_after_failure: float = 0.0, path: str = "relay"):
        self.timeout = timeout
        self.suspend_after_failure = suspend_after_failure
        self.path = path
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._suspended_until = 0.0

    @property
    def suspended(self) -> bool:
        return time.monotonic() < self._suspended_until

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(**producer_config(timeout_ms=int(self.timeout * 1000)))
            return self._producer

    def publish(self, rows: Sequence[OutboxEvent]) -> PublishResult:
        """Send `rows` in order, wait for their acknowledgements within the bound, and mark the
        acknowledged ones sent. Never raises for Kafka trouble: it is reported in the result."""
        if not rows:
            return PublishResult(0, 0)
        if self.suspended:
            return PublishResult(0, len(rows), "publisher suspended after a recent failure")
        deadline = time.monotonic() + self.timeout
        acked: list[tuple[OutboxEvent, int, int]] = []
        error = ""
        try:
            producer = self._get_producer()
            futures = [
                (
                    row,
                    producer.send(
                        row.topic,
                        key=row.key.encode() if row.key is not None else None,
                        value=row.payload.encode(),
                        headers=[(name, value.encode()) for name, value in row.headers],
                    ),
                )
                for row in rows
            ]
            for row, future in futures:
                metadata = future.get(timeout=max(0.0, deadline - time.monotonic()))
                acked.append((row, metadata.partition, metadata.offset))
        except KafkaError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:
            # Anything else from the client is a bug to see, but must not kill the caller: the
            # rows stay unsent and are retried.
            logger.exception("kafka: unexpected error while publishing")
            error = f"{type(exc).__name__}: {exc}"[:500]
        failed = len(rows) - len(acked)
        self._mark_sent(acked)
        metrics.EVENTS_PUBLISHED.labels(path=self.path).inc(len(acked))
        if failed:
            self._suspended_until = time.monotonic() + self.suspend_after_failure
            OutboxEvent.objects.filter(pk__in=[row.pk for row in rows[len(acked):]]).update(
                attempts=F("attempts") + 1, last_error=error
            )
            logger.warning(
                "kafka: %d of %d outbox event(s) not acknowledged within %.1f s, left for the relay: %s",
                failed, len(rows), self.timeout, error,
            )
        return PublishResult(len(acked), failed, error)

    @staticmethod
    def _mark_sent(acked: list[tuple[OutboxEvent, int, int]]) -> None:
        if not acked:
            return
        now = timezone.now()
        for row, partition, offset in acked:
            row.sent_at, row.partition, row.offset = now, partition, offset
            row.attempts += 1
            row.claimed_by, row.claimed_until = "", None
        OutboxEvent.objects.bulk_update(
            [row for row, _, _ in acked],
            ["sent_at", "partition", "offset", "attempts", "claimed_by", "claimed_until"],
            batch_size=500,
        )

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=timeout)
                self._producer = None


_request_publisher: OutboxPublisher | None = None
_request_publisher_lock = threading.Lock()


def request_publisher() -> OutboxPublisher:
    """The publisher of the on-commit fast path: bounded by KAFKA_PUBLISH_TIMEOUT_MS and
    suspended for KAFKA_PUBLISH_SUSPEND_SECONDS after a failure."""
    global _request_publisher
    with _request_publisher_lock:
        if _request_publisher is None:
            _request_publisher = OutboxPublisher(
                timeout=settings.KAFKA_PUBLISH_TIMEOUT_MS / 1000,
                suspend_after_failure=settings.KAFKA_PUBLISH_SUSPEND_SECONDS,
                path="fast",
            )
            atexit.register(_request_publisher.close)
        return _request_publisher


def reset_request_publisher() -> None:
    """Close and forget the fast-path publisher (settings changed, e.g. in tests)."""
    global _request_publisher
    with _request_publisher_lock:
        if _request_publisher is not None:
            _request_publisher.close()
            _request_publisher = None
