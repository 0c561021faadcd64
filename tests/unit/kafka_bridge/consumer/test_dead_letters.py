"""What the dead-letter publisher does with a send's failure, without a broker: the broker's
failures are raised for the loop to retry; a record refused for its own sake is replaced by a
bounded dead letter that names it."""

from __future__ import annotations

import hashlib

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError

from kafka_bridge.consumer.dead_letters import (
    CUT_KEY_MAX_BYTES,
    DeadLetterPosition,
    DeadLetterPublisher,
    dead_letter_headers,
)


class ScriptedCopier:
    """Answers each send with the next of `outcomes`: an exception to raise, or an offset."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent: list[dict] = []

    def send(self, topic, *, partition, key, value, headers):
        self.sent.append({"topic": topic, "partition": partition, "key": key, "value": value, "headers": headers})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return DeadLetterPosition(topic, partition, outcome)

    def close(self):
        pass


def record(*, key=b"42", value=b"x" * 100, headers=(("event_id", b"e-1"),)) -> ConsumerRecord:
    return ConsumerRecord(
        topic="events",
        partition=2,
        leader_epoch=0,
        offset=17,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        headers=list(headers),
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        serialized_header_size=0,
    )


def test_a_dead_letter_the_broker_takes_is_the_record_byte_for_byte():
    copier = ScriptedCopier(5)
    position = DeadLetterPublisher(topic="events.DLT", copier=copier).publish(record(), error="boom", attempts=1)
    assert position == DeadLetterPosition("events.DLT", 2, 5, "")
    [sent] = copier.sent
    assert (sent["key"], sent["value"]) == (b"42", b"x" * 100)
    assert sent["headers"][0] == ("event_id", b"e-1")


def test_a_dead_letter_names_its_original_position_its_attempts_and_its_error_on_one_line():
    copier = ScriptedCopier(5)
    DeadLetterPublisher(topic="events.DLT", copier=copier).publish(
        record(), error="RetryableError: the platform said:\n  busy (after 3 attempts)", attempts=3
    )
    [sent] = copier.sent
    assert (sent["topic"], sent["partition"]) == ("events.DLT", 2), "not on the original's partition of the DLT"
    assert sent["headers"] == [
        ("event_id", b"e-1"),
        ("dlt.original.topic", b"events"),
        ("dlt.original.partition", b"2"),
        ("dlt.original.offset", b"17"),
        ("dlt.error", b"RetryableError: the platform said: busy (after 3 attempts)"),
        ("dlt.attempts", b"3"),
    ]


@pytest.mark.parametrize("failure", [KafkaTimeoutError("no answer"), NotLeaderForPartitionError("moved")])
def test_the_brokers_failures_are_raised_for_the_loop_to_retry(failure):
    copier = ScriptedCopier(failure)
    with pytest.raises(type(failure)):
        DeadLetterPublisher(topic="events.DLT", copier=copier).publish(record(), error="boom", attempts=1)
    assert len(copier.sent) == 1


@pytest.mark.parametrize("failure", [MessageSizeTooLargeError("too large"), TypeError("cannot encode")])
def test_a_record_refused_for_its_own_sake_is_replaced_by_a_bounded_dead_letter_naming_it(failure):
    value = b"y" * 10_000
    copier = ScriptedCopier(failure, 9)
    position = DeadLetterPublisher(topic="events.DLT", copier=copier).publish(
        record(value=value), error="PoisonRecord: too big", attempts=3
    )
    assert (position.offset, type(failure).__name__ in position.cut) == (9, True)
    bounded = copier.sent[1]
    headers = dict(bounded["headers"])
    assert (bounded["key"], bounded["value"], bounded["partition"]) == (b"42", None, 2)
    assert headers["dlt.original.topic"] == b"events"
    assert (headers["dlt.original.partition"], headers["dlt.original.offset"]) == (b"2", b"17")
    assert (headers["dlt.original.size"], headers["dlt.attempts"]) == (b"10000", b"3")
    assert headers["dlt.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["dlt.error"] == b"PoisonRecord: too big"
    # The original's own headers may be what is too large: the bounded letter carries none.
    assert "event_id" not in headers


def test_a_bounded_dead_letter_leaves_out_a_key_too_large_to_keep():
    copier = ScriptedCopier(MessageSizeTooLargeError("too large"), 1)
    DeadLetterPublisher(topic="events.DLT", copier=copier).publish(
        record(key=b"k" * (CUT_KEY_MAX_BYTES + 1)), error="boom", attempts=1
    )
    assert copier.sent[1]["key"] is None


def test_a_bounded_dead_letter_the_broker_cannot_take_either_is_raised():
    copier = ScriptedCopier(MessageSizeTooLargeError("too large"), KafkaTimeoutError("no answer"))
    with pytest.raises(KafkaTimeoutError):
        DeadLetterPublisher(topic="events.DLT", copier=copier).publish(record(), error="boom", attempts=1)


def test_a_dead_letter_given_the_context_of_its_span_carries_that_instead_of_the_records():
    original = record(headers=(("event_id", b"e-1"), ("traceparent", b"00-aa-bb-01"), ("tracestate", b"a=1")))
    given = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]

    headers = dead_letter_headers(original, error="boom", attempts=1, trace_headers=given)

    assert [(n, v) for n, v in headers if not n.startswith("dlt.")] == [("event_id", b"e-1"), *given]


def test_a_dead_letter_without_a_span_keeps_the_records_trace_headers_byte_for_byte():
    original = record(headers=(("traceparent", b"not even valid"), ("tracestate", b"a=1")))

    headers = dead_letter_headers(original, error="boom", attempts=1)

    assert headers[:2] == [("traceparent", b"not even valid"), ("tracestate", b"a=1")]
