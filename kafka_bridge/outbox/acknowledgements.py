"""The fast path's acknowledgement writer: what the producer's callbacks report about records
sent without waiting (`OutboxPublisher.publish_nowait`), written to the outbox from a thread of
its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from django.db import connection
from kafka import KafkaProducer

from kafka_bridge import metrics
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.store import SendFailure, SentMark, outbox_outcomes_record
from kafka_bridge.send_failures import SendFailureKind, error_line, send_failure_kind

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the writer needs of the publisher whose sends it records."""

    timeout: float
    path: str

    def suspend(self) -> None: ...

    def retire(self, producer: KafkaProducer) -> None: ...


# Seconds the marking thread gathers acknowledgements before writing them in one transaction.
# Each write is a write transaction beside the requests' (on SQLite, for its one write lock):
# five a second cost a busy process less than twenty, and 200 ms is still far inside the relay's
# grace, so a row acknowledged is marked long before the relay could take it for unsent.
MARK_INTERVAL = 0.2


class AcknowledgementWriter:
    """Writes the fast path's acknowledgements to the outbox from a thread of its own.

    The producer's callbacks run on its I/O thread, which must never wait on the database: they
    only queue what happened. This thread writes the queue in bulk (one transaction, one
    statement per kind of outcome) every MARK_INTERVAL seconds while there is something to write.

    The fast path does not count refusals: a record it saw refused may have shared a stopped
    producer with the one really refused (see the module's docstring), so it records an attempt
    and the error, and the relay, which can tell them apart, counts and quarantines.
    """

    def __init__(self, *, publisher: Publisher):
        self.publisher = publisher
        self._cond = threading.Condition()
        self._acked: list[SentMark] = []
        self._failures: list[SendFailure] = []
        self._in_flight = 0  # handed to the producer, not yet acknowledged or failed
        self._writing = False
        self._flushers = 0  # flush() calls waiting: the thread writes at once while there are any
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox-marker", daemon=True)
        self._thread.start()

    # --- called by the publisher and the producer's callbacks ------------------------------

    def track(self, future, row: OutboxEvent, producer: KafkaProducer) -> None:
        with self._cond:
            self._in_flight += 1
        future.add_callback(self._acknowledged, row.pk, row.resends)
        future.add_errback(self._errored, row.pk, row.resends, producer)

    def failed(self, rows: Sequence[OutboxEvent], error: str, *, brokers: bool) -> None:
        """`rows` were not handed over; `brokers`: for the broker's reason (suspends the path)."""
        if brokers:
            self.publisher.suspend()
        if rows:
            with self._cond:
                self._failures.extend(SendFailure(row.pk, row.resends, error) for row in rows)
                self._cond.notify_all()

    def _acknowledged(self, pk: int, resends: int, metadata) -> None:
        with self._cond:
            self._in_flight -= 1
            self._acked.append(SentMark(pk, resends, metadata.partition, metadata.offset))
            self._wake_if_needed()

    def _errored(self, pk: int, resends: int, producer: KafkaProducer, exc: Exception) -> None:
        # Only the broker's failures (and the client's own trouble) pause the path for everyone.
        if send_failure_kind(exc) not in (SendFailureKind.RECORDS_OWN, SendFailureKind.BATCH_MATES):
            self.publisher.suspend()
        if not getattr(exc, "retriable", False):
            self.publisher.retire(producer)
        with self._cond:
            self._in_flight -= 1
            self._failures.append(SendFailure(pk, resends, error_line(exc)))
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

    def _write(self, acked: list[SentMark], failures: list[SendFailure]) -> None:
        try:
            outbox_outcomes_record(acked=acked, failed=failures)
        except Exception:
            # The rows stay unsent and the relay sends them again: a duplicate on the topic,
            # which consumers deduplicate by event id, never a loss.
            logger.exception("outbox: could not mark %d acknowledged event(s) sent", len(acked))
            connection.close()
            return
        if failures:
            logger.warning(
                "kafka: %d outbox event(s) not acknowledged within %.1f s, left for the relay: %s",
                len(failures),
                self.publisher.timeout,
                failures[-1].error,
            )
        if acked:
            metrics.EVENTS_PUBLISHED.labels(path=self.publisher.path).inc(len(acked))
