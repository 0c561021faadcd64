"""Who works on the consumer loop's records, and when: `Dispatcher` holds the records ready per
key (`KeyScheduler`), the calls prepared for a free slot, the event loop thread that awaits the
calls that are coroutines, the worker threads that make the blocking ones, the dead-letter
thread, the count of what is in flight, and the queue on which their outcomes come back to the
loop thread. The pacer is asked before each call starts and told each one's outcome.

Its methods run on the loop thread holding the loop's lock (or, during a revocation, on the
consumer's I/O thread holding it), unless said otherwise.
"""

from __future__ import annotations

import functools
import inspect
import queue
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition
from opentelemetry.trace import Span

from kafka_bridge.consumer.api import Call, NonRetryableError
from kafka_bridge.consumer.dead_letters import DeadLetterPosition
from kafka_bridge.consumer.event_loop import EventLoopThread, NotStarted, Outcome
from kafka_bridge.consumer.pacing import Pacer
from kafka_bridge.consumer.scheduling import KeyScheduler
from kafka_bridge.tracing import span_let_go

# While calls are in flight the loop polls with this timeout, so their results are taken up
# soon after they arrive (the broker's fetch responses wake the poll earlier anyway).
BUSY_POLL_MS = 2
# Records prepared in one step: twice the slots (a plan read costs mostly per batch; at 32 slots
# against a 20 ms platform, batches of 64 instead of 16 took 50 µs off an export), at most this
# many (at 512 slots, batches of 500 held the loop thread long enough to cost throughput).
MAX_PREPARE_BATCH = 256
# While the pacer is content (no rate limit, no failure since the last success), the event loop
# holds up to one more call per slot, started as soon as a slot is free without waiting for the
# loop thread, and hands outcomes back at most this many seconds late, together.
HAND_BACK_DELAY = 0.005

# What the worker threads, the event loop and the dead-letter thread hand back to the loop thread:
# one call's outcome, the outcomes of the coroutine calls that ended together, a dead letter's.
CALL, CALLS, DEAD_LETTER = "call", "calls", "dead_letter"


@dataclass(eq=False)
class Item:
    record: ConsumerRecord
    tp: TopicPartition
    # The partition's assignment it belongs to: results of an earlier one are not acted on.
    generation: int
    attempts: int = 0
    # Given up on: to be sent to the dead-letter topic (again, if a send failed).
    giving_up: bool = False
    # On the dead-letter topic already; only the dead-letter hook is left to run.
    dead_lettered: bool = False
    dead_letter_position: DeadLetterPosition | None = None
    # Its call is the circuit breaker's probe.
    probe: bool = False
    error: str = ""
    # Its `process` span (kafka_bridge.tracing), ended when it is done with; None without a trace.
    trace: Span | None = None


def where(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


# A finished call: (key, item, what it returned, what it raised).
CallResult = tuple[Hashable, Item, Any, BaseException | None]
# A finished dead-letter send: (key, item, its future).
DeadLetterResult = tuple[Hashable, Item, Future]


class Dispatcher:
    """Records ready per key, calls prepared, and the threads that make them. `concurrency` calls
    at most run at once: a call that is a coroutine function is awaited on the event loop thread
    (hundreds in flight on one thread), any other runs on a worker thread of its own.

    While the pacer is content, coroutine calls are handed to the event loop up to one per slot
    ahead of a free slot: it starts each as a slot frees up, so a slot waits neither for this
    thread nor for a hand-off, and the outcomes come back in batches. A call that fails hands
    the ones still waiting back unstarted (`NotStarted`): they are prepared calls again, and the
    pacer decides as before which may start."""

    def __init__(self, *, name: str, concurrency: int, pacer: Pacer | None):
        self.name = name
        self.concurrency = concurrency
        self.pacer = pacer
        # Calls handed to a worker or the event loop whose outcome is not back yet.
        self.handed = 0
        self._blocking_in_flight = 0
        self._max_blocking_seen = 0
        # Coroutine calls may be handed ahead of a free slot (see the class's docstring).
        self._ahead = False
        self.dead_letters_in_flight = 0
        self.prepare_batch = min(2 * concurrency, MAX_PREPARE_BATCH)
        self._scheduler: KeyScheduler[Item] = KeyScheduler()
        # Calls prepared and waiting for a free worker: (key, item, call).
        self._prepared: deque[tuple[Hashable, Item, Call]] = deque()
        self._in_flight: dict[TopicPartition, int] = {}
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        # Taken off the queue by `wait`, not yet by `results`.
        self._waited: list[tuple] = []
        # Coroutine calls started in this pass, handed to the event loop together.
        self._starting: list[tuple[tuple[Hashable, Item, Call], Callable]] = []
        self._workers: ThreadPoolExecutor | None = None
        self._event_loop: EventLoopThread | None = None
        self._dead_letter_worker: ThreadPoolExecutor | None = None

    def open(self) -> None:
        # Threads are started when the first blocking call needs one.
        self._workers = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.name}-call")
        self._event_loop = EventLoopThread(
            name=f"{self.name}-loop",
            limit=self.concurrency,
            # The failures the pacer counts (see `_ended`) send the waiting calls back.
            stops_waiting=lambda error: not isinstance(error, NonRetryableError),
        )
        self._event_loop.start()
        self._dead_letter_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-dlt")

    def shutdown(self, *, before_loop_stops: Callable[[], Any] | None = None) -> None:
        """Without waiting: what is still running past the drain timeout is abandoned (the
        coroutine calls cancelled). `before_loop_stops`, a coroutine function, closes what lives
        on the event loop (a client's connections) before it stops."""
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._event_loop.stop(before=before_loop_stops)
        self._dead_letter_worker.shutdown(wait=False, cancel_futures=True)

    # --- records ready per key --------------------------------------------------------------

    def add(self, key: Hashable, item: Item) -> None:
        self._scheduler.add(key, item)

    def take(self, *, now: float) -> list[tuple[Hashable, Item]]:
        """Ready records to prepare: up to `prepare_batch` calls (at least one per slot) are held
        prepared, besides the free slots' own. Taken in batches of at least `prepare_batch`
        (preparing is a database read whose cost is mostly per batch), unless a free slot would
        otherwise have no call."""
        room = max(self.concurrency, self.prepare_batch) + self.free_workers() - len(self._prepared)
        if room <= 0 or (room < self.prepare_batch and len(self._prepared) >= self.free_workers()):
            return []
        return self._scheduler.take(limit=room, now=now)

    def records_on_hand(self) -> int:
        """Records taken from Kafka and not yet started: waiting for their key or a retry, or
        prepared."""
        return self._scheduler.queued + len(self._prepared)

    def finished(self, key: Hashable) -> None:
        self._scheduler.finished(key)

    def retry_at(self, key: Hashable, due: float) -> None:
        self._scheduler.retry_at(key, due)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions that went: their records, prepared calls and in-flight counts. The records
        dropped are let go (their spans end); a call still in flight is let go by the loop when
        its result comes back."""
        for tp in partitions:
            self._in_flight.pop(tp, None)
        for _, item, _ in self._prepared:
            if item.tp in partitions:
                span_let_go(item.trace)
        self._scheduler.drop(lambda key: key[0] in partitions, on_drop=lambda item: span_let_go(item.trace))
        self._prepared = deque(entry for entry in self._prepared if entry[1].tp not in partitions)

    # --- calls ------------------------------------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        """Calls running now (not those waiting on the event loop for a slot)."""
        return self._blocking_in_flight + (self._event_loop.running if self._event_loop is not None else 0)

    @property
    def max_in_flight_seen(self) -> int:
        running = self._event_loop.max_running_seen if self._event_loop is not None else 0
        return max(self._max_blocking_seen, running)

    def _capacity(self) -> int:
        """Calls that may be handed out at once: one per slot, and while the pacer is content one
        more per slot for the event loop to start as slots free up."""
        return self.concurrency * (2 if self._ahead else 1)

    def free_workers(self) -> int:
        return self._capacity() - self.handed

    def recall_waiting(self) -> None:
        """No call handed ahead starts any more (a stop, a revocation): those waiting for a slot
        come back unstarted, as prepared calls; `start_calls` hands calls ahead again."""
        if self._ahead:
            self._ahead = False
            self._event_loop.hand_back_delay = 0.0
            self._event_loop.refuse_waiting()

    def _pace_ahead(self) -> None:
        """Hand coroutine calls ahead of free slots only while the pacer is content."""
        content = self.pacer is None or self.pacer.content()
        if content and not self._ahead:
            self._ahead = True
            self._event_loop.hand_back_delay = HAND_BACK_DELAY
            self._event_loop.accept_waiting()
        elif not content and self._ahead:
            self._ahead = False
            self._event_loop.hand_back_delay = 0.0

    def hold(self, key: Hashable, item: Item, call: Call) -> None:
        self._prepared.append((key, item, call))

    def start_calls(self, *, current: Callable[[Item], bool]) -> None:
        """Hand prepared calls to free workers, as far as the pacer allows; calls of a partition
        that went meanwhile (`current` false) are dropped."""
        self._pace_ahead()
        try:
            while self._prepared and self.free_workers() > 0:
                if self.pacer is not None and self.pacer.wait() > 0:
                    return
                key, item, call = self._prepared[0]
                blocking = self._blocking(call)
                if blocking and self.handed >= self.concurrency:
                    return  # a blocking call needs a free slot: the executor would queue it
                self._prepared.popleft()
                if not current(item):
                    continue
                self._call(key, item, call, blocking=blocking)
        finally:
            if self._starting:
                starting, self._starting = self._starting, []
                self._event_loop.submit(starting, self._hand_back_calls)

    def _call(self, key: Hashable, item: Item, call: Call, *, blocking: bool) -> None:
        item.attempts += 1
        item.probe = self.pacer.started() if self.pacer is not None else False
        self.handed += 1
        self._in_flight[item.tp] = self._in_flight.get(item.tp, 0) + 1
        if not blocking:
            self._starting.append(((key, item, call), call))
            return
        self._blocking_in_flight += 1
        self._max_blocking_seen = max(self._max_blocking_seen, self._blocking_in_flight)
        future = self._workers.submit(call)
        future.add_done_callback(functools.partial(self._hand_back, CALL, key, item))

    def send_dead_letter(self, key: Hashable, item: Item, send: Callable[[], DeadLetterPosition]) -> None:
        """`send` on the dead-letter thread; its outcome comes back with the calls'."""
        self.dead_letters_in_flight += 1
        future = self._dead_letter_worker.submit(send)
        future.add_done_callback(functools.partial(self._hand_back, DEAD_LETTER, key, item))

    def _hand_back(self, kind: str, key: Hashable, item: Item, future: Future) -> None:
        # On the worker or dead-letter thread: only hand the outcome over.
        self._results.put((kind, key, item, future))

    def _hand_back_calls(self, outcomes: list[Outcome]) -> None:
        # On the event loop thread: the calls that ended together, in one item.
        self._results.put((CALLS, None, None, outcomes))

    # --- results ----------------------------------------------------------------------------

    def results(self, *, timeout: float = 0.0) -> tuple[list[CallResult], list[DeadLetterResult]]:
        """What finished (waiting up to `timeout` for something): the workers are freed and the
        pacer told of each call's outcome; what is left is to record them. Need not hold the
        lock while it waits."""
        finished, self._waited = self._waited, []
        try:
            if not finished:
                finished.append(self._results.get(timeout=timeout) if timeout else self._results.get_nowait())
            while True:
                finished.append(self._results.get_nowait())
        except queue.Empty:
            pass
        return self._release(finished)

    def wait(self, *, timeout: float) -> None:
        """Wait up to `timeout` seconds for something to finish (kept for `results`): how the
        loop idles while it needs no records from Kafka. Need not hold the lock."""
        if self._waited or timeout <= 0:
            return
        try:
            self._waited.append(self._results.get(timeout=timeout))
        except queue.Empty:
            pass

    def _release(self, finished: list[tuple]) -> tuple[list[CallResult], list[DeadLetterResult]]:
        calls, dead_letters = [], []
        for kind, key, item, outcome in finished:
            if kind == DEAD_LETTER:
                self.dead_letters_in_flight -= 1
                dead_letters.append((key, item, outcome))
            elif kind == CALLS:
                unstarted = []
                for (key, item, call), value, error in outcome:
                    if isinstance(error, NotStarted):
                        unstarted.append((key, item, call))
                    else:
                        calls.append(self._ended(key, item, value, error))
                # Prepared calls again, first in line, in the order they were handed out.
                for key, item, call in reversed(unstarted):
                    self._handed_back(item)
                    item.attempts -= 1
                    self._prepared.appendleft((key, item, call))
            else:
                self._blocking_in_flight -= 1
                error = outcome.exception()
                calls.append(self._ended(key, item, None if error is not None else outcome.result(), error))
        return calls, dead_letters

    def _handed_back(self, item: Item) -> None:
        self.handed -= 1
        if item.tp in self._in_flight:
            self._in_flight[item.tp] -= 1

    def _ended(self, key: Hashable, item: Item, value: Any, error: BaseException | None) -> CallResult:
        self._handed_back(item)
        if self.pacer is not None:
            if error is None or isinstance(error, NonRetryableError):
                self.pacer.succeeded(probe=item.probe)
            else:
                self.pacer.failed(retry_after=getattr(error, "retry_after", None), probe=item.probe)
        return key, item, value, error

    # --- what the loop asks of it -----------------------------------------------------------

    def busy(self) -> bool:
        return bool(self.handed or self.dead_letters_in_flight)

    def outstanding(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        """Calls in flight (of `partitions`, or all) and dead letters being sent."""
        calls = self.handed if partitions is None else sum(self._in_flight.get(tp, 0) for tp in partitions)
        return calls + self.dead_letters_in_flight

    def poll_timeout_ms(self, *, idle_ms: int) -> int:
        """How long the loop's poll may wait: not at all while results wait or a call could
        start, briefly while calls are in flight, else until the next retry is due (or the pacer
        lets a call start), at most `idle_ms`."""
        until = self.idle_for(cap=idle_ms / 1000)
        if until and self.busy():
            return BUSY_POLL_MS
        return max(0, int(until * 1000) + 1) if until else 0

    def idle_for(self, *, cap: float) -> float:
        """Seconds the loop has nothing to do but wait for a result: 0 while results wait or a
        call could start, else until the next retry is due (or the pacer lets a call start), at
        most `cap`."""
        now = time.monotonic()
        if self._waited or not self._results.empty() or self._can_start(now):
            return 0.0
        until = cap
        due = self._scheduler.next_due()
        if due is not None:
            until = min(until, due - now)
        if self.pacer is not None and self._can_start_but_for_the_pacer(now):
            until = min(until, self.pacer.wait())
        return max(0.0, until)

    def _can_start(self, now: float) -> bool:
        return self._can_start_but_for_the_pacer(now) and (self.pacer is None or self.pacer.wait() == 0)

    def _can_start_but_for_the_pacer(self, now: float) -> bool:
        """A prepared call could be handed out now, or a ready record prepared for a free slot."""
        if self._prepared:
            # As `start_calls` decides: a blocking call needs a slot that is free now.
            return self.handed < (self.concurrency if self._blocking(self._prepared[0][2]) else self._capacity())
        return self.free_workers() > 0 and self._scheduler.has_ready(now)

    @staticmethod
    def _blocking(call: Call) -> bool:
        return not inspect.iscoroutinefunction(call)

    def status(self) -> dict:
        return {
            "calls_in_flight": self.calls_in_flight,
            "retries_waiting": self._scheduler.waiting,
            "records_queued": self._scheduler.queued,
            "calls_prepared": len(self._prepared),
            # Handed to the event loop ahead of a free slot, waiting there for one.
            "calls_waiting_for_a_slot": max(0, self.handed - self.calls_in_flight),
        }
