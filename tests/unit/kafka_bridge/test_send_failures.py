"""Whose failure a failed send is: one classification for the relay, the fast path and the
dead-letter copier (`kafka_bridge.send_failures.send_failure_kind`)."""

from __future__ import annotations

import pytest
from kafka.errors import (
    InvalidRecordError,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)

from kafka_bridge.consumer.dead_letters import refused_for_its_own_sake
from kafka_bridge.send_failures import SendFailureKind, send_failure_kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MessageSizeTooLargeError("too large"), SendFailureKind.RECORDS_OWN),
        (RecordListTooLargeError(), SendFailureKind.RECORDS_OWN),
        (InvalidRecordError(), SendFailureKind.RECORDS_OWN),
        (InvalidTopicError("bad name"), SendFailureKind.RECORDS_OWN),
        (KafkaError("a batch-mate was refused"), SendFailureKind.BATCH_MATES),
        (KafkaTimeoutError(), SendFailureKind.BROKERS),
        (NotEnoughReplicasError(), SendFailureKind.BROKERS),
        (TopicAuthorizationFailedError(), SendFailureKind.BROKERS),
        (TypeError("cannot encode"), SendFailureKind.CLIENTS),
    ],
)
def test_each_failure_is_the_records_the_brokers_a_batch_mates_or_the_clients(exc, kind):
    assert send_failure_kind(exc) is kind


@pytest.mark.parametrize(
    ("exc", "own"),
    [
        (MessageSizeTooLargeError(), True),
        (TypeError("cannot encode"), True),
        (KafkaError("a batch-mate was refused"), False),
        (KafkaTimeoutError(), False),
    ],
)
def test_a_copy_is_refused_for_its_own_sake_for_its_own_or_the_clients_failure(exc, own):
    assert refused_for_its_own_sake(exc) is own
