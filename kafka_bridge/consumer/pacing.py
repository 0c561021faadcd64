"""The pace of the system the consumer calls, shared by every record of the process: a rate
limit, a pause the system asked for (`Retry-After`), and a circuit breaker.

These are limits of the called system, not of a record: a 429 for one order means no order
should be sent before the moment it names, and a platform that fails call after call gets one
probe at a time instead of the whole concurrency.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# The breaker's state as a number, for a gauge.
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class Pacer:
    def __init__(
        self,
        *,
        rate: float | None = None,
        breaker_failures: int = 10,
        breaker_cooldown: float = 5.0,
        breaker_cooldown_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.breaker_cooldown_max = breaker_cooldown_max
        self.clock = clock
        # A tenth of a second of calls may start at once; never more than that above the rate.
        self._capacity = max(1.0, rate / 10) if rate else 0.0
        self._tokens = 1.0
        self._refilled_at = clock()
        self.hold_until = 0.0
        self.state = CLOSED
        self.consecutive_failures = 0
        self._cooldown = breaker_cooldown
        self._open_until = 0.0
        self._probe_in_flight = False

    def wait(self) -> float:
        """Seconds until a call may start: 0 when one may start now."""
        now = self.clock()
        waits = [self.hold_until - now]
        if self.state == OPEN:
            if now >= self._open_until:
                self.state = HALF_OPEN
            else:
                waits.append(self._open_until - now)
        if self.state == HALF_OPEN and self._probe_in_flight:
            # One probe at a time; its outcome decides. Its completion wakes the caller.
            waits.append(0.05)
        if self.rate:
            self._refill(now)
            if self._tokens < 1:
                waits.append((1 - self._tokens) / self.rate)
        return max(0.0, *waits)

    def content(self) -> bool:
        """No rate to keep, the breaker closed, no failure since the last success and no
        Retry-After to wait out: calls may be started as fast as slots free up."""
        return (
            not self.rate and self.state == CLOSED and not self.consecutive_failures and self.clock() >= self.hold_until
        )

    def started(self) -> bool:
        """A call starts (after `wait()` returned 0). True when it is the breaker's probe: its
        outcome, and only its, decides whether the breaker closes; pass it back as `probe`."""
        if self.rate:
            self._refill(self.clock())
            self._tokens -= 1
        if self.state == HALF_OPEN:
            self._probe_in_flight = True
            return True
        return False

    def succeeded(self, *, probe: bool = False) -> None:
        """The system answered (whatever it answered about the record)."""
        self.consecutive_failures = 0
        if probe:
            self._probe_in_flight = False
        if self.state != CLOSED:
            self.state = CLOSED
            self._cooldown = self.breaker_cooldown
            self._probe_in_flight = False

    def failed(self, *, retry_after: float | None = None, probe: bool = False) -> None:
        """The system did not answer, or answered that it cannot take calls now. A call that
        started before the breaker opened does not count as the probe."""
        now = self.clock()
        if retry_after is not None and retry_after > 0:
            self.hold_until = max(self.hold_until, now + retry_after)
        self.consecutive_failures += 1
        if probe and self.state == HALF_OPEN:
            self._probe_in_flight = False
            self._cooldown = min(self._cooldown * 2, self.breaker_cooldown_max)
            self._open(now)
        elif self.state == CLOSED and self.breaker_failures and self.consecutive_failures >= self.breaker_failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._open_until = now + self._cooldown

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
