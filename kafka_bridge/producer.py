"""The process's Kafka producer and the publisher that sends outbox rows with it.

One producer per process, built lazily from settings (`acks=all`, idempotence on, linger,
batch size and compression configurable) and closed at exit. A publisher sends outbox rows in
one of two ways:

- `publish()` (the relay): sends, waits for the broker's acknowledgements no longer than its
  bound, and marks the acknowledged rows sent before it returns.
- `publish_nowait()` (the on-commit fast path): hands the rows to the producer and returns at
  once, so a request never waits on the network. The producer's callbacks queue each
  acknowledgement (or failure), and a thread of the publisher's own writes them to the outbox in
  bulk, a few times a second. A record is acknowledged or failed within the producer's delivery
  timeout (about the bound plus a second), well before the relay's grace runs out, so the relay
  does not send rows that are still in flight.

What could not be sent stays unsent for `run_outbox_relay`.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
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
        self._marker: _SentMarker | None = None

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

    def publish_nowait(self, rows: Sequence[OutboxEvent]) -> None:
        """Hand `rows` to the producer, in order, and return without waiting for the broker.
        Acknowledged rows are marked sent shortly after, in bulk; failed ones keep their
        attempt and error for the relay. Never raises for Kafka trouble."""
        if not rows or self.suspended:
            return
        marker = self._get_marker()
        sent = 0
        try:
            producer = self._get_producer()
            for row in rows:
                future = producer.send(
                    row.topic,
                    key=row.key.encode() if row.key is not None else None,
                    value=row.payload.encode(),
                    headers=[(name, value.encode()) for name, value in row.headers],
                )
                sent += 1
                marker.track(future, row.pk)
        except Exception as exc:
            # Broker unreachable at bootstrap, metadata not available within max_block_ms, or
            # the client's own trouble: what was not handed over is the relay's.
            if not isinstance(exc, KafkaError):
                logger.exception("kafka: unexpected error while publishing")
            marker.failed([row.pk for row in rows[sent:]], f"{type(exc).__name__}: {exc}"[:500])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row handed to `publish_nowait()` so far is acknowledged or failed
        and written to the outbox; False if that took longer than `timeout`."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout + 5)
        with self._lock:
            producer, marker = self._producer, self._marker
        if producer is not None:
            try:
                producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError:
                return False
        return marker.flush(deadline) if marker is not None else True

    def _get_marker(self) -> _SentMarker:
        with self._lock:
            if self._marker is None:
                self._marker = _SentMarker(publisher=self)
            return self._marker

    def _suspend(self) -> None:
        self._suspended_until = time.monotonic() + self.suspend_after_failure

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
        """Close the producer (sending what it holds, within `timeout`), then write what it
        acknowledged and stop the marking thread."""
        with self._lock:
            producer, self._producer = self._producer, None
            marker, self._marker = self._marker, None
        if producer is not None:
            producer.close(timeout=timeout)
        if marker is not None:
            marker.close(timeout=timeout)


# Seconds the marking thread gathers acknowledgements before writing them in one transaction.
MARK_INTERVAL = 0.05


class _SentMarker:
    """Writes the fast path's acknowledgements to the outbox from a thread of its own.

    The producer's callbacks run on its I/O thread, which must never wait on the database: they
    only queue what happened. This thread writes the queue in bulk (one transaction, one
    statement per kind of outcome) every MARK_INTERVAL seconds while there is something to write.
    """

    def __init__(self, *, publisher: OutboxPublisher):
        self.publisher = publisher
        self._cond = threading.Condition()
        self._acked: list[tuple[int, int, int]] = []  # (pk, partition, offset)
        self._failures: list[tuple[int, str]] = []  # (pk, error)
        self._in_flight = 0  # handed to the producer, not yet acknowledged or failed
        self._writing = False
        self._flushers = 0  # flush() calls waiting: the thread writes at once while there are any
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox-marker", daemon=True)
        self._thread.start()

    # --- called by the publisher and the producer's callbacks ------------------------------

    def track(self, future, pk: int) -> None:
        with self._cond:
            self._in_flight += 1
        future.add_callback(self._acknowledged, pk)
        future.add_errback(self._errored, pk)

    def failed(self, pks: list[int], error: str) -> None:
        self.publisher._suspend()
        if pks:
            with self._cond:
                self._failures.extend((pk, error) for pk in pks)
                self._cond.notify_all()

    def _acknowledged(self, pk: int, metadata) -> None:
        with self._cond:
            self._in_flight -= 1
            self._acked.append((pk, metadata.partition, metadata.offset))
            self._wake_if_needed()

    def _errored(self, pk: int, exc: Exception) -> None:
        self.publisher._suspend()
        with self._cond:
            self._in_flight -= 1
            self._failures.append((pk, f"{type(exc).__name__}: {exc}"[:500]))
            self._wake_if_needed()

    def _wake_if_needed(self) -> None:
        # Waking the thread (and every flush() waiting) on each acknowledgement would hand the
        # GIL back and forth between the request threads and this one for nothing: the first
        # outcome of a round starts the thread's gathering, the last one in flight ends a flush.
        if len(self._acked) + len(self._failures) == 1 or not self._in_flight:
            self._cond.notify_all()

    def flush(self, deadline: float) -> bool:
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._in_flight or self._acked or self._failures or self._writing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float) -> None:
        self.flush(time.monotonic() + timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._acked or self._failures or self._closing):
                        self._cond.wait()
                    if self._closing and not (self._acked or self._failures):
                        return
                    # Gather what arrives within the interval into one write, unless someone
                    # waits for it.
                    gathered_until = time.monotonic() + MARK_INTERVAL
                    while not (self._flushers or self._closing):
                        remaining = gathered_until - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    acked, self._acked = self._acked, []
                    failures, self._failures = self._failures, []
                    self._writing = True
                try:
                    self._write(acked, failures)
                finally:
                    with self._cond:
                        self._writing = False
                        self._cond.notify_all()
        finally:
            # This thread's own connection; a process (or test database) must not keep it.
            connection.close()

    def _write(self, acked: list[tuple[int, int, int]], failures: list[tuple[int, str]]) -> None:
        try:
            with transaction.atomic():
                if acked:
                    _outbox_mark_sent(acked)
                for error in sorted({error for _, error in failures}):
                    OutboxEvent.objects.filter(
                        pk__in=[pk for pk, e in failures if e == error], sent_at__isnull=True
                    ).update(attempts=F("attempts") + 1, last_error=error)
        except Exception:
            # The rows stay unsent and the relay sends them again: a duplicate on the topic,
            # which consumers deduplicate by event id, never a loss.
            logger.exception("outbox: could not mark %d acknowledged event(s) sent", len(acked))
            connection.close()
            return
        if failures:
            logger.warning(
                "kafka: %d outbox event(s) not acknowledged within %.1f s, left for the relay: %s",
                len(failures), self.publisher.timeout, failures[-1][1],
            )
        if acked:
            metrics.EVENTS_PUBLISHED.labels(path=self.publisher.path).inc(len(acked))


def _outbox_mark_sent(acked: list[tuple[int, int, int]]) -> None:
    """One UPDATE statement run for many rows (executemany): each row gets its own partition and
    offset, and `bulk_update`'s CASE per column would cost more to build than to run."""
    fields = OutboxEvent._meta
    quote = connection.ops.quote_name
    column = lambda name: quote(fields.get_field(name).column)  # noqa: E731
    sql = (
        f"UPDATE {quote(fields.db_table)} SET {column('sent_at')} = %s, {column('partition')} = %s, "
        f"{column('offset')} = %s, {column('attempts')} = {column('attempts')} + 1, "
        f"{column('claimed_by')} = '', {column('claimed_until')} = NULL "
        f"WHERE {column('id')} = %s AND {column('sent_at')} IS NULL"
    )
    now = fields.get_field("sent_at").get_db_prep_save(timezone.now(), connection)
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(now, partition, offset, pk) for pk, partition, offset in acked])


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
