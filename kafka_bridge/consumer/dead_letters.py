"""Publishing a record that cannot be processed to a dead-letter topic, as the contract says:
the original key and value bytes, the original headers, and `dlt.original.topic`,
`dlt.original.partition`, `dlt.original.offset`, `dlt.error` (one line) and `dlt.attempts`.

A record's size is judged as the broker judges it. The topic's `max.message.bytes` bounds the
*compressed* batch, while kafka-python checks `max_request_size` against the *uncompressed*
record: a value of megabytes of one repeated byte, gzip-compressed by its producer, is a few
kilobytes on the event topic. The dead-letter producer therefore compresses (gzip, the best ratio
kafka-python has without an extra library) and leaves the size check to the broker. A dead letter
the broker still refuses for a reason of its own (too large even compressed, invalid) is never
retried: it is replaced by a bounded dead letter (`dlt.cut`) that names the original's position,
size and sha256, and says why; the original stays on the event topic.

The same copying producer republishes dead letters on a redrive (`RecordCopier`), so whatever
the consumer could dead-letter, null keys, values and header values included, goes back as it was.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import IllegalStateError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import TopicPartition

from kafka_bridge.outbox.sending import producer_config
from kafka_bridge.send_failures import SendFailureKind, error_line, send_failure_kind
from kafka_bridge.text import one_line
from kafka_bridge.tracing import TRACE_HEADERS

logger = logging.getLogger(__name__)

DLT_HEADER_PREFIX = "dlt."
# On a bounded dead letter: why the record itself could not be kept, and what identifies it.
CUT_HEADER = "dlt.cut"
CUT_SIZE_HEADER = "dlt.original.size"
CUT_SHA256_HEADER = "dlt.original.sha256"
# A bounded dead letter keeps the record's key (the order id, which the operator's pages link)
# only up to this size: a key of megabytes is as much the problem as the value.
CUT_KEY_MAX_BYTES = 1024
# The copying producer never refuses a record for its size itself: only the broker, which judges
# the compressed batch against the topic's max.message.bytes, does. kafka-python would compare
# this with the uncompressed record, so it is set far above anything a fetch can hold.
COPY_MAX_REQUEST_SIZE = 2**31 - 1
# Dead letters are few and may be large: the best compression kafka-python has built in.
COPY_COMPRESSION = "gzip"


class DeadLetterPosition(NamedTuple):
    """Where the broker put a dead letter; `cut` says why it is a bounded stand-in for the record
    ("" when it is the record itself)."""

    topic: str
    partition: int
    offset: int
    cut: str = ""


def dead_letter_headers(
    record: ConsumerRecord, *, error: str, attempts: int, trace_headers: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    """The record's own headers and the `dlt.*` ones; with `trace_headers` (the context of the
    span that gave the record up), those instead of the record's `traceparent`/`tracestate`."""
    # A record dead-lettered again after a replay keeps one set of dlt.* headers: the latest.
    replaced = {name for name, _ in trace_headers}
    original = [
        (name, value)
        for name, value in (record.headers or [])
        if not name.startswith(DLT_HEADER_PREFIX) and not (replaced and name in TRACE_HEADERS)
    ]
    return (
        original
        + list(trace_headers)
        + [
            ("dlt.original.topic", record.topic.encode()),
            ("dlt.original.partition", str(record.partition).encode()),
            ("dlt.original.offset", str(record.offset).encode()),
            ("dlt.error", one_line(error).encode()),
            ("dlt.attempts", str(attempts).encode()),
        ]
    )


def cut_headers(record: ConsumerRecord, *, error: str, attempts: int, reason: str) -> list[tuple[str, bytes]]:
    """The headers of a bounded dead letter: the `dlt.*` ones of a dead letter, and what names
    the record that could not be kept (its value's size and sha256) and why (`dlt.cut`)."""
    value = record.value or b""
    return [
        ("dlt.original.topic", record.topic.encode()),
        ("dlt.original.partition", str(record.partition).encode()),
        ("dlt.original.offset", str(record.offset).encode()),
        ("dlt.error", one_line(error).encode()),
        ("dlt.attempts", str(attempts).encode()),
        (CUT_HEADER, one_line(reason).encode()),
        (CUT_SIZE_HEADER, str(len(value)).encode()),
        (CUT_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
    ]


def dead_letter_cut_record(*, group_id: str, record: ConsumerRecord, position: DeadLetterPosition) -> None:
    """Keep the facts of a bounded dead letter (`position.cut` set) where the status page counts
    them."""
    from kafka_bridge.models import CutDeadLetter

    value = record.value or b""
    CutDeadLetter.objects.create(
        group_id=group_id,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        value_size=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        reason=position.cut,
        dead_letter_topic=position.topic,
        dead_letter_partition=position.partition,
        dead_letter_offset=position.offset,
    )


def refused_for_its_own_sake(exc: BaseException) -> bool:
    """True when sending a record again unchanged would fail again (the broker refused it for
    what it is, or the client could not encode it); False for the broker's failures (unreachable,
    not the leader, timed out), which are worth retrying. A copy's bytes are whatever the DLT or
    the event topic held, so the client's own failure (`SendFailureKind.CLIENTS`) is the record's
    here."""
    return send_failure_kind(exc) in (SendFailureKind.RECORDS_OWN, SendFailureKind.CLIENTS)


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
    the accumulator, the sender) without that check, and without the client's own size check,
    which would judge the uncompressed record where the broker judges the compressed batch."""

    def send_copy(self, topic: str, *, partition: int | None, key, value, headers) -> FutureRecordMetadata:
        if self._closed:
            raise IllegalStateError("the copying producer is closed")
        if self._metadata.partitions_for_topic(topic) is None:
            self._wait_on_metadata(topic, self.config["max_block_ms"])
        partitions = self._metadata.partitions_for_topic(topic) or {0}
        if partition not in partitions:
            partition = self._partition(topic, None, key, value, key, value) if key is not None else min(partitions)
        if any(header_value is None for _, header_value in headers):
            headers = _HeadersWithNulls(headers)
        future, batch_is_full, new_batch_created, _ = self._accumulator.append(
            TopicPartition(topic, partition), None, key, value, headers, abort_on_new_batch=False
        )
        if batch_is_full or new_batch_created:
            self._sender.wakeup()
        return future


class RecordCopier:
    """Sends records byte for byte (null keys, values and header values included), one at a
    time, and waits for the broker's acknowledgement: the dead-letter publisher's and the
    redrive's one path to Kafka.

    kafka-python's idempotent producer stops for good once the broker refused one of its batches
    for the record's own reason: the copier then retires it and builds a new one for the next
    record. Thread-safe; sends are serialized."""

    def __init__(self, *, timeout: float):
        self.timeout = timeout
        self._producer: _RecordCopyProducer | None = None
        self._lock = threading.Lock()

    def send(
        self, topic: str, *, partition: int | None, key, value, headers: Sequence[tuple[str, bytes | None]]
    ) -> DeadLetterPosition:
        """Where the broker put the record. Raises what the send raised: a `KafkaError` (see
        `refused_for_its_own_sake`), or the client's own error for a record it cannot encode."""
        with self._lock:
            if self._producer is None:
                self._producer = _RecordCopyProducer(**self._config())
            try:
                metadata = self._producer.send_copy(
                    topic, partition=partition, key=key, value=value, headers=list(headers)
                ).get(timeout=self.timeout)
            except Exception as exc:
                if refused_for_its_own_sake(exc):
                    self._retire()
                raise
        return DeadLetterPosition(metadata.topic, metadata.partition, metadata.offset)

    def _config(self) -> dict:
        return {
            **producer_config(timeout_ms=int(self.timeout * 1000)),
            "compression_type": COPY_COMPRESSION,
            "max_request_size": COPY_MAX_REQUEST_SIZE,
            # One record at a time, sent at once: nothing to wait for.
            "linger_ms": 0,
        }

    def _retire(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=1)
            self._producer = None

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None


class DeadLetterPublisher:
    """Sends dead letters to `topic` and waits for the broker's acknowledgement, so the caller
    commits past a record only once it is safely on the DLT. A dead letter keeps the record's
    key, value and headers byte for byte, nulls included, and its partition where the DLT has
    it (the DLT is created with as many partitions as the event topic). A record the broker
    refuses for its own sake is replaced by a bounded dead letter (see the module's docstring);
    only the broker's failures are raised, for the caller to retry."""

    def __init__(self, *, topic: str, timeout: float = 10.0, copier: RecordCopier | None = None):
        self.topic = topic
        self._copier = copier or RecordCopier(timeout=timeout)

    def publish(
        self, record: ConsumerRecord, *, error: str, attempts: int, trace_headers: Sequence[tuple[str, bytes]] = ()
    ) -> DeadLetterPosition:
        """Where the dead letter went, with `cut` set when it is a bounded stand-in; raises a
        `KafkaError` when the DLT did not acknowledge within the timeout."""
        try:
            return self._copier.send(
                self.topic,
                partition=record.partition,
                key=record.key,
                value=record.value,
                headers=dead_letter_headers(record, error=error, attempts=attempts, trace_headers=trace_headers),
            )
        except Exception as exc:
            if not refused_for_its_own_sake(exc):
                raise
            reason = f"the record itself was refused: {error_line(exc)}"
        key = record.key if record.key is not None and len(record.key) <= CUT_KEY_MAX_BYTES else None
        position = self._copier.send(
            self.topic,
            partition=record.partition,
            key=key,
            value=None,
            headers=cut_headers(record, error=error, attempts=attempts, reason=reason),
        )
        return position._replace(cut=reason)

    def close(self) -> None:
        self._copier.close()
