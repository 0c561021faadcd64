"""Calls that are coroutines: the event loop thread that awaits them (`EventLoopThread`), and the
consumer loop handing them to it, hundreds in flight on one thread, beside blocking calls on
worker threads."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest
from kafka.structs import TopicPartition

from kafka_bridge.consumer import NonRetryableError, RetryableError
from kafka_bridge.consumer.event_loop import EventLoopThread, NotStarted
from kafka_bridge.consumer.pacing import Pacer
from tests.support.helpers import wait_until
from tests.support.local_consumer import LocalConsumer
from tests.support.local_loop import RecordingPublisher, loop_on

P0, P1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


@pytest.fixture
def event_loop_thread():
    running = EventLoopThread(name="test-loop")
    running.start()
    yield running
    running.stop()


async def _wait_for(gate: threading.Event) -> None:
    # The test's gate is a thread's event; the call waits for it without blocking the loop.
    while not gate.is_set():
        await asyncio.sleep(0.002)


def test_calls_that_end_together_are_handed_back_together_with_what_each_returned_or_raised(event_loop_thread):
    gate, handed_back, lock = threading.Event(), [], threading.Lock()

    async def call(n: int) -> int:
        await _wait_for(gate)
        if n % 10 == 0:
            raise ValueError(f"call {n} failed")
        return n * 2

    def on_done(outcomes):
        assert threading.current_thread().name == "test-loop"
        with lock:
            handed_back.append(list(outcomes))

    event_loop_thread.submit([(n, functools.partial(call, n)) for n in range(100)], on_done)
    gate.set()
    wait_until(lambda: sum(len(batch) for batch in handed_back) == 100, timeout=10)

    outcomes = {token: (value, error) for batch in handed_back for token, value, error in batch}
    assert {n: value for n, (value, error) in outcomes.items() if error is None} == {
        n: n * 2 for n in range(100) if n % 10
    }
    assert {n: str(error) for n, (_, error) in outcomes.items() if error is not None} == {
        n: f"call {n} failed" for n in range(0, 100, 10)
    }
    # The calls waited on one gate and ended in few turns of the loop: far fewer hand-backs than calls.
    assert len(handed_back) < 20


def test_stop_cancels_the_calls_still_running_and_awaits_the_closing_step_on_the_loop(event_loop_thread):
    handed_back, closed_on = [], []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def close() -> None:
        closed_on.append(threading.current_thread().name)

    event_loop_thread.submit([("stuck", forever)], handed_back.extend)
    wait_until(lambda: len(event_loop_thread._tasks) == 1)
    event_loop_thread.stop(before=close)

    assert closed_on == ["test-loop"]
    assert [(token, type(error)) for token, _, error in handed_back] == [("stuck", asyncio.CancelledError)]
    assert not event_loop_thread.alive()


def test_run_waits_for_one_call_from_another_thread(event_loop_thread):
    async def answer() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert event_loop_thread.run(answer, timeout=5) == "test-loop"


class AsyncGatedProcessor:
    """Each record's call is a coroutine waiting for the one gate; `blocking` offsets get a
    blocking call instead. Notes the thread each call ran on, and `aclose`'s."""

    def __init__(self, *, blocking: set[int] = frozenset(), failing: set[int] = frozenset()) -> None:
        self.gates: dict = {}
        self.gate = self.gates.setdefault("all", threading.Event())
        self.blocking, self.failing = blocking, failing
        self.threads: dict[tuple[int, int], str] = {}
        self.in_flight = self.max_in_flight = 0
        self.completed: list[tuple[int, int]] = []
        self.closed_on: list[str] = []
        self._lock = threading.Lock()

    def prepare(self, records):
        return [
            functools.partial(self._blocking if record.offset in self.blocking else self._call, record)
            for record in records
        ]

    def _started(self, record) -> None:
        with self._lock:
            self.threads[(record.partition, record.offset)] = threading.current_thread().name
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _ended(self, record) -> None:
        with self._lock:
            self.in_flight -= 1
        if record.offset in self.failing:
            raise NonRetryableError(f"refused {record.offset}")

    async def _call(self, record) -> str:
        self._started(record)
        await _wait_for(self.gate)
        self._ended(record)
        return "sent"

    def _blocking(self, record) -> str:
        self._started(record)
        assert self.gate.wait(10)
        self._ended(record)
        return "sent"

    def complete(self, results):
        with self._lock:
            self.completed.extend((record.partition, record.offset) for record, _, _ in results)
        assert all(value == "sent" for _, value, error in results if error is None)
        return [error for _, _, error in results]

    async def aclose(self) -> None:
        self.closed_on.append(threading.current_thread().name)


def test_hundreds_of_coroutine_calls_are_in_flight_together_on_one_thread_and_all_committed():
    consumer, processor = LocalConsumer(partitions=[P0, P1]), AsyncGatedProcessor()
    for n in range(300):
        consumer.append(P0 if n % 2 else P1, key=f"k{n}".encode())
    threads_before = threading.active_count()

    with loop_on(consumer, processor, concurrency=300, max_uncommitted=1000) as loop:
        wait_until(lambda: processor.in_flight == 300, timeout=10)
        # Every call waits at once, and no thread was started per call: the loop thread, its event
        # loop thread and the dead-letter thread are all there is.
        assert threading.active_count() - threads_before <= 3
        assert set(processor.threads.values()) == {"consumer-loop"}
        processor.gate.set()
        wait_until(lambda: consumer.committed.get(P0) == 150 and consumer.committed.get(P1) == 150, timeout=10)
        assert loop.max_in_flight_seen == 300
    assert sorted(processor.completed) == sorted((tp.partition, o) for tp in (P0, P1) for o in range(150))
    assert processor.closed_on == ["consumer-loop"], "aclose is awaited on the event loop before it stops"


def test_blocking_and_coroutine_calls_run_side_by_side_each_on_its_own_kind_of_thread():
    consumer = LocalConsumer(partitions=[P0])
    processor = AsyncGatedProcessor(blocking={1, 3}, failing={2})
    publisher = RecordingPublisher()
    for n in range(6):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, concurrency=6, dead_letter=publisher):
        wait_until(lambda: processor.in_flight == 6, timeout=10)
        processor.gate.set()
        wait_until(lambda: consumer.committed.get(P0) == 6, timeout=10)

    kinds = {
        offset: "event loop" if name == "consumer-loop" else "worker" if name.startswith("consumer-call") else name
        for (_, offset), name in processor.threads.items()
    }
    assert kinds == {0: "event loop", 1: "worker", 2: "event loop", 3: "worker", 4: "event loop", 5: "event loop"}
    assert [(record.offset, error) for record, error, _ in publisher.published] == [
        (2, "NonRetryableError: refused 2")
    ], "a coroutine's NonRetryableError is dead-lettered like a blocking call's"


def test_a_stop_with_coroutine_calls_that_never_end_cancels_them_after_the_drain_timeout():
    consumer, processor = LocalConsumer(partitions=[P0]), AsyncGatedProcessor()
    consumer.append(P0, key=b"k")
    started = time.monotonic()

    with loop_on(consumer, processor, concurrency=2, drain_timeout=0.3) as loop:
        wait_until(lambda: processor.in_flight == 1, timeout=10)
        processor.gates.clear()  # loop_on's exit must not open it: the call never ends
        loop.stop.set()
        wait_until(lambda: processor.closed_on, timeout=10)

    assert time.monotonic() - started < 5
    assert processor.completed == [], "a call that never ended is not recorded as done"
    assert consumer.committed.get(P0) in (None, 0), "nor committed: the next owner reads it again"


def test_calls_beyond_the_limit_wait_and_start_as_running_ones_end_without_another_hand_in():
    running = EventLoopThread(name="limited-loop", limit=3)
    running.start()
    try:
        handed_back, gate = [], threading.Event()

        async def call(n: int) -> int:
            await _wait_for(gate)
            return n

        running.submit([(n, functools.partial(call, n)) for n in range(10)], handed_back.extend)
        wait_until(lambda: running.running == 3)
        assert running.max_running_seen == 3, "no more than the limit at once"
        gate.set()
        wait_until(lambda: len(handed_back) == 10, timeout=10)
        assert sorted(value for _, value, _ in handed_back) == list(range(10))
        assert running.max_running_seen == 3
    finally:
        running.stop()


def test_a_failure_hands_the_waiting_calls_back_unstarted_until_waiting_is_accepted_again():
    running = EventLoopThread(name="limited-loop", limit=1, stops_waiting=lambda error: isinstance(error, ValueError))
    running.start()
    try:
        handed_back, started, gate = [], [], threading.Event()

        async def call(n: int) -> int:
            started.append(n)
            await _wait_for(gate)
            if n == 0:
                raise ValueError("refused")
            return n

        running.submit([(n, functools.partial(call, n)) for n in range(3)], handed_back.extend)
        wait_until(lambda: started == [0])
        gate.set()
        wait_until(lambda: len(handed_back) == 3, timeout=10)
        assert started == [0], "the waiting calls never started"
        assert sorted((token, type(error).__name__) for token, _, error in handed_back) == [
            (0, "ValueError"),
            (1, "NotStarted"),
            (2, "NotStarted"),
        ]
        # A call that finds a free slot still starts; one that would wait comes back at once.
        gate.clear()
        running.submit([(n, functools.partial(call, n)) for n in (3, 4)], handed_back.extend)
        wait_until(lambda: len(handed_back) == 4, timeout=10)
        assert started == [0, 3] and isinstance(handed_back[-1][2], NotStarted) and handed_back[-1][0] == 4

        running.accept_waiting()
        running.submit([(5, functools.partial(call, 5))], handed_back.extend)
        gate.set()
        wait_until(lambda: len(handed_back) == 6, timeout=10)
        assert started == [0, 3, 5], "accepted again, the call waited for its slot and started"
    finally:
        running.stop()


class FailingFirstProcessor(AsyncGatedProcessor):
    """Record 0's call fails at once, asking to be left alone for `retry_after` seconds; the
    others wait for the gate."""

    def __init__(self, *, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.started_at: dict[int, float] = {}

    async def _call(self, record) -> str:
        self.started_at.setdefault(record.offset, time.monotonic())
        if record.offset == 0 and not self.started_at.get("failed"):
            self.started_at["failed"] = time.monotonic()
            raise RetryableError("HTTP 429", retry_after=self.retry_after)
        return await super()._call(record)


def test_calls_handed_ahead_do_not_start_while_a_failure_asks_the_platform_to_be_left_alone():
    consumer, processor = LocalConsumer(partitions=[P0]), FailingFirstProcessor(retry_after=0.6)
    for n in range(10):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, concurrency=2, pacer=Pacer(rate=None), max_attempts=5) as loop:
        wait_until(lambda: "failed" in processor.started_at and processor.in_flight >= 1, timeout=10)
        failed_at = processor.started_at["failed"]
        # Offsets 0 and 1 started at once; 2 and 3 were handed ahead. After the 429, no call may
        # start until its Retry-After has passed, whatever was waiting on the event loop.
        processor.gate.set()
        wait_until(lambda: consumer.committed.get(P0) == 10, timeout=10)
        early = {
            offset: round(at - failed_at, 3)
            for offset, at in processor.started_at.items()
            if offset != "failed" and offset not in (0, 1) and at - failed_at < 0.6 - 0.05
        }
        assert early == {}, f"calls started during the Retry-After: {early}"
        assert loop.max_in_flight_seen <= 2


def test_a_stop_starts_none_of_the_calls_handed_ahead_and_records_those_in_flight():
    consumer, processor = LocalConsumer(partitions=[P0]), AsyncGatedProcessor()
    for n in range(6):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, concurrency=2, pacer=Pacer(rate=None)) as loop:
        wait_until(lambda: processor.in_flight == 2 and loop.status()["calls_waiting_for_a_slot"] == 2)
        loop.stop.set()
        # The two handed ahead come back unstarted while the two in flight still wait for the gate.
        wait_until(lambda: loop.status()["calls_waiting_for_a_slot"] == 0)
        processor.gate.set()

    assert sorted(offset for _, offset in processor.threads) == [0, 1], "a call handed ahead started after the stop"
    assert sorted(processor.completed) == [(0, 0), (0, 1)]
    assert consumer.committed.get(P0) == 2
