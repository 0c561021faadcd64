"""The fast path's hand-off: a request only queues its rows; a thread of the publisher's own
hands them to the producer, at once while the process is quiet and in bursts while it is busy,
and never hands over a row that waited past the bound (the relay's by then)."""

from __future__ import annotations

import threading
import time

import pytest

from kafka_bridge.outbox.handoff import BUSY_SPACING, RATE_WINDOW, SendHandoff
from tests.support.helpers import wait_until

pytestmark = pytest.mark.database_independent

LINGER = 0.005


class Recorder:
    """A hand_over that records each call's rows and when it was made."""

    def __init__(self, block: threading.Event | None = None):
        self.calls: list[tuple[float, list]] = []
        self.block = block
        self.threads: set[str] = set()
        # Set once the thread is inside a hand_over (waiting on `block`, if given).
        self.entered = threading.Event()

    def __call__(self, rows) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        self.calls.append((time.monotonic(), list(rows)))

    @property
    def rows(self) -> list:
        return [row for _, batch in self.calls for row in batch]

    def handed_over_within(self, count: int, timeout: float) -> bool:
        return bool(wait_until(lambda: len(self.rows) >= count, timeout=timeout, interval=0.001))


@pytest.fixture
def handoffs():
    made: list[SendHandoff] = []

    def make(recorder, **options) -> SendHandoff:
        handoff = SendHandoff(hand_over=recorder, **{"linger": LINGER, "timeout": 1.0, **options})
        made.append(handoff)
        return handoff

    yield make
    for handoff in made:
        handoff.close(timeout=5)


def test_putting_returns_at_once_while_the_hand_over_is_stuck(handoffs):
    release = threading.Event()
    recorder = Recorder(block=release)
    handoff = handoffs(recorder)
    handoff.put(["first"])
    wait_until(recorder.entered.is_set, interval=0.001)  # the thread is inside hand_over, waiting

    started = time.monotonic()
    for n in range(100):
        handoff.put([f"row-{n}"])
    assert time.monotonic() - started < 0.05
    assert not handoff.flush(time.monotonic() + 0.05), "flush waits for the rows still queued"

    release.set()
    assert handoff.flush(time.monotonic() + 5)
    assert recorder.rows == ["first"] + [f"row-{n}" for n in range(100)]
    assert recorder.threads == {"outbox-sender"}


def test_a_quiet_process_hands_each_row_over_at_once(handoffs):
    linger = 0.1  # long enough that gathering (BUSY_SPACING lingers) could not pass for "at once"
    recorder = Recorder()
    handoff = handoffs(recorder, linger=linger)
    for n in range(3):
        handoff.put([n])
        assert recorder.handed_over_within(n + 1, timeout=linger)
        time.sleep(linger * 2)  # the load: fewer than one row per linger
    assert [rows for _, rows in recorder.calls] == [[0], [1], [2]]


def test_a_busy_process_hands_rows_over_in_bursts_and_no_row_waits_past_the_spacing(handoffs):
    recorder = Recorder()
    handoff = handoffs(recorder)
    queued_at: dict[int, float] = {}
    deadline = time.monotonic() + LINGER * RATE_WINDOW * 8
    n = 0
    while time.monotonic() < deadline:
        # The load: 10 rows every linger (2,000 a second), in tens so that it stays busier than a
        # row per linger even when a loaded machine stretches the pause tenfold.
        for _ in range(10):
            queued_at[n] = time.monotonic()
            handoff.put([n])
            n += 1
        time.sleep(LINGER)
    assert handoff.flush(time.monotonic() + 5)

    assert recorder.rows == list(range(n))
    # Once the rate is measured, the hand-overs are bursts, BUSY_SPACING lingers apart. Medians,
    # not extremes: on a loaded machine a thread is scheduled late now and then, which stretches
    # one gap (and the waits inside it) and shortens the next as the recorder sees it; the middle
    # of 15-odd bursts does not move.
    later = [(at, rows) for at, rows in recorder.calls if queued_at[rows[0]] > queued_at[0] + LINGER * RATE_WINDOW * 2]
    spacing = LINGER * BUSY_SPACING
    sizes = sorted(len(rows) for _, rows in later[:-1])
    assert sizes and sizes[len(sizes) // 2] > 2, sizes
    gaps = sorted(b[0] - a[0] for a, b in zip(later, later[1:-1]))
    assert gaps and spacing * 0.9 <= gaps[len(gaps) // 2] < spacing * 1.5, gaps
    # A row arrives somewhere inside a gap: the typical one waits about half a spacing.
    waits = sorted(at - queued_at[row] for at, rows in later for row in rows)
    assert waits[len(waits) // 2] < spacing, waits[len(waits) // 2]


def test_rows_queued_past_the_bound_are_left_to_the_relay(handoffs):
    release = threading.Event()
    recorder = Recorder(block=release)
    expired: list = []
    handoff = handoffs(recorder, timeout=0.05, expired=expired.extend)
    handoff.put(["first"])
    wait_until(recorder.entered.is_set, interval=0.001)
    handoff.put(["late"])  # queued behind a hand-over that takes longer than the bound
    time.sleep(0.1)  # the row's age passes the 0.05 s bound: nothing to poll but the clock
    release.set()
    assert handoff.flush(time.monotonic() + 5)
    handoff.put(["fresh"])
    assert handoff.flush(time.monotonic() + 5)

    assert recorder.rows == ["first", "fresh"]
    assert expired == ["late"]


def test_closing_hands_over_what_is_queued(handoffs):
    release = threading.Event()
    recorder = Recorder(block=release)
    handoff = handoffs(recorder)
    handoff.put(["first"])
    handoff.put(["second", "third"])
    release.set()
    handoff.close(timeout=5)

    assert recorder.rows == ["first", "second", "third"]


def test_while_there_is_no_producer_rows_are_handed_over_one_at_a_time_and_at_once(handoffs):
    linger = 0.1
    release = threading.Event()
    recorder = Recorder(block=release)
    handoff = handoffs(recorder, linger=linger, ready=lambda: False)
    handoff._busy = True  # even a busy process does not gather for a producer yet to be built
    handoff.put(["first"])
    handoff.put(["second", "third"])  # queued while the first one builds the producer
    release.set()
    assert recorder.handed_over_within(3, timeout=linger * 2)
    assert [rows for _, rows in recorder.calls] == [["first"], ["second"], ["third"]]
