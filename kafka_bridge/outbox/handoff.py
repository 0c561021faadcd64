"""The fast path's hand-off: rows committed by requests, handed to the producer by a thread of
the publisher's own, so that a request only queues its row.

Why: kafka-python's producer is pure Python under the process's one GIL. A `send()` costs its
caller the serialization, the partitioner and the accumulator; each record that opens a batch
wakes the producer's I/O thread, which then takes the GIL from a request in the middle of its
transaction; and each produce request costs that thread about a millisecond of the GIL. A
process confirming 600 orders a second one after the other made 150 produce requests a second
at `linger_ms` 5 and gave a third of its time to them.

So a busy process gathers: while more than one row per `linger` comes (200/s at 5 ms, measured
over `RATE_WINDOW`), the hand-offs are `BUSY_SPACING` times `linger` apart, and each burst is
one produce request. A row then waits up to that spacing here and `linger` in the producer: 30
ms at most at 5 ms. A quieter process hands each row over at once, and its row waits `linger`
in the producer as before. (Bursts 15 ms apart gave a process confirming one order after the
other 0.76 of its rate without publishing, 25 ms apart 0.89: docs/benchmarks.md.)

What the queue risks: nothing the relay does not cover. The rows are committed before they are
queued; a process that dies with rows queued leaves them unsent, and the relay sends them after
its grace. A row still queued `timeout` seconds after it was queued (the producer could not be
built, or would not take records) is not handed over at all: it is left to the relay, so that
the fast path cannot send it late, behind the relay's back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from kafka_bridge.models import OutboxEvent

logger = logging.getLogger("kafka_bridge.outbox.publisher")

# While busy, the time between two hand-offs, in multiples of `linger`.
BUSY_SPACING = 5.0
# The rows' rate is measured over at least this long, in multiples of `linger`.
RATE_WINDOW = 10.0


class SendHandoff:
    """Queues rows for `hand_over`, which a thread of its own calls with what is queued: at once
    while the rows come no faster than one per `linger` seconds, else `BUSY_SPACING` times
    `linger` after the previous call (at once while someone flushes or closes).

    `ready()` tells whether there is a producer: while there is none, rows are handed over one
    at a time and at once, so that the first one builds it and the others learn the outcome
    (`hand_over` leaves them to the relay after a failure). `expired(rows)` is called on the same
    thread with rows queued longer than `timeout` seconds, which are not handed over.
    """

    def __init__(
        self,
        *,
        hand_over: Callable[[Sequence[OutboxEvent]], None],
        linger: float,
        timeout: float,
        ready: Callable[[], bool] = lambda: True,
        expired: Callable[[Sequence[OutboxEvent]], None] = lambda rows: None,
    ):
        self.hand_over = hand_over
        self.linger = linger
        self.timeout = timeout
        self.ready = ready
        self.expired = expired
        self._cond = threading.Condition()
        self._queue: list[tuple[float, OutboxEvent]] = []
        self._handing_over = False
        self._idle = False  # the thread waits for a first row: a put() must wake it
        self._flushers = 0
        self._closing = False
        self._taken_at = 0.0  # when the last rows were taken
        self._busy = False  # more than one row per `linger`, over the last RATE_WINDOW
        self._counted = 0  # rows taken since `_counted_since`
        self._counted_since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
        self._thread.start()

    def put(self, rows: Sequence[OutboxEvent]) -> None:
        """Queue `rows`, in order, and return at once."""
        now = time.monotonic()
        with self._cond:
            self._queue.extend((now, row) for row in rows)
            # Only an idle thread needs waking: one that gathers looks at the end of its wait.
            if self._idle:
                self._idle = False
                self._cond.notify_all()

    def flush(self, deadline: float) -> bool:
        """Wait until every row queued so far is handed over; False past `deadline`."""
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._queue or self._handing_over:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float) -> None:
        """Hand over what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._closing):
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._queue:
                    return  # closing, and nothing left
                if not self.ready():
                    # The first row pays for building the producer; the rows behind it wait for
                    # the outcome (a failure suspends the path and leaves them to the relay).
                    queued, self._queue = self._queue[:1], self._queue[1:]
                else:
                    if self._busy:
                        self._gather(self._taken_at + self.linger * BUSY_SPACING)
                    queued, self._queue = self._queue, []
                self._handing_over = True
                self._count(len(queued))
            try:
                self._hand_over(queued)
            finally:
                with self._cond:
                    self._handing_over = False
                    self._cond.notify_all()

    def _gather(self, until: float) -> None:
        """Wait, holding the condition, until `until`, unless someone flushes or closes."""
        while not (self._flushers or self._closing):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _count(self, taken: int) -> None:
        """Count `taken` rows; once per RATE_WINDOW, decide whether the process is busy."""
        now = time.monotonic()
        self._taken_at = now
        self._counted += taken
        elapsed = now - self._counted_since
        if elapsed >= self.linger * RATE_WINDOW:
            self._busy = self.linger > 0 and self._counted * self.linger > elapsed
            self._counted, self._counted_since = 0, now

    def _hand_over(self, queued: list[tuple[float, OutboxEvent]]) -> None:
        oldest_allowed = time.monotonic() - self.timeout
        late = [row for queued_at, row in queued if queued_at < oldest_allowed]
        rows = [row for queued_at, row in queued if queued_at >= oldest_allowed]
        try:
            if late:
                self.expired(late)
            if rows:
                self.hand_over(rows)
        except Exception:
            # hand_over never raises for Kafka's trouble: this is a bug. The rows are the relay's.
            logger.exception("kafka: unexpected error while handing %d outbox event(s) to the producer", len(queued))
