"""ConsumerLoop's behaviour without a broker: the loop is given an in-memory consumer
(`tests/support/local_consumer.py`) and a processor whose calls wait for the test's gates, so
each test decides which calls are in flight when it looks."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter, defaultdict

import pytest
from kafka.structs import TopicPartition

from kafka_bridge.consumer import ConsumerLoop, NonRetryableError, RetryableError
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from kafka_bridge.consumer.loop import POLL_GAP, RECORD_INTERVAL
from kafka_bridge.consumer.pacing import Pacer
from kafka_bridge.consumer.state import consumer_states
from kafka_bridge.runner import StopFlag
from tests.support.consumers import LoopThread
from tests.support.helpers import wait_until
from tests.support.local_consumer import LocalConsumer
from tests.support.local_loop import RecordingPublisher, loop_on

P0, P1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
GATE_TIMEOUT = 10.0


class GatedProcessor:
    """Each record's call waits for its gate when the test set one, and raises what `failing`
    holds for it: on every attempt, or on the first `fail_times` ones."""

    def __init__(self) -> None:
        self.gates: dict[tuple[int, int], threading.Event] = {}
        self.failing: dict[tuple[int, int], BaseException] = {}
        self.fail_times: dict[tuple[int, int], int] = {}
        self.started: list[tuple[int, int, float]] = []
        self.completed: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def gate(self, tp: TopicPartition, offset: int) -> threading.Event:
        return self.gates.setdefault((tp.partition, offset), threading.Event())

    def starts(self, tp: TopicPartition, offset: int) -> list[float]:
        with self._lock:
            return [at for partition, o, at in self.started if (partition, o) == (tp.partition, offset)]

    def prepare(self, records):
        return [functools.partial(self._call, record) for record in records]

    def _call(self, record) -> None:
        coordinates = (record.partition, record.offset)
        with self._lock:
            self.started.append((*coordinates, time.monotonic()))
            attempt = sum(1 for partition, offset, _ in self.started if (partition, offset) == coordinates)
        gate = self.gates.get(coordinates)
        if gate is not None:
            assert gate.wait(GATE_TIMEOUT), f"gate of {coordinates} never opened"
        error = self.failing.get(coordinates)
        if error is not None and attempt <= self.fail_times.get(coordinates, attempt):
            raise error

    def complete(self, results):
        with self._lock:
            self.completed.extend((record.partition, record.offset) for record, _, _ in results)
        return [error for _, _, error in results]


def partition_status(loop: ConsumerLoop, tp: TopicPartition) -> dict:
    return next(row for row in loop.status()["partitions"] if (row["topic"], row["partition"]) == tp)


def test_commit_point_does_not_pass_a_record_in_flight_when_later_ones_finished():
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    slow = processor.gate(P0, 1)
    for n in range(4):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor) as loop:
        wait_until(lambda: loop.processed_total == 3, message=lambda: f"{loop.processed_total} done")
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")
        assert partition_status(loop, P0)["done_uncommitted"] == 2, "2 and 3 are done but not committable"
        assert max(offsets[P0] for kind, offsets in consumer.history if kind == "commit") == 1, (
            "a commit passed offset 1 while its call was in flight"
        )

        slow.set()
        wait_until(lambda: consumer.committed.get(P0) == 4, message=lambda: f"committed {consumer.committed}")


def test_partition_is_paused_at_max_uncommitted_and_resumed_once_its_commit_point_moves():
    consumer, processor = LocalConsumer(partitions=[P0], max_poll_records=2), GatedProcessor()
    first = processor.gate(P0, 0)
    for n in range(6):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, max_uncommitted=3) as loop:
        wait_until(lambda: P0 in consumer.paused(), message="the partition was not paused")
        polls = consumer.polls
        wait_until(lambda: consumer.polls >= polls + 5, message="the loop stopped polling")
        assert partition_status(loop, P0)["uncommitted"] == 4, "records were fetched from a paused partition"
        assert partition_status(loop, P0)["paused"]

        first.set()
        wait_until(lambda: consumer.committed.get(P0) == 6, message=lambda: f"committed {consumer.committed}")
        assert P0 not in consumer.paused()
        assert loop.processed_total == 6


def test_rebalance_with_calls_in_flight_waits_for_them_and_commits_them_before_the_partition_goes():
    consumer, processor = LocalConsumer(partitions=[P0, P1]), GatedProcessor()
    in_flight = processor.gate(P0, 1)
    for n in range(2):
        consumer.append(P0, key=f"a{n}".encode())
    consumer.append(P1, key=b"b0")

    with loop_on(consumer, processor) as loop:
        wait_until(lambda: processor.starts(P0, 1), message="the call of P0@1 never started")
        revoked = consumer.rebalance(revoke=[P0])
        wait_until(lambda: consumer.revoking, message="the revocation did not start")
        assert P0 in consumer.assigned() and consumer.committed.get(P0, 0) < 2, (
            "the partition went before its call in flight finished"
        )

        in_flight.set()
        assert revoked.wait(GATE_TIMEOUT), "the revocation did not end"
        commit_at = next(
            i for i, (kind, offsets) in enumerate(consumer.history) if kind == "commit" and offsets.get(P0) == 2
        )
        revoked_at = consumer.history.index(("revoked", {P0}))
        assert commit_at < revoked_at, "P0's offsets were not committed before it was given up"
        assert (0, 1) in processor.completed, "the result of the call in flight was not recorded"
        assert [row["partition"] for row in loop.status()["partitions"]] == [1]

        consumer.append(P1, key=b"b1")
        wait_until(lambda: consumer.committed.get(P1) == 2, message="P1 stopped being consumed")


def test_retryable_error_is_retried_with_backoff_then_dead_lettered_and_the_hook_called(monkeypatch):
    delays = []

    def fixed_backoff(*, attempt: int, base: float, cap: float) -> float:
        delays.append(attempt)
        return 0.05

    monkeypatch.setattr("kafka_bridge.consumer.failures.backoff_delay", fixed_backoff)
    consumer, processor, publisher = LocalConsumer(partitions=[P0]), GatedProcessor(), RecordingPublisher()
    processor.failing[(0, 0)] = RetryableError("platform busy")
    hooked = []
    failing = consumer.append(P0, key=b"order-1")
    consumer.append(P0, key=b"order-1")

    with loop_on(
        consumer,
        processor,
        dead_letter=publisher,
        on_dead_letter=lambda *args: hooked.append(args),
        max_attempts=3,
    ) as loop:
        wait_until(lambda: consumer.committed.get(P0) == 2, message=lambda: f"committed {consumer.committed}")

        starts = processor.starts(P0, 0)
        assert len(starts) == 3, "not retried up to max_attempts"
        assert all(later - earlier >= 0.05 for earlier, later in zip(starts, starts[1:])), "retried before its backoff"
        assert delays == [1, 2]
        assert publisher.published == [(failing, "RetryableError: platform busy (after 3 attempts)", 3)]
        assert hooked == [
            (failing, "RetryableError: platform busy (after 3 attempts)", 3, DeadLetterPosition("orders.DLT", 0, 0))
        ]
        assert processor.starts(P0, 1)[0] > starts[-1], "the record behind it with the same key did not wait"
        assert (loop.dead_lettered_total, loop.processed_total) == (1, 2)


def test_stop_with_calls_in_flight_records_them_commits_and_then_closes():
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    publisher = RecordingPublisher()
    gates = [processor.gate(P0, 0), processor.gate(P0, 1)]
    for n in range(3):
        consumer.append(P0, key=f"k{n}".encode())
    loop = ConsumerLoop(
        topics=["orders"],
        group_id="g",
        stop=StopFlag(),
        processor=processor,
        concurrency=2,
        poll_timeout_ms=20,
        dead_letter=publisher,
        consumer_factory=lambda: consumer,
    )
    running = LoopThread(loop, name="local-loop").start()
    try:
        wait_until(lambda: len(processor.started) == 2, message="the two calls did not start")
        loop.stop.set()
        gates[0].set()
        wait_until(lambda: loop.processed_total == 1, message="a result was not recorded after the stop")
        assert not consumer.closed, "the consumer closed with a call in flight"

        gates[1].set()
        running.thread.join(GATE_TIMEOUT)
    finally:
        for gate in gates:
            gate.set()
        running.stop()
    running.check_stopped()

    assert [(p, o) for p, o, _ in processor.started] == [(0, 0), (0, 1)], "a call started after the stop"
    assert consumer.committed == {P0: 2}
    # Leaving the group revokes the partition once more, after the final commit.
    assert consumer.history[-3:] == [("commit", {P0: 2}), ("revoked", {P0}), ("closed", None)]
    assert publisher.closed


def test_records_of_one_key_run_in_offset_order_and_all_are_committed():
    consumer, processor = LocalConsumer(partitions=[P0, P1]), GatedProcessor()
    for n in range(20):
        consumer.append(P0 if n % 2 else P1, key=f"k{n % 3}".encode())

    with loop_on(consumer, processor):
        wait_until(lambda: consumer.committed == {P0: 10, P1: 10}, message=lambda: f"committed {consumer.committed}")

    for tp in (P0, P1):
        per_key: dict[int, list[int]] = {}
        for partition, offset, _ in processor.started:
            if partition == tp.partition:
                per_key.setdefault(consumer.log[tp][offset].key, []).append(offset)
        assert all(offsets == sorted(offsets) for offsets in per_key.values())


def test_a_transaction_marker_at_the_end_of_a_partition_is_committed_past_once_its_records_are_done():
    # A topic written in transactions (Kafka Connect's exactly-once source): two records and
    # their commit marker, on P0; one record held at the platform, so the marker waits for it.
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    consumer.append(P0, key=b"a")
    consumer.append(P0, key=b"b")
    marker = consumer.append_marker(P0)
    gate = processor.gate(P0, 1)

    with loop_on(consumer, processor):
        wait_until(lambda: (0, 0) in processor.completed, message="the first record was not handled")
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")
        assert consumer.committed[P0] == 1  # not past the record still at the platform
        gate.set()
        wait_until(lambda: consumer.committed.get(P0) == marker + 1, message=lambda: f"committed {consumer.committed}")
        consumer.append(P0, key=b"c")  # the next transaction
        wait_until(lambda: consumer.committed.get(P0) == marker + 2, message=lambda: f"committed {consumer.committed}")

    assert sorted(offset for _, offset, _ in processor.started) == [0, 1, 3]


def test_a_retried_record_holds_back_its_key_and_its_partitions_commit_point_and_nothing_else():
    consumer, processor = LocalConsumer(partitions=[P0, P1]), GatedProcessor()
    processor.failing[(0, 0)] = RetryableError("platform busy")
    consumer.append(P0, key=b"a")
    consumer.append(P0, key=b"a")
    consumer.append(P0, key=b"c")
    consumer.append(P1, key=b"b")
    consumer.append(P1, key=b"b")

    with loop_on(consumer, processor, max_attempts=1000, backoff_base=0.01, backoff_max=0.05) as loop:
        wait_until(lambda: len(processor.starts(P0, 0)) >= 3, message="P0@0 was not retried")
        wait_until(lambda: consumer.committed.get(P1) == 2, message=lambda: f"committed {consumer.committed}")
        wait_until(lambda: (0, 2) in processor.completed, message="another key of P0 waited for the retried one")
        assert not processor.starts(P0, 1), "the record behind the retried one, of its key, did not wait"
        assert consumer.committed.get(P0, 0) == 0, "the commit point passed the record being retried"
        # Between its attempts the key waits for its retry; at each, it is for a moment in flight.
        wait_until(
            lambda: loop.status()["retries_waiting"] == 1,
            message=lambda: f"the key never showed as waiting for its retry: {loop.status()}",
        )

        del processor.failing[(0, 0)]
        wait_until(lambda: consumer.committed.get(P0) == 3, message=lambda: f"committed {consumer.committed}")

    attempts = processor.starts(P0, 0)
    assert processor.starts(P0, 1)[0] > attempts[-1], "the record behind it started before it succeeded"
    assert processor.completed.count((0, 0)) == len(attempts)
    assert (loop.dead_lettered_total, loop.processed_total, loop.assignments) == (0, 5, 1)


def test_a_non_retryable_error_is_dead_lettered_at_its_first_attempt_and_its_key_goes_on():
    consumer, processor, publisher = LocalConsumer(partitions=[P0]), GatedProcessor(), RecordingPublisher()
    processor.failing[(0, 0)] = NonRetryableError("not an event")
    poison = consumer.append(P0, key=b"k")
    consumer.append(P0, key=b"k")

    with loop_on(consumer, processor, dead_letter=publisher, max_attempts=5) as loop:
        wait_until(lambda: consumer.committed.get(P0) == 2, message=lambda: f"committed {consumer.committed}")

    assert len(processor.starts(P0, 0)) == 1, "a non-retryable error was retried"
    assert publisher.published == [(poison, "NonRetryableError: not an event", 1)]
    assert len(processor.starts(P0, 1)) == 1
    assert (loop.dead_lettered_total, loop.processed_total) == (1, 2)


def test_an_unexpected_error_is_retried_past_max_attempts_and_never_dead_lettered():
    consumer, processor, publisher = LocalConsumer(partitions=[P0]), GatedProcessor(), RecordingPublisher()
    processor.failing[(0, 0)] = ConnectionError("the database is down")
    processor.fail_times[(0, 0)] = 6
    consumer.append(P0, key=b"k")

    with loop_on(
        consumer, processor, dead_letter=publisher, max_attempts=2, backoff_base=0.01, backoff_max=0.05
    ) as loop:
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")

    assert len(processor.starts(P0, 0)) == 7
    assert publisher.published == []
    assert (loop.dead_lettered_total, loop.processed_total) == (0, 1)


def test_a_dead_letter_that_cannot_be_sent_is_retried_until_it_is_and_only_its_record_waits():
    consumer, processor, publisher = LocalConsumer(partitions=[P0]), GatedProcessor(), RecordingPublisher()
    publisher.refusing = True
    processor.failing[(0, 0)] = NonRetryableError("not an event")
    poison = consumer.append(P0, key=b"bad")
    consumer.append(P0, key=b"good")

    with loop_on(consumer, processor, dead_letter=publisher, backoff_base=0.01, backoff_max=0.05) as loop:
        wait_until(lambda: publisher.refused >= 3, message="the dead letter's send was not retried")
        wait_until(lambda: loop.processed_total == 1, message="the record of another key waited")
        assert (0, 1) in processor.completed
        assert loop.dead_lettered_total == 0
        assert consumer.committed.get(P0, 0) == 0, "the commit point passed a record not yet on the DLT"

        publisher.refusing = False
        wait_until(lambda: loop.dead_lettered_total == 1, message="the dead letter was never sent")
        wait_until(lambda: consumer.committed.get(P0) == 2, message=lambda: f"committed {consumer.committed}")

    assert publisher.published == [(poison, "NonRetryableError: not an event", 1)]
    assert len(processor.starts(P0, 0)) == 1, "the call was made again instead of only the send"
    assert loop.processed_total == 2


class OverlapWatcher:
    """Notes, per key, the offsets its calls were made for and every moment two calls of one key
    ran at once; every call waits for `release`, so the test sees how many run together."""

    def __init__(self) -> None:
        self.release = threading.Event()
        # What `loop_on` opens when the test leaves it.
        self.gates = {"release": self.release}
        self.active: Counter[bytes] = Counter()
        self.overlaps: list[bytes] = []
        self.order: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def prepare(self, records):
        return [functools.partial(self._call, record) for record in records]

    def _call(self, record) -> None:
        with self._lock:
            self.active[record.key] += 1
            if self.active[record.key] > 1:
                self.overlaps.append(record.key)
            self.order[(record.partition, record.key)].append(record.offset)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            assert self.release.wait(GATE_TIMEOUT), "never released"
        finally:
            with self._lock:
                self.active[record.key] -= 1
                self.running -= 1

    def complete(self, results):
        return [error for _, _, error in results]

    def keys_running(self) -> list[bytes]:
        with self._lock:
            return sorted(key for key, n in self.active.items() if n)


def test_never_two_records_of_one_key_at_once_while_other_keys_fill_the_workers():
    consumer, processor = LocalConsumer(partitions=[P0, P1]), OverlapWatcher()
    # Each key's records one after another: a loop taking records in offset order would run
    # several of one key at once.
    expected: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for n in range(8):
        tp, key = (P0, P1)[n % 2], f"order-{n}".encode()
        for _ in range(5):
            expected[(tp.partition, key)].append(consumer.append(tp, key=key).offset)

    with loop_on(consumer, processor, concurrency=4) as loop:
        wait_until(lambda: processor.running == 4, message=lambda: f"{processor.running} call(s) at once, not 4")
        assert len(processor.keys_running()) == 4, f"calls at once of keys {processor.keys_running()}"
        polls = consumer.polls
        wait_until(lambda: consumer.polls >= polls + 5, message="the loop stopped polling")
        assert processor.running == 4, "more calls than workers"

        processor.release.set()
        wait_until(lambda: consumer.committed == {P0: 20, P1: 20}, message=lambda: f"committed {consumer.committed}")

    assert processor.overlaps == []
    assert dict(processor.order) == dict(expected)
    assert processor.most_running == loop.max_in_flight_seen == 4


@pytest.mark.django_db(transaction=True)
def test_a_running_loop_records_what_it_holds_for_the_status_page_and_forgets_it_when_it_stops():
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    processor.gate(P0, 1)  # 0 and 2 finish, 1 stays in flight
    for n in range(3):
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, report_status=True) as loop:

        def holding_one_call_with_one_record_done_past_it():
            states = consumer_states(group_id="g")
            partitions = states[0]["partitions"] if states else []
            held = (
                states and states[0]["calls_in_flight"] == 1 and partitions and partitions[0]["done_uncommitted"] == 1
            )
            return states if held else None

        [state] = wait_until(
            holding_one_call_with_one_record_done_past_it,
            message=lambda: f"recorded: {consumer_states(group_id='g')}",
        )
        assert state["member"] == loop.member
        assert (state["concurrency"], state["retries_waiting"]) == (4, 0)
        assert state["partitions"] == [
            {
                "topic": "orders",
                "partition": 0,
                "commit_point": 1,
                "uncommitted": 2,
                "done_uncommitted": 1,
                "paused": False,
            }
        ]

    assert consumer_states(group_id="g") == [], "the stopped loop's status was left behind"


def _thread_cpu_seconds(name: str) -> float:
    thread = next(thread for thread in threading.enumerate() if thread.name == name)
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def test_with_every_slot_busy_and_records_on_hand_the_loop_waits_for_a_result_without_polling_or_spinning():
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    for n in range(100):
        processor.gate(P0, n)
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, concurrency=4, poll_timeout_ms=1000, pacer=Pacer(rate=None)) as loop:
        wait_until(lambda: loop.status()["calls_in_flight"] == 4 and loop.status()["calls_prepared"] > 0)
        polls, cpu = consumer.polls, _thread_cpu_seconds("local-loop")
        time.sleep(1.0)  # the window observed: what the loop does while nothing ends
        polls, cpu = consumer.polls - polls, _thread_cpu_seconds("local-loop") - cpu

        # A poll at most every POLL_GAP (0.05 s) for the group's sake, not one every few ms; and
        # the thread sleeps in between (a loop spinning on a ready record would use the second).
        assert polls <= 1.0 / POLL_GAP + 5
        assert cpu < 0.2, f"the loop thread used {cpu:.3f} s of CPU in 1 s with nothing to do"

        processor.gate(P0, 0).set()
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")


def test_a_result_is_recorded_within_the_record_interval_while_other_calls_stay_in_flight():
    consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
    for n in range(8):
        processor.gate(P0, n)
        consumer.append(P0, key=f"k{n}".encode())

    with loop_on(consumer, processor, concurrency=8) as loop:
        assert loop.record_batch == 16
        wait_until(lambda: loop.status()["calls_in_flight"] == 8)
        processor.gate(P0, 0).set()
        # One result, short of the batch of 16, with 7 calls still in flight: recorded all the same.
        wait_until(lambda: processor.completed == [(0, 0)], message=lambda: f"completed {processor.completed}")
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")
        assert loop.status()["calls_in_flight"] == 7


class TimedProcessor(GatedProcessor):
    """Notes when each call ended and when each `complete` (a record transaction) ran."""

    def __init__(self) -> None:
        super().__init__()
        self.ended: dict[tuple[int, int], float] = {}
        self.batches: list[tuple[float, list[tuple[int, int]]]] = []

    def _call(self, record) -> None:
        super()._call(record)
        self.ended[(record.partition, record.offset)] = time.monotonic()

    def complete(self, results):
        self.batches.append((time.monotonic(), [(record.partition, record.offset) for record, _, _ in results]))
        return super().complete(results)


def test_a_lone_result_waits_for_the_record_interval_instead_of_a_transaction_of_its_own():
    consumer, processor = LocalConsumer(partitions=[P0]), TimedProcessor()
    consumer.append(P0, key=b"k0")

    with loop_on(consumer, processor, concurrency=8):
        wait_until(lambda: processor.batches, message="never recorded")
        wait_until(lambda: consumer.committed.get(P0) == 1, message=lambda: f"committed {consumer.committed}")

    # Nothing else was in flight; the loop still held the result for its batch's interval (a
    # transaction per export at a trickle keeps the loop thread from polling and preparing).
    (recorded_at, batch), ended_at = processor.batches[0], processor.ended[(0, 0)]
    assert batch == [(0, 0)]
    assert recorded_at - ended_at >= RECORD_INTERVAL * 0.9, recorded_at - ended_at


def test_records_dropped_at_a_revocation_end_their_spans_as_let_go_and_the_finished_one_as_done():
    from opentelemetry.trace import SpanKind

    from tests.support.tracing import SpanRecorder

    spans = SpanRecorder().start()
    try:
        consumer, processor = LocalConsumer(partitions=[P0]), GatedProcessor()
        in_flight = processor.gate(P0, 0)
        consumer.append(P0, key=b"same")  # P0@0: in flight when the revocation comes
        consumer.append(P0, key=b"same")  # P0@1: waits behind it, its key's next record

        with loop_on(consumer, processor):
            wait_until(lambda: processor.starts(P0, 0), message="the call of P0@0 never started")
            revoked = consumer.rebalance(revoke=[P0])
            wait_until(lambda: consumer.revoking, message="the revocation did not start")
            in_flight.set()
            assert revoked.wait(GATE_TIMEOUT), "the revocation did not end"
            wait_until(lambda: len(spans.of_kind(SpanKind.CONSUMER)) == 2, message=lambda: spans.finished())
    finally:
        spans.stop()

    by_offset = {span.attributes["messaging.kafka.offset"]: span for span in spans.of_kind(SpanKind.CONSUMER)}
    assert sorted(by_offset) == [0, 1]
    assert [event.name for event in by_offset[0].events] == [], "P0@0 was exported before the partition went"
    assert [event.name for event in by_offset[1].events] == ["partition_revoked"]
    assert processor.completed == [(0, 0)], "P0@1 was never called: its next owner reads it"
