"""The process's Kafka producer and the publisher that sends outbox rows with it.

One producer per process, built lazily from settings (`acks=all`, idempotence on, linger,
batch size and compression configurable) and closed at exit. A publisher sends outbox rows in
one of two ways:

- `publish()` (the relay): sends, waits for the broker's answers no longer than its bound, and
  writes each row's own outcome before it returns (`send()` is the network half alone).
- `publish_nowait()` (the on-commit fast path): queues the rows and returns at once, so a
  request neither waits on the network nor does the producer's work: the publisher's
  `SendHandoff` (`kafka_bridge.outbox.handoff`) hands what was queued within `linger_ms` to the
  producer in one burst, from a thread of its own (the fast path's producer does not linger
  itself). The producer's callbacks queue each acknowledgement (or failure), and the
  publisher's `AcknowledgementWriter` (`kafka_bridge.outbox.acknowledgements`) writes them to
  the outbox in bulk, a few times a second. A row is handed over within the bound or left to
  the relay, and acknowledged or failed within the producer's delivery timeout (about the bound
  plus a second) after that, well before the relay's grace runs out, so the relay does not send
  rows that are still in flight.

What could not be sent stays unsent for `run_outbox_relay`.

Two kinds of failure are told apart (`kafka_bridge.send_failures.send_failure_kind`, every
sender's one classification). The broker's (unreachable, timed out, not enough replicas, no such
topic yet) would fail any record: the fast path pauses for everyone and the relay backs off.
The record's own (too large for the producer or the topic, invalid, an illegal topic name) would
fail this record again and no other: nothing pauses, and the relay counts it against the row
until the row is quarantined.

kafka-python 3.0.12 stops an idempotent producer for good once the broker refuses one of its
batches with a non-retriable error (a record over the topic's `max.message.bytes`, say): every
record sent on it afterwards fails with that same error. A publisher therefore retires its
producer after such a failure and builds a new one for the next send; and since the records
that failed beside the refused one carry its error too, the relay sends those again one at a
time to learn which record was really refused.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import KafkaError

from kafka_bridge import metrics
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.acknowledgements import AcknowledgementWriter
from kafka_bridge.outbox.handoff import SendHandoff
from kafka_bridge.outbox.sending import SendOutcome, SendRound, producer_close, producer_config, send_row
from kafka_bridge.outbox.store import outbox_outcomes_record
from kafka_bridge.send_failures import SendFailureKind, error_line, send_failure_kind

# The sending itself lives in kafka_bridge.outbox.sending; its names are importable from here too.
__all__ = [
    "OutboxPublisher",
    "PublishResult",
    "SendOutcome",
    "producer_config",
    "request_publisher",
    "reset_request_publisher",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """What `publish()` did: `sent` acknowledged, `failed` for the broker's reasons (the relay
    backs off), `refused` for the rows' own (counted against them), `quarantined` of those at
    their limit. `error` is the broker's error, if any, else the first refusal's."""

    sent: int
    failed: int
    error: str = ""
    refused: int = 0
    quarantined: int = 0


class OutboxPublisher:
    """Sends outbox rows to Kafka through one lazily built producer.

    `timeout` bounds the time one `publish()` call waits on the network. After a failure of the
    broker's the publisher stays `suspended` for `suspend_after_failure` seconds: the fast path
    returns at once and leaves rows to the relay, so a dead broker does not cost every request
    the full bound. A record refused for its own reason suspends nothing.
    `path` labels its sends in `orderflow_events_published_total` ("fast" or "relay").
    """

    def __init__(
        self,
        *,
        timeout: float,
        suspend_after_failure: float = 0.0,
        path: str = "relay",
    ):
        self.timeout = timeout
        self.suspend_after_failure = suspend_after_failure
        self.path = path
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._suspended_until = 0.0
        self._marker: AcknowledgementWriter | None = None
        self._handoff: SendHandoff | None = None
        self._retiring: list[threading.Thread] = []

    @property
    def suspended(self) -> bool:
        return time.monotonic() < self._suspended_until

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(**producer_config(timeout_ms=int(self.timeout * 1000)))
            return self._producer

    def _has_producer(self) -> bool:
        return self._producer is not None

    def retire(self, producer: KafkaProducer) -> None:
        """Stop using `producer` after a non-retriable failure (kafka-python will not send on it
        again) and close it on a thread of its own: this may run on its I/O thread."""
        with self._lock:
            if self._producer is not producer:
                return
            self._producer = None
            self._retiring = [thread for thread in self._retiring if thread.is_alive()]
            thread = threading.Thread(
                target=producer_close, args=(producer, min(self.timeout, 5.0)), name="producer-retire", daemon=True
            )
            self._retiring.append(thread)
        logger.info("kafka: producer stopped by a failed record; the next send uses a new one")
        thread.start()

    def send(self, rows: Sequence[OutboxEvent]) -> SendOutcome:
        """Send `rows` and wait, within the bound, for each one's own outcome; write nothing.

        Rows refused before are sent one at a time first, so that they cannot stop the producer
        under the others; then the rest together. Rows of that send which failed with a
        refusal's error are sent again one at a time: the refusal may have been a batch-mate's
        (or the stopped producer's), and a row refused on its own is refused for itself."""
        return SendRound(timeout=self.timeout, get_producer=self._get_producer, retire=self.retire).run(rows)

    def publish(self, rows: Sequence[OutboxEvent]) -> PublishResult:
        """Send `rows`, wait for each one's outcome within the bound, and write them: the
        acknowledged marked sent, the refused counted (quarantined at the limit), the failed
        counted. Never raises for Kafka trouble: it is reported in the result."""
        if not rows:
            return PublishResult(0, 0)
        if self.suspended:
            return PublishResult(0, len(rows), "publisher suspended after a recent failure")
        outcome = self.send(rows)
        quarantined = outbox_outcomes_record(acked=outcome.acked, refused=outcome.refused, failed=outcome.failed)
        return self.account(outcome, rows=rows, quarantined=quarantined)

    def account(self, outcome: SendOutcome, *, rows: Sequence[OutboxEvent], quarantined: list[int]) -> PublishResult:
        """Count and log a send's outcome once it is written; suspend after a broker failure."""
        metrics.EVENTS_PUBLISHED.labels(path=self.path).inc(len(outcome.acked))
        by_pk = {row.pk: row for row in rows}
        for refusal in outcome.refused:
            row = by_pk.get(refusal.pk)
            logger.warning(
                "kafka: outbox event %s (row %d) refused for a reason of its own%s: %s",
                row.event_id if row else "?",
                refusal.pk,
                ", quarantined" if refusal.pk in quarantined else "",
                refusal.error,
            )
        if outcome.failed:
            self._suspended_until = time.monotonic() + self.suspend_after_failure
            logger.warning(
                "kafka: %d of %d outbox event(s) not acknowledged within %.1f s, left for the relay: %s",
                len(outcome.failed),
                len(rows),
                self.timeout,
                outcome.failed[0].error,
            )
        return PublishResult(
            sent=len(outcome.acked),
            failed=len(outcome.failed),
            error=outcome.error,
            refused=len(outcome.refused),
            quarantined=len(quarantined),
        )

    def publish_nowait(self, rows: Sequence[OutboxEvent]) -> None:
        """Queue `rows` for the producer, in order, and return at once: the hand-off's thread
        gives them to the producer (`hand_over`). Acknowledged rows are marked sent shortly
        after, in bulk; failed ones keep their attempt and error for the relay. Never raises
        for Kafka trouble."""
        if not rows or self.suspended:
            return
        self._get_handoff().put(rows)

    def hand_over(self, rows: Sequence[OutboxEvent]) -> None:
        """Hand `rows` to the producer, in order, without waiting for the broker (the
        hand-off's thread). Never raises for Kafka trouble."""
        if not rows or self.suspended:
            return
        marker = self._get_marker()
        try:
            producer = self._get_producer()
        except Exception as exc:
            # Broker unreachable at bootstrap, or the client's own trouble: all the relay's.
            if send_failure_kind(exc) is SendFailureKind.CLIENTS:
                logger.exception("kafka: unexpected error while publishing")
            marker.failed(rows, error_line(exc), brokers=True)
            return
        for index, row in enumerate(rows):
            try:
                future = send_row(producer, row)
            except Exception as exc:
                kind = send_failure_kind(exc)
                if kind is SendFailureKind.RECORDS_OWN:
                    # Too large, an illegal topic name: this row is the relay's to count, and
                    # the rows after it go on.
                    marker.failed([row], error_line(exc, row), brokers=False)
                    continue
                # Metadata not available within max_block_ms, or the client's own trouble: what
                # was not handed over is the relay's.
                if kind is SendFailureKind.CLIENTS:
                    logger.exception("kafka: unexpected error while publishing")
                marker.failed(rows[index:], error_line(exc), brokers=True)
                return
            marker.track(future, row, producer)

    def _handed_over_late(self, rows: Sequence[OutboxEvent]) -> None:
        if self.suspended:
            return  # the relay's anyway, and said once already
        logger.warning(
            "kafka: %d outbox event(s) not handed to the producer within %.1f s of their commit, left for the relay",
            len(rows),
            self.timeout,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row handed to `publish_nowait()` so far is acknowledged or failed
        and written to the outbox; False if that took longer than `timeout`."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout + 5)
        with self._lock:
            handoff = self._handoff
        if handoff is not None and not handoff.flush(deadline):
            return False
        with self._lock:
            producer, marker = self._producer, self._marker
        while producer is not None:
            try:
                producer.flush(timeout=max(0.0, deadline - time.monotonic()))
                break
            except KafkaError:
                # A flush that trips over a batch kafka-python just split is tried again; one
                # that ran out of time is not.
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
        return marker.flush(deadline) if marker is not None else True

    def _get_handoff(self) -> SendHandoff:
        handoff = self._handoff
        if handoff is not None:
            return handoff
        with self._lock:
            if self._handoff is None:
                self._handoff = SendHandoff(
                    hand_over=self.hand_over,
                    linger=settings.KAFKA_PRODUCER_OPTIONS.get("linger_ms", 0) / 1000,
                    timeout=self.timeout,
                    ready=self._has_producer,
                    expired=self._handed_over_late,
                )
            return self._handoff

    def _get_marker(self) -> AcknowledgementWriter:
        with self._lock:
            if self._marker is None:
                self._marker = AcknowledgementWriter(publisher=self)
            return self._marker

    def suspend(self) -> None:
        self._suspended_until = time.monotonic() + self.suspend_after_failure

    def close(self, timeout: float = 5.0) -> None:
        """Hand over what is queued, close the producer (sending what it holds, within
        `timeout`), then write what it acknowledged and stop the marking thread."""
        with self._lock:
            handoff, self._handoff = self._handoff, None
        if handoff is not None:
            handoff.close(timeout=timeout)
        with self._lock:
            producer, self._producer = self._producer, None
            marker, self._marker = self._marker, None
            retiring, self._retiring = self._retiring, []
        if producer is not None:
            producer_close(producer, timeout)
        for thread in retiring:
            thread.join(timeout=timeout)
        if marker is not None:
            marker.close(timeout=timeout)


_request_publisher: OutboxPublisher | None = None
_request_publisher_lock = threading.Lock()


def request_publisher() -> OutboxPublisher:
    """The publisher of the on-commit fast path: bounded by KAFKA_PUBLISH_TIMEOUT_MS and
    suspended for KAFKA_PUBLISH_SUSPEND_SECONDS after a failure of the broker's."""
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
