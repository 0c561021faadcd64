"""Handing outbox rows to a producer and waiting for each one's outcome: the producer's settings,
one row's send, a producer's close, and `SendRound`, the network half of
`OutboxPublisher.send()` (`kafka_bridge.outbox.publisher`, which says why rows are sent the way they are).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import InvalidTopicError, KafkaError
from kafka.util import ensure_valid_topic_name

from kafka_bridge.connection import connection_config
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.store import SendFailure, SentMark
from kafka_bridge.send_failures import SendFailureKind, error_line, send_failure_kind

# The same logger as the publisher's: these lines are its sends'.
logger = logging.getLogger("kafka_bridge.outbox.publisher")


def producer_config(*, timeout_ms: int) -> dict:
    """Producer settings: the connection, KAFKA_PRODUCER_OPTIONS (the project's defaults with the
    deployer's over them), then what the outbox rests on; `timeout_ms` bounds bootstrap, metadata
    waits and each request."""
    options = settings.KAFKA_PRODUCER_OPTIONS
    linger_ms = options.get("linger_ms", 0)
    return {
        **connection_config(),
        **options,
        "acks": "all",
        "enable_idempotence": True,
        "bootstrap_timeout_ms": timeout_ms,
        "max_block_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        # The producer gives up on a record soon after the caller stopped waiting for it, so an
        # unacknowledged outbox row is not also delivered minutes later behind the relay's back.
        "delivery_timeout_ms": timeout_ms + linger_ms + 1000,
        # The project's topics are created by ensure_topics; never by a typo in a send.
        "allow_auto_create_topics": False,
    }


def send_row(producer: KafkaProducer, row: OutboxEvent):
    # kafka-python refuses an illegal topic name with a ValueError; it is Kafka's INVALID_TOPIC.
    try:
        ensure_valid_topic_name(row.topic)
    except (TypeError, ValueError) as exc:
        raise InvalidTopicError(str(exc)) from None
    return producer.send(
        row.topic,
        key=row.key.encode() if row.key is not None else None,
        value=row.payload.encode(),
        headers=[(name, value.encode()) for name, value in row.headers],
    )


def producer_close(producer: KafkaProducer, timeout: float) -> None:
    # kafka-python 3.0.12's flush (which close() runs first) can trip over a batch it has just
    # split after a MESSAGE_TOO_LARGE ("Future not done"); the next try does not.
    for _ in range(3):
        try:
            producer.close(timeout=timeout)
            return
        except KafkaError as exc:
            error = exc
    logger.warning("kafka: could not close a producer cleanly: %s", error_line(error))


@dataclass
class SendOutcome:
    """Each row's own outcome of one `send()`."""

    acked: list[SentMark] = field(default_factory=list)
    refused: list[SendFailure] = field(default_factory=list)
    failed: list[SendFailure] = field(default_factory=list)

    def ack(self, row: OutboxEvent, metadata) -> None:
        self.acked.append(SentMark(row.pk, row.resends, metadata.partition, metadata.offset))

    def refuse(self, row: OutboxEvent, exc: BaseException) -> None:
        self.refused.append(SendFailure(row.pk, row.resends, error_line(exc, row)))

    def fail(self, row: OutboxEvent, error: str) -> None:
        self.failed.append(SendFailure(row.pk, row.resends, error))

    @property
    def error(self) -> str:
        return (self.failed or self.refused)[0].error if (self.failed or self.refused) else ""


class SendRound:
    """One `OutboxPublisher.send()`: rows sent on the publisher's producer (`get_producer`)
    within `timeout` seconds in all, a producer stopped by a non-retriable failure handed to
    `retire`, and each row's outcome in `outcome`."""

    def __init__(
        self,
        *,
        timeout: float,
        get_producer: Callable[[], KafkaProducer],
        retire: Callable[[KafkaProducer], None],
    ):
        self.timeout = timeout
        self.get_producer, self.retire = get_producer, retire
        self.outcome = SendOutcome()
        self.deadline = time.monotonic() + timeout

    def run(self, rows: Sequence[OutboxEvent]) -> SendOutcome:
        """Rows refused before one at a time, then the rest together, then those of the rest
        whose failure may have been another's one at a time (see `OutboxPublisher.send`)."""
        for row in [row for row in rows if row.refusals]:
            self._send_batch([row])
        suspects = self._send_batch([row for row in rows if not row.refusals])
        for row in suspects:
            self._send_batch([row])
        return self.outcome

    def _send_batch(self, rows: list[OutboxEvent]) -> list[OutboxEvent]:
        """Send `rows` together and record each outcome, except for rows whose non-retriable
        failure may not be their own (more than one record was in flight): those are returned."""
        if not rows:
            return []
        if time.monotonic() >= self.deadline:
            for row in rows:
                self.outcome.fail(row, f"not sent: the {self.timeout:g} s bound of the round ran out")
            return []
        try:
            producer = self.get_producer()
        except Exception as exc:
            if send_failure_kind(exc) is SendFailureKind.CLIENTS:
                logger.exception("kafka: unexpected error while building the producer")
            for row in rows:
                self.outcome.fail(row, error_line(exc))
            return []
        suspects, stopped = self._outcomes_await(self._hand_over(producer, rows))
        if stopped:
            self.retire(producer)
        return suspects

    def _hand_over(self, producer: KafkaProducer, rows: list[OutboxEvent]) -> list[tuple[OutboxEvent, object]]:
        """Each row's future, for the rows the producer took; the others' outcomes recorded."""
        futures = []
        # A topic whose metadata could not be had costs the wait once per round, not per row.
        unreachable: dict[str, str] = {}
        for row in rows:
            if row.topic in unreachable:
                self.outcome.fail(row, unreachable[row.topic])
                continue
            try:
                futures.append((row, send_row(producer, row)))
            except Exception as exc:
                kind = send_failure_kind(exc)
                if kind is SendFailureKind.RECORDS_OWN:
                    # Checked in this process before anything was sent: certainly its own.
                    self.outcome.refuse(row, exc)
                    continue
                if kind is SendFailureKind.CLIENTS:
                    logger.exception("kafka: unexpected error while publishing")
                unreachable[row.topic] = error_line(exc)
                self.outcome.fail(row, unreachable[row.topic])
        return futures

    def _outcomes_await(self, futures: list[tuple[OutboxEvent, object]]) -> tuple[list[OutboxEvent], bool]:
        """Each future's outcome recorded, but for the suspects (returned), and whether a
        non-retriable failure stopped the producer."""
        suspects: list[OutboxEvent] = []
        stopped = False
        for row, future in futures:
            try:
                metadata = future.get(timeout=max(0.0, self.deadline - time.monotonic()))
            except Exception as exc:
                kind = send_failure_kind(exc)
                if kind is SendFailureKind.CLIENTS:
                    # Not Kafka's answer: a bug to see, but it must not kill the caller; the row
                    # stays unsent and is retried.
                    logger.exception("kafka: unexpected error while publishing")
                    self.outcome.fail(row, error_line(exc))
                    continue
                if exc.retriable:
                    self.outcome.fail(row, error_line(exc))
                    continue
                stopped = True
                if len(futures) > 1 and kind in (SendFailureKind.RECORDS_OWN, SendFailureKind.BATCH_MATES):
                    # Perhaps a batch-mate's refusal, or the stopped producer's: find out alone.
                    suspects.append(row)
                elif kind is SendFailureKind.RECORDS_OWN:
                    self.outcome.refuse(row, exc)
                else:
                    self.outcome.fail(row, error_line(exc))
            else:
                self.outcome.ack(row, metadata)
        return suspects, stopped
