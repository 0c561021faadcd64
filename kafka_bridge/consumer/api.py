"""What the users of `kafka_bridge.consumer.ConsumerLoop` give it and see of it: the errors a
record's work raises to say what becomes of the record, the processor protocol, the hooks, the
consumer's configuration and the retries' backoff. `kafka_bridge.consumer` re-exports them all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from django.conf import settings
from kafka.consumer.fetcher import ConsumerRecord

from kafka_bridge.connection import connection_config
from kafka_bridge.consumer.dead_letters import DeadLetterPosition

# The record's call, made outside the loop thread: a coroutine function, awaited on the loop's
# event loop thread (hundreds in flight on one thread), or a blocking function, made on a worker
# thread of its own.
Call = Callable[[], Any]
# Called once a record is given up on: (record, error, attempts, where its dead letter went, or
# None without a dead-letter topic).
DeadLetterHook = Callable[[ConsumerRecord, str, int, DeadLetterPosition | None], None]
LogFields = Callable[[ConsumerRecord], dict]


class RetryableError(Exception):
    """The record may succeed later: retry it with backoff, then dead-letter it. `retry_after`
    (seconds) is the earliest moment the called system said it takes calls again."""

    def __init__(self, *args: object, retry_after: float | None = None):
        super().__init__(*args)
        self.retry_after = retry_after


class NonRetryableError(Exception):
    """No retry can help this record: dead-letter it at once."""


class RecordProcessor(Protocol):
    """What the loop does with records, in two bulk steps on the loop thread around the calls
    made outside it. A processor may also have `async def aclose(self)`, awaited on the event
    loop before it stops (to close the connections its calls opened there)."""

    def prepare(self, records: list[ConsumerRecord]) -> list[Call | BaseException | None]:
        """Per record: a call to make (a `Call`), an error to act on (retry or dead-letter), or
        None when it is done with and needs no call."""

    def complete(self, results: list[tuple[ConsumerRecord, Any, BaseException | None]]) -> list[BaseException | None]:
        """Record the outcome of finished calls, given (record, what the call returned, what it
        raised). Per record: None when it is done with, or the error to act on."""


def consumer_config(*, group_id: str) -> dict:
    """The connection, KAFKA_CONSUMER_OPTIONS (the project's defaults with the deployer's over
    them), then what the loop's commits rest on."""
    return {
        **connection_config(),
        **settings.KAFKA_CONSUMER_OPTIONS,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
    }


def backoff_delay(*, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))],
    so that consumers retrying the same outage do not hit the platform in lockstep."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
