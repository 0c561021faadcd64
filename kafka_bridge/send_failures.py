"""Why a send failed: for the record's own reason (it would fail again, and no other record
would), or for the broker's (any record would have failed); and the failure as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafka.errors import (
    InvalidRecordError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

if TYPE_CHECKING:
    from kafka_bridge.models import OutboxEvent

# Refused for what the record is, so sent again unchanged it is refused again, while other
# records go through: larger than the producer's max_request_size or the topic's
# max.message.bytes (MESSAGE_TOO_LARGE), a batch of it too large to split (RECORD_LIST_TOO_LARGE),
# failing the broker's validation (INVALID_RECORD), or an illegal topic name (INVALID_TOPIC).
# Not here, on purpose: a topic that does not exist (the producer only times out waiting for its
# metadata, and a forgotten ensure_topics must not quarantine every event), authorization,
# timeouts and replication errors: those are the broker's, and pass.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError, InvalidTopicError)


def failure_is_the_records_own(exc: BaseException) -> bool:
    """True when `exc` refuses the record for what it is (the row's own failure), False when it
    is the broker's (any record would have failed)."""
    return isinstance(exc, RECORD_ERRORS)


def shares_a_refused_batch(exc: BaseException) -> bool:
    # kafka-python fails a refused record's batch-mates with a bare KafkaError: neither theirs
    # nor the broker's.
    return type(exc) is KafkaError


def error_line(exc: BaseException, row: OutboxEvent | None = None) -> str:
    """One line for `last_error` and the logs; a size refusal says how large the record is."""
    detail = exc.args[0] if exc.args and exc.args[0] is not None else getattr(exc, "message", "")
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if row is not None and isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError)):
        text += f" (the record's value is {len(row.payload.encode()):,} bytes)"
    return " ".join(text.split())[:500]
