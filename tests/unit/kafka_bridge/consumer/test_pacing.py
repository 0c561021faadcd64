"""Pacer: the rate limit, the pause the platform asks for, and the circuit breaker, on a clock
the test moves."""

from __future__ import annotations

import bisect

import pytest

from kafka_bridge.consumer.pacing import CLOSED, HALF_OPEN, OPEN, Pacer


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, **options) -> Pacer:
    return Pacer(
        clock=clock, **{"breaker_failures": 3, "breaker_cooldown": 5.0, "breaker_cooldown_max": 12.0, **options}
    )


def open_breaker(pacer: Pacer) -> None:
    for _ in range(pacer.breaker_failures):
        pacer.started()
        pacer.failed()
    assert pacer.state == OPEN


def start_probe(pacer: Pacer, clock: FakeClock) -> None:
    clock.advance(pacer.wait())
    assert pacer.wait() == 0
    assert pacer.started() is True, "the first call after the cooldown is the probe"
    assert pacer.state == HALF_OPEN


# --- rate limit -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, 7.5, 50.0, 400.0])
def test_calls_started_whenever_allowed_keep_to_the_rate(clock, rate):
    pacer = Pacer(rate=rate, breaker_failures=0, clock=clock)
    burst = max(1.0, rate / 10)
    started_at: list[float] = []
    start = clock.now

    while clock.now - start < 10.0:
        while pacer.wait() == 0:
            pacer.started()
            started_at.append(clock.now - start)
        clock.advance(0.001)

    assert rate * 10 - 1 <= len(started_at) <= rate * 10 + burst
    # Not only on average: no second anywhere in the run holds more than a second's calls
    # plus the burst.
    for first, moment in enumerate(started_at):
        last = bisect.bisect_right(started_at, moment + 1.0) - 1
        assert last - first + 1 <= rate + burst + 1e-9, f"{last - first + 1} calls in the second from {moment:.3f} s"


def test_wait_says_how_long_until_the_next_call_may_start(clock):
    pacer = Pacer(rate=4.0, breaker_failures=0, clock=clock)
    pacer.started()

    assert pacer.wait() == pytest.approx(0.25)
    clock.advance(0.1)
    assert pacer.wait() == pytest.approx(0.15)
    clock.advance(0.15 + 1e-6)
    assert pacer.wait() == 0


def test_idle_time_builds_up_a_burst_of_a_tenth_of_a_second_of_calls_and_no_more(clock):
    pacer = Pacer(rate=100.0, breaker_failures=0, clock=clock)
    clock.advance(60.0)

    started = 0
    while pacer.wait() == 0:
        pacer.started()
        started += 1

    assert started == 10


def test_without_a_rate_calls_are_never_held_back_by_it(clock):
    pacer = Pacer(rate=None, breaker_failures=0, clock=clock)

    for _ in range(10_000):
        assert pacer.wait() == 0
        pacer.started()


@pytest.mark.parametrize("rate", [0, -1.0])
def test_a_rate_that_is_not_positive_is_refused(rate):
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(rate=rate)


# --- Retry-After ----------------------------------------------------------------------------


def test_a_retry_after_holds_every_call_until_it_passed(clock):
    pacer = Pacer(breaker_failures=0, clock=clock)
    pacer.started()

    pacer.failed(retry_after=3)

    # The pacer is the process's: any record asking now waits, not only the one that failed.
    assert pacer.wait() == pytest.approx(3.0)
    assert pacer.wait() == pytest.approx(3.0)
    clock.advance(2.0)
    assert pacer.wait() == pytest.approx(1.0)
    clock.advance(1.0)
    assert pacer.wait() == 0


def test_a_shorter_retry_after_does_not_cut_a_longer_one_short(clock):
    pacer = Pacer(breaker_failures=0, clock=clock)
    pacer.failed(retry_after=10)
    clock.advance(1.0)

    pacer.failed(retry_after=2)

    assert pacer.wait() == pytest.approx(9.0)


@pytest.mark.parametrize("retry_after", [None, 0, -5])
def test_a_failure_without_a_retry_after_holds_nothing(clock, retry_after):
    pacer = Pacer(breaker_failures=0, clock=clock)

    pacer.failed(retry_after=retry_after)

    assert pacer.wait() == 0


# --- circuit breaker ------------------------------------------------------------------------


def test_the_breaker_opens_after_the_configured_consecutive_failures(clock):
    pacer = breaker(clock)

    for _ in range(2):
        pacer.started()
        pacer.failed()
    assert (pacer.state, pacer.wait()) == (CLOSED, 0)

    pacer.started()
    pacer.failed()

    assert pacer.state == OPEN
    assert pacer.wait() == pytest.approx(5.0)


def test_an_open_breaker_holds_every_call_for_the_cooldown(clock):
    pacer = breaker(clock)
    open_breaker(pacer)

    clock.advance(4.9)
    assert pacer.wait() == pytest.approx(0.1)
    assert pacer.state == OPEN

    clock.advance(0.1)
    assert pacer.wait() == 0
    assert pacer.state == HALF_OPEN


def test_a_half_open_breaker_lets_exactly_one_probe_through(clock):
    pacer = breaker(clock)
    open_breaker(pacer)
    clock.advance(5.0)

    # Callers take turns asking, as the loop's thread does; only the first may start.
    allowed = 0
    for _ in range(5):
        if pacer.wait() == 0:
            pacer.started()
            allowed += 1

    assert allowed == 1
    assert pacer.wait() > 0, "no second call while the probe is in flight"
    clock.advance(30.0)
    assert pacer.wait() > 0, "only the probe's outcome lets calls through again"


def test_a_failed_probe_reopens_the_breaker_for_twice_the_cooldown_up_to_the_maximum(clock):
    pacer = breaker(clock)
    open_breaker(pacer)

    cooldowns = []
    for _ in range(4):
        start_probe(pacer, clock)
        pacer.failed(probe=True)
        assert pacer.state == OPEN
        cooldowns.append(pacer.wait())

    assert cooldowns == pytest.approx([10.0, 12.0, 12.0, 12.0])


def test_a_successful_probe_closes_the_breaker_and_resets_the_cooldown(clock):
    pacer = breaker(clock)
    open_breaker(pacer)
    start_probe(pacer, clock)
    pacer.failed(probe=True)
    start_probe(pacer, clock)

    pacer.succeeded(probe=True)

    assert pacer.state == CLOSED
    assert pacer.consecutive_failures == 0
    for _ in range(10):
        assert pacer.wait() == 0
        pacer.started()
    # Opened again later, it starts from the configured cooldown, not the doubled one.
    open_breaker(pacer)
    assert pacer.wait() == pytest.approx(5.0)


def test_a_call_started_before_the_breaker_opened_does_not_decide_the_probe(clock):
    pacer = breaker(clock)
    assert pacer.started() is False
    open_breaker(pacer)
    start_probe(pacer, clock)

    # The old call fails late: the breaker stays half-open, the probe still in flight.
    pacer.failed()
    assert pacer.state == HALF_OPEN
    assert pacer.wait() > 0, "still one probe at a time"
    pacer.succeeded(probe=True)
    assert pacer.state == CLOSED


def test_a_success_resets_the_count_of_consecutive_failures(clock):
    pacer = breaker(clock)
    for _ in range(2):
        pacer.failed()

    pacer.succeeded()
    for _ in range(2):
        pacer.failed()

    assert (pacer.state, pacer.wait()) == (CLOSED, 0)
    pacer.failed()
    assert pacer.state == OPEN


def test_with_breaker_failures_zero_the_breaker_never_opens(clock):
    pacer = breaker(clock, breaker_failures=0)

    for _ in range(1000):
        pacer.started()
        pacer.failed()

    assert pacer.state == CLOSED
    assert pacer.wait() == 0


def test_a_retry_after_outlasting_the_cooldown_holds_the_probe_back(clock):
    pacer = breaker(clock)
    for _ in range(2):
        pacer.failed()
    pacer.failed(retry_after=8)

    assert pacer.state == OPEN
    clock.advance(5.0)
    assert pacer.wait() == pytest.approx(3.0)
    clock.advance(3.0)
    assert pacer.wait() == 0


def test_content_only_without_a_rate_while_the_breaker_is_closed_no_failure_is_pending_and_no_retry_after_runs(clock):
    pacer = breaker(clock, breaker_failures=3)
    assert pacer.content()

    pacer.failed()
    assert not pacer.content(), "a failure since the last success"
    pacer.succeeded()
    assert pacer.content()

    pacer.failed(retry_after=2)
    pacer.succeeded()
    assert not pacer.content(), "the Retry-After still runs"
    clock.advance(2)
    assert pacer.content()

    for _ in range(3):
        pacer.failed()
    assert pacer.state == OPEN and not pacer.content()

    assert not Pacer(rate=50, clock=clock).content(), "a rate to keep"
