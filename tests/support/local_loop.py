"""A `ConsumerLoop` on the in-memory consumer, running in a thread for the length of a test, and
a dead-letter publisher that keeps what it was given: what the loop's unit tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kafka.errors import KafkaTimeoutError

from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from kafka_bridge.runner import StopFlag
from tests.support.consumers import LoopThread
from tests.support.local_consumer import LocalConsumer


class RecordingPublisher:
    """A dead-letter publisher that keeps what it was given; while `refusing`, each send fails
    the way one the dead-letter topic never acknowledged does."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, str, int]] = []
        self.refusing = False
        self.refused = 0
        self.closed = False

    def publish(self, record, *, error: str, attempts: int, trace_headers=()) -> DeadLetterPosition:
        if self.refusing:
            self.refused += 1
            raise KafkaTimeoutError("the dead-letter topic did not acknowledge the send")
        self.published.append((record, error, attempts))
        return DeadLetterPosition("orders.DLT", 0, len(self.published) - 1)

    def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def loop_on(consumer: LocalConsumer, processor: Any, **options: Any) -> Iterator[ConsumerLoop]:
    """A loop consuming from `consumer`, running in a thread; stopped (and checked) on leaving."""
    options = {"concurrency": 4, "poll_timeout_ms": 20, **options}
    loop = ConsumerLoop(
        topics=["orders"],
        group_id="g",
        stop=StopFlag(),
        processor=processor,
        consumer_factory=lambda: consumer,
        **options,
    )
    running = LoopThread(loop, name="local-loop").start()
    try:
        yield loop
    finally:
        # Calls still waiting on a gate would hold the stop for the drain timeout.
        for gate in processor.gates.values():
            gate.set()
        running.stop()
    running.check_stopped()
