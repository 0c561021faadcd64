"""What a failed send means, decided here for every sender (the publisher's two paths, the
dead-letter and redrive copier): the record's own fault (it would fail again, and no other record
would), the broker's (any record would have failed), a refused batch-mate's, or the client's own
error; and the failure as one line."""

from __future__ import annotations

from enum import Enum
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


class SendFailureKind(Enum):
    """Whose failure a failed send is."""

    # Refused for what the record is (RECORD_ERRORS): sent again unchanged, it fails again.
    RECORDS_OWN = "the record's own"
    # A Kafka failure any record would have had (unreachable, timed out, not the leader, not
    # enough replicas, no such topic yet, not authorized): worth retrying.
    BROKERS = "the broker's"
    # kafka-python fails a refused record's batch-mates with a bare KafkaError: neither theirs
    # nor the broker's, and only a send of the record alone tells.
    BATCH_MATES = "a refused batch-mate's"
    # Not a Kafka error at all: the client could not encode the record, or a bug of its own.
    CLIENTS = "the client's"


def send_failure_kind(exc: BaseException) -> SendFailureKind:
    """Whose failure `exc`, raised by a send or by waiting for its acknowledgement, is."""
    if isinstance(exc, RECORD_ERRORS):
        return SendFailureKind.RECORDS_OWN
    if type(exc) is KafkaError:
        return SendFailureKind.BATCH_MATES
    if isinstance(exc, KafkaError):
        return SendFailureKind.BROKERS
    return SendFailureKind.CLIENTS


def error_line(exc: BaseException, row: OutboxEvent | None = None) -> str:
    """One line for `last_error` and the logs; a size refusal says how large the record is."""
    detail = exc.args[0] if exc.args and exc.args[0] is not None else getattr(exc, "message", "")
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if row is not None and isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError)):
        text += f" (the record's value is {len(row.payload.encode()):,} bytes)"
    return " ".join(text.split())[:500]
