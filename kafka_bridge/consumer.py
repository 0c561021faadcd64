"""A Kafka consumer loop with per-key ordered concurrency, at-least-once delivery, retries and a
dead-letter topic: the `@KafkaListener` of this project, without its one-call-per-partition
ceiling.

Records with the same key (within a partition) are handled one at a time in offset order;
records with different keys run in parallel, up to `concurrency` calls at once, within a
partition and across partitions. The loop thread does everything but the calls: it polls
(so the consumer stays in its group however slow the calls are), asks the processor to
prepare what it took (one bulk step), hands the calls to worker threads, hands their results
back to the processor (one bulk step), and commits.

Auto-commit is off. Per partition the committed offset is the first record not yet done with
(`OffsetTracker`); records done beyond it are read again after a crash or a rebalance, so
processors must be idempotent. Each partition is paused while `max_uncommitted` records are
held past its committed offset, and resumed when they are done with.

What a record's work raises decides what happens to it:
- `RetryableError`: retried with exponential backoff and jitter (and not before its
  `retry_after`), up to `max_attempts`, then dead-lettered. Only its key waits: the records
  behind it with the same key wait for it, all others go on.
- `NonRetryableError`: dead-lettered at once.
- anything else (a database outage, a bug): retried with backoff for as long as it takes,
  never dead-lettered, since the record itself is not at fault.

A dead letter is sent on a thread of its own; until the dead-letter topic acknowledged it, the
record is not done with, and a failed send is retried with backoff.

On a stop (or when partitions are revoked) no new work starts; the calls in flight finish
(each bounded by the processor's own deadline, and the loop waits at most `drain_timeout`),
their results are recorded, what is done is committed, and only then does the consumer close
(leaving the group) or let the partitions go.
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.db import close_old_connections, connections, reset_queries
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    AuthorizationError,
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    SaslAuthenticationFailedError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_bridge import metrics
from kafka_bridge.client import connection_config
from kafka_bridge.consumer_state import consumer_member_name, consumer_state_forget, consumer_state_record
from kafka_bridge.dead_letter import DeadLetterPosition, DeadLetterPublisher
from kafka_bridge.pacing import STATE_VALUES, Pacer
from kafka_bridge.runner import StopFlag
from kafka_bridge.scheduling import KeyScheduler
from kafka_bridge.tracking import OffsetTracker

logger = logging.getLogger(__name__)

# Seconds between checks of the database connections (broken, or older than CONN_MAX_AGE).
DB_CHECK_INTERVAL = 1.0
# While calls are in flight the loop polls with this timeout, so their results are taken up
# soon after they arrive (the broker's fetch responses wake the poll earlier anyway).
BUSY_POLL_MS = 2
# Seconds between offset commits while records keep finishing.
COMMIT_INTERVAL = 0.2
# A commit that takes longer is given up and tried again at the next interval: a broker that
# does not answer must not hold the loop (nor a stop) for kafka-python's 30 s request timeout.
COMMIT_TIMEOUT_MS = 5000
# Records taken per step when calls are made inline (they never wait): a poll's worth.
INLINE_BATCH = 1000
# Seconds between updates of the gauges and of the status snapshot.
GAUGE_INTERVAL = 1.0

# Work for a worker thread: the record's call, made outside the loop thread.
Call = Callable[[], Any]
RecordHandler = Callable[[ConsumerRecord], None]
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
    made on worker threads."""

    def prepare(self, records: list[ConsumerRecord]) -> list[Call | BaseException | None]:
        """Per record: a call to make on a worker thread, an error to act on (retry or
        dead-letter), or None when it is done with and needs no call."""

    def complete(self, results: list[tuple[ConsumerRecord, Any, BaseException | None]]) -> list[BaseException | None]:
        """Record the outcome of finished calls, given (record, what the call returned, what it
        raised). Per record: None when it is done with, or the error to act on."""


class CallEach:
    """A processor that calls `handler(record)` on a worker thread for each record."""

    def __init__(self, handler: RecordHandler):
        self.handler = handler

    def prepare(self, records):
        return [functools.partial(self.handler, record) for record in records]

    def complete(self, results):
        return [error for _, _, error in results]


def consumer_config(*, group_id: str) -> dict:
    return {
        **connection_config(),
        "group_id": group_id,
        "client_id": settings.KAFKA_CLIENT_ID,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "allow_auto_create_topics": False,
        "max_poll_records": settings.KAFKA_CONSUMER_MAX_POLL_RECORDS,
        "max_poll_interval_ms": settings.KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": settings.KAFKA_CONSUMER_SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": settings.KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS,
        "fetch_max_wait_ms": settings.KAFKA_CONSUMER_FETCH_MAX_WAIT_MS,
    }


def backoff_delay(*, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))],
    so that consumers retrying the same outage do not hit the platform in lockstep."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


@dataclass(eq=False)
class _Item:
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


# What workers and the dead-letter thread hand back to the loop thread.
_CALL, _DEAD_LETTER = "call", "dead_letter"


class _Rebalances(AsyncConsumerRebalanceListener):
    """kafka-python runs rebalance listeners on its I/O thread, as tasks of the group join, while
    the loop thread waits inside `poll()`. Giving up partitions therefore happens here: the
    results of their calls in flight are taken and recorded as they come (the loop's state
    under its lock), their offsets committed with the coordinator's own coroutine, then they
    go. The listener awaits between checks, so the heartbeats go on meanwhile."""

    def __init__(self, loop: ConsumerLoop):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):
        await self.loop._partitions_revoked(set(revoked), lost=False)

    async def on_partitions_lost(self, lost):
        # Already someone else's: nothing may be committed for them any more.
        await self.loop._partitions_revoked(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned):
        with self.loop._lock:
            self.loop._partitions_assigned(set(assigned))


def _names(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


class ConsumerLoop:
    """Polls `topics` in `group_id` and hands each record to `processor` (or, for simple uses,
    to `handler(record)` on a worker thread)."""

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        stop: StopFlag,
        processor: RecordProcessor | None = None,
        handler: RecordHandler | None = None,
        concurrency: int = 1,
        max_uncommitted: int | None = None,
        pacer: Pacer | None = None,
        name: str = "consumer",
        dead_letter: DeadLetterPublisher | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        max_attempts: int = 5,
        backoff_base: float | None = None,
        backoff_max: float | None = None,
        poll_timeout_ms: int | None = None,
        stats_interval: float | None = None,
        drain_timeout: float = 10.0,
        log_fields: LogFields | None = None,
        report_status: bool = False,
    ):
        if (processor is None) == (handler is None):
            raise ValueError("give either a processor or a handler")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.topics = list(topics)
        self.group_id = group_id
        self.processor = processor if processor is not None else CallEach(handler)
        self.stop = stop
        self.concurrency = concurrency
        # Calls made on the loop thread: for a processor whose calls never wait.
        self.inline_calls = bool(getattr(self.processor, "inline_calls", False))
        self.max_uncommitted = max_uncommitted or max(1000, 4 * concurrency)
        self.pacer = pacer
        self.name = name
        self.dead_letter = dead_letter
        self.on_dead_letter = on_dead_letter
        self.max_attempts = max_attempts
        self.backoff_base = (
            backoff_base if backoff_base is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS / 1000
        )
        self.backoff_max = (
            backoff_max if backoff_max is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS / 1000
        )
        self.poll_timeout_ms = poll_timeout_ms or settings.KAFKA_CONSUMER_POLL_TIMEOUT_MS
        self.stats_interval = stats_interval or settings.KAFKA_CONSUMER_STATS_INTERVAL
        # How long a stop or a revocation waits for the calls in flight; the processor's own
        # deadline per call should be shorter.
        self.drain_timeout = drain_timeout
        # What the processor's domain knows about a record (e.g. its order id), added to the
        # structured fields of the loop's own log lines about it.
        self.log_fields = log_fields
        # Recorded in the database once a second (`ConsumerState`), for the admin's status page
        # in the web process, which cannot see this process's gauges.
        self.member = consumer_member_name(name) if report_status else None
        self.processed_total = 0
        self.dead_lettered_total = 0
        # How many times the group handed this consumer a non-empty set of partitions: 1 in a
        # run without rebalances.
        self.assignments = 0
        self.max_in_flight_seen = 0

        self._tracker = OffsetTracker()
        self._scheduler: KeyScheduler[_Item] = KeyScheduler()
        self._generation: dict[TopicPartition, int] = {}
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        # The loop's state is the loop thread's, except while partitions are revoked: that runs
        # on kafka-python's I/O thread. Held by the loop thread for each step but the network
        # calls that need the I/O thread (a commit), so the two never wait on each other.
        self._lock = threading.RLock()
        self._revoking: set[TopicPartition] = set()
        # Calls prepared and waiting for a free worker: (key, item, call).
        self._prepared: deque[tuple[Hashable, _Item, Call]] = deque()
        # Where to read on in a revoked partition, should the group hand it back.
        self._resume_at: dict[TopicPartition, int] = {}
        self._closing = False
        self._in_flight: dict[TopicPartition, int] = {}
        self._calls_in_flight = 0
        self._dead_letters_in_flight = 0
        self._paused: set[TopicPartition] = set()
        self._workers: ThreadPoolExecutor | None = None
        self._dead_letter_worker: ThreadPoolExecutor | None = None
        self._consumer: KafkaConsumer | None = None
        self._window_start = time.monotonic()
        self._window_count = 0
        self._broker_trouble_since = 0.0
        self._db_check_due = 0.0
        self._commit_due = 0.0
        self._gauges_due = 0.0
        self._commit_trouble = False
        self._lag_partitions: set[TopicPartition] = set()
        self._uncommitted_partitions: set[TopicPartition] = set()

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.name}-call")
        self._dead_letter_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-dlt")
        self._consumer = KafkaConsumer(**consumer_config(group_id=self.group_id))
        self._consumer.subscribe(self.topics, listener=_Rebalances(self))
        logger.info(
            "%s: consuming %s in group %s, up to %d call(s) at once",
            self.name,
            ",".join(self.topics),
            self.group_id,
            self.concurrency,
        )
        try:
            while not self.stop.is_set():
                try:
                    polled = self._poll()
                    with self._lock:
                        self._take_polled(polled)
                        calls, dead_letters = self._release(self._drain_results())
                        # Free workers get prepared calls first; recording what finished (a
                        # transaction) and preparing more (a read) come after.
                        self._start_calls()
                        self._record(calls, dead_letters)
                        self._prepare_more()
                        self._start_calls()
                    self._commit()
                    self._housekeeping()
                except KafkaError as exc:
                    if _fatal(exc):
                        raise
                    self._trouble(exc)
                except Exception as exc:
                    # Whatever a record or a dependency did, the consumer stays up: a crash
                    # loop would only redeliver the same records to the next process.
                    self._trouble(exc)
        finally:
            self._close()

    def _trouble(self, exc: Exception) -> None:
        logger.error("%s: %s: %s; going on in 1 s", self.name, type(exc).__name__, exc, exc_info=exc)
        self.stop.wait(1.0)

    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        _unpark_resumed_partitions(self._consumer)
        try:
            polled = self._consumer.poll(timeout_ms=self._poll_timeout_ms())
        except KafkaError as exc:
            # The broker is unreachable or the group coordinator moved: keep the consumer and
            # try again; it reconnects by itself. Nothing was handed out, so nothing is lost.
            if not self._broker_trouble_since:
                self._broker_trouble_since = time.monotonic()
                logger.warning("%s: poll failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
            self.stop.wait(0.5 if self._busy() else 1.0)
            return {}
        if self._broker_trouble_since:
            logger.info(
                "%s: polling again after %.0f s of broker trouble",
                self.name,
                time.monotonic() - self._broker_trouble_since,
            )
            self._broker_trouble_since = 0.0
        return polled

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        if not self._results.empty() or (self._free_workers() and self._can_start(now)):
            return 0
        if self._busy():
            return BUSY_POLL_MS
        until = self.poll_timeout_ms / 1000
        due = self._scheduler.next_due()
        if due is not None:
            until = min(until, due - now)
        if self._scheduler.has_ready(now) and self.pacer is not None:
            until = min(until, self.pacer.wait())
        return max(0, int(until * 1000) + 1)

    def _busy(self) -> bool:
        return bool(self._calls_in_flight or self._dead_letters_in_flight)

    def _free_workers(self) -> int:
        if self.inline_calls:
            return INLINE_BATCH
        return self.concurrency - self._calls_in_flight

    def _can_start(self, now: float) -> bool:
        ready = bool(self._prepared) or self._scheduler.has_ready(now)
        return ready and (self.pacer is None or self.pacer.wait() == 0)

    def _take_polled(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in polled.items():
            generation = self._generation.get(tp)
            if generation is None:
                continue  # handed out just before a revocation; the new owner reads it again
            for record in records:
                self._tracker.received(tp, record.offset)
                self._scheduler.add((tp, record.key), _Item(record, tp, generation))
            if self._tracker.uncommitted(tp) >= self.max_uncommitted and tp not in self._paused:
                # Far enough ahead of the committed offset: fetch no more until it moves.
                self._consumer.pause(tp)
                self._paused.add(tp)

    # --- starting work ----------------------------------------------------------------------

    def _prepare_more(self) -> None:
        """Take ready records and prepare them in one bulk step, so that calls are ready before
        workers are free: a worker that finishes gets its next call at once, not after the
        loop has recorded results and read the database again. Up to one call per worker is
        held prepared, besides the free workers' own."""
        if self.stop.is_set() or self._revoking:
            return
        room = self.concurrency + self._free_workers() - len(self._prepared)
        if room <= 0:
            return
        taken = self._scheduler.take(limit=room, now=time.monotonic())
        if not taken:
            return
        fresh = []
        for key, item in taken:
            if item.dead_lettered:
                self._run_dead_letter_hook(key, item)
            elif item.giving_up:
                self._dead_letter(key, item, item.error)
            else:
                fresh.append((key, item))
        if not fresh:
            return
        try:
            steps = self.processor.prepare([item.record for _, item in fresh])
        except Exception as exc:
            # Nothing could be prepared (the database, say): no record is at fault.
            steps = [exc] * len(fresh)
        for (key, item), step in zip(fresh, steps):
            if step is None:
                self._done(key, item)
            elif isinstance(step, BaseException):
                item.attempts += 1
                self._failed(key, item, step)
            else:
                self._prepared.append((key, item, step))

    def _start_calls(self) -> None:
        """Hand prepared calls to free workers, as far as the pacer allows."""
        if self.stop.is_set() or self._revoking:
            return
        while self._prepared and self._free_workers() > 0:
            if self.pacer is not None and self.pacer.wait() > 0:
                return
            key, item, call = self._prepared.popleft()
            if item.generation != self._generation.get(item.tp):
                continue  # its partition went meanwhile
            self._call(key, item, call)

    def _call(self, key: Hashable, item: _Item, call: Call) -> None:
        item.attempts += 1
        item.probe = self.pacer.started() if self.pacer is not None else False
        self._calls_in_flight += 1
        self._in_flight[item.tp] = self._in_flight.get(item.tp, 0) + 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self._calls_in_flight)
        if self.inline_calls:
            # A call that never waits (an in-process client): made here, its outcome taken up
            # with the others, without a worker thread's hand-over per record.
            future: Future = Future()
            try:
                future.set_result(call())
            except Exception as exc:
                future.set_exception(exc)
            self._results.put((_CALL, key, item, future))
            return
        future = self._workers.submit(call)
        future.add_done_callback(functools.partial(self._call_done, key, item))

    def _call_done(self, key: Hashable, item: _Item, future: Future) -> None:
        # On the worker thread: only hand the outcome over.
        self._results.put((_CALL, key, item, future))

    # --- taking results ---------------------------------------------------------------------

    def _drain_results(self, timeout: float = 0.0) -> list[tuple]:
        results = []
        try:
            results.append(self._results.get(timeout=timeout) if timeout else self._results.get_nowait())
            while True:
                results.append(self._results.get_nowait())
        except queue.Empty:
            pass
        return results

    def _take_results(self, results: list[tuple]) -> None:
        self._record(*self._release(results))

    def _release(self, results: list[tuple]) -> tuple[list[tuple], list[tuple]]:
        """Free the workers (and tell the pacer) of finished calls; returns the calls and the
        dead letters whose outcome is still to be recorded."""
        calls, dead_letters = [], []
        for kind, key, item, future in results:
            if kind == _DEAD_LETTER:
                self._dead_letters_in_flight -= 1
                dead_letters.append((key, item, future))
                continue
            self._calls_in_flight -= 1
            if item.tp in self._in_flight:
                self._in_flight[item.tp] -= 1
            error = future.exception()
            if self.pacer is not None:
                if error is None or isinstance(error, NonRetryableError):
                    self.pacer.succeeded(probe=item.probe)
                else:
                    self.pacer.failed(retry_after=getattr(error, "retry_after", None), probe=item.probe)
            calls.append((key, item, None if error is not None else future.result(), error))
        return calls, dead_letters

    def _record(self, calls: list[tuple], dead_letters: list[tuple]) -> None:
        for key, item, future in dead_letters:
            self._dead_letter_done(key, item, future)
        if not calls:
            return
        try:
            outcomes = self.processor.complete([(item.record, value, error) for _, item, value, error in calls])
        except Exception as exc:
            # The outcomes could not be recorded: the calls are made again (an idempotent
            # processor makes that harmless, e.g. by an idempotency key the called system honours).
            outcomes = [exc] * len(calls)
        for (key, item, _, _), outcome in zip(calls, outcomes):
            if item.generation != self._generation.get(item.tp):
                continue  # the partition went meanwhile: its new owner reads the record again
            if outcome is None:
                self._done(key, item)
            else:
                self._failed(key, item, outcome)

    def _done(self, key: Hashable, item: _Item) -> None:
        self._scheduler.finished(key)
        self._tracker.done(item.tp, item.record.offset)
        self.processed_total += 1
        self._window_count += 1
        metrics.EVENTS_CONSUMED.labels(group=self.group_id, topic=item.tp.topic).inc()
        if item.tp in self._paused:
            self._resume_if_room(item.tp)

    def _resume_if_room(self, tp: TopicPartition) -> None:
        if self._tracker.uncommitted(tp) < self.max_uncommitted:
            try:
                self._consumer.resume(tp)
            except IllegalStateError:
                pass  # no longer assigned
            self._paused.discard(tp)

    def _failed(self, key: Hashable, item: _Item, error: BaseException) -> None:
        record = item.record
        if isinstance(error, NonRetryableError):
            self._dead_letter(key, item, f"{type(error).__name__}: {error}")
        elif isinstance(error, RetryableError):
            if item.attempts >= self.max_attempts:
                self._dead_letter(key, item, f"{type(error).__name__}: {error} (after {item.attempts} attempts)")
            else:
                self._retry_later(key, item, f"{type(error).__name__}: {error}", retry_after=error.retry_after)
        else:
            logger.error(
                "%s: unexpected error handling %s: %s: %s",
                self.name,
                _where(record),
                type(error).__name__,
                error,
                exc_info=error,
                extra=self._fields(record),
            )
            # Not the record's fault: retry without limit, but never faster than the backoff.
            self._retry_later(key, item, f"{type(error).__name__}: {error}", limited=False)

    def _retry_later(
        self, key, item: _Item, error: str, *, limited: bool = True, retry_after: float | None = None
    ) -> None:
        delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
        if retry_after:
            delay = max(delay, retry_after)
        self._scheduler.retry_at(key, time.monotonic() + delay)
        limit = f"/{self.max_attempts}" if limited else ""
        logger.warning(
            "%s: attempt %d%s of %s failed (%s); retrying in %.1f s",
            self.name,
            item.attempts,
            limit,
            _where(item.record),
            error,
            delay,
            extra=self._fields(item.record),
        )

    # --- dead letters -----------------------------------------------------------------------

    def _dead_letter(self, key: Hashable, item: _Item, error: str) -> None:
        item.error, item.giving_up = error, True
        if self.dead_letter is None:
            logger.error(
                "%s: dropping %s after %d attempt(s): %s",
                self.name,
                _where(item.record),
                item.attempts,
                error,
                extra=self._fields(item.record),
            )
            item.dead_lettered = True
            self._run_dead_letter_hook(key, item)
            return
        self._dead_letters_in_flight += 1
        future = self._dead_letter_worker.submit(
            self.dead_letter.publish, item.record, error=error, attempts=item.attempts
        )
        future.add_done_callback(lambda f: self._results.put((_DEAD_LETTER, key, item, f)))

    def _dead_letter_done(self, key: Hashable, item: _Item, future: Future) -> None:
        if item.generation != self._generation.get(item.tp):
            return
        error = future.exception()
        if error is not None:
            # Not on the DLT yet (broker down, a record it refused): keep the record and try
            # again later; its key waits, nothing else does.
            delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
            self._scheduler.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
            logger.warning(
                "%s: dead-lettering %s failed (%s: %s); retrying in %.1f s",
                self.name,
                _where(item.record),
                type(error).__name__,
                error,
                delay,
                extra=self._fields(item.record),
            )
            return
        logger.error(
            "%s: dead-lettered %s after %d attempt(s): %s",
            self.name,
            _where(item.record),
            item.attempts,
            item.error,
            extra=self._fields(item.record),
        )
        self.dead_lettered_total += 1
        item.dead_letter_position = future.result()
        metrics.EVENTS_DEAD_LETTERED.labels(group=self.group_id, topic=item.record.topic).inc()
        item.dead_lettered = True
        self._run_dead_letter_hook(key, item)

    def _run_dead_letter_hook(self, key: Hashable, item: _Item) -> None:
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(item.record, item.error, item.attempts, item.dead_letter_position)
            except Exception as exc:
                # On the DLT already: only the hook is tried again, never the send.
                delay = backoff_delay(attempt=2, base=self.backoff_base, cap=self.backoff_max)
                self._scheduler.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
                logger.warning(
                    "%s: after dead-lettering %s: %s: %s; retrying",
                    self.name,
                    _where(item.record),
                    type(exc).__name__,
                    exc,
                    extra=self._fields(item.record),
                )
                return
        self._done(key, item)

    # --- commits and rebalances -------------------------------------------------------------

    def _commit(self, *, force: bool = False) -> None:
        """Commit the partitions whose commit point moved; from the loop thread, not holding
        the lock (the commit needs the I/O thread, which may be revoking under it)."""
        now = time.monotonic()
        if not force and now < self._commit_due:
            return
        self._commit_due = now + COMMIT_INTERVAL
        with self._lock:
            offsets = self._tracker.to_commit()
        if not offsets:
            return
        try:
            self._consumer.commit(_offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner re-reads from the last commit, and
            # the processor's idempotence makes the replay harmless.
            logger.warning("%s: commit failed after a rebalance: %s", self.name, exc)
            with self._lock:
                self._tracker.committed(offsets)
            return
        except KafkaError as exc:
            # A timeout, a rebalance under way or the coordinator moving: the offsets stay to
            # commit, and are tried again at the next interval.
            self._commit_failed(exc)
            return
        self._commit_succeeded()
        with self._lock:
            self._tracker.committed(offsets)

    def _commit_failed(self, exc: Exception) -> None:
        if not self._commit_trouble:
            logger.warning("%s: commit failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
        self._commit_trouble = True

    def _commit_succeeded(self) -> None:
        if self._commit_trouble:
            logger.info("%s: committing again", self.name)
            self._commit_trouble = False

    def _partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            # A partition given back to this consumer keeps kafka-python's fetch position,
            # past records that were fetched but dropped at the revocation: read on from the
            # first record not done with instead.
            resume_at = self._resume_at.pop(tp, None)
            if resume_at is not None:
                self._consumer.seek(tp, resume_at)
        self._resume_at.clear()
        if assigned:
            self.assignments += 1
        logger.info("%s: partitions assigned: %s", self.name, _names(assigned) or "none")

    async def _partitions_revoked(self, revoked: set[TopicPartition], *, lost: bool) -> None:
        """On the I/O thread: no new work starts for these partitions, their calls in flight
        finish and are recorded, what is done is committed (unless the partitions are lost
        already), then they go. Bounded by the drain timeout."""
        if not revoked or self._closing:
            return  # closing: the loop has finished and committed everything itself
        net = self._consumer._net
        ends = time.monotonic() + self.drain_timeout
        while True:
            with self._lock:
                self._revoking |= revoked
                self._take_results(self._drain_results())
                outstanding = sum(self._in_flight.get(tp, 0) for tp in revoked) + self._dead_letters_in_flight
            if not outstanding:
                break
            if time.monotonic() >= ends:
                logger.warning(
                    "%s: %d call(s) still in flight after %.0f s; letting %s go",
                    self.name,
                    outstanding,
                    self.drain_timeout,
                    _names(revoked),
                )
                break
            await net.sleep(0.01)
        if not lost:
            with self._lock:
                offsets = {tp: offset for tp, offset in self._tracker.to_commit().items() if tp in revoked}
            if offsets:
                try:
                    await self._consumer._coordinator._commit_offsets_sync_async(
                        _offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS
                    )
                except KafkaError as exc:
                    self._commit_failed(exc)
                else:
                    self._commit_succeeded()
        with self._lock:
            for tp in revoked:
                point = self._tracker.commit_point(tp)
                if point is not None:
                    self._resume_at[tp] = point
                self._generation.pop(tp, None)
                self._paused.discard(tp)
                self._in_flight.pop(tp, None)
            self._scheduler.drop(lambda key: key[0] in revoked)
            self._prepared = deque(entry for entry in self._prepared if entry[1].tp not in revoked)
            self._tracker.forget(revoked)
            self._revoking -= revoked
        self._forget_partition_gauges(revoked)
        # Results recorded here used a database connection of the I/O thread's own: closed, so
        # no connection outlives the revocation (and none holds up dropping a test database).
        connections.close_all()
        logger.info("%s: partitions %s: %s", self.name, "lost" if lost else "revoked", _names(revoked))

    def _finish_in_flight(self, outstanding: Callable[[], int]) -> None:
        """Take results until `outstanding()` is 0 or the drain timeout passed."""
        ends = time.monotonic() + self.drain_timeout
        while outstanding():
            left = ends - time.monotonic()
            if left <= 0:
                logger.warning(
                    "%s: %d call(s) still in flight after %.0f s; not waiting longer",
                    self.name,
                    outstanding(),
                    self.drain_timeout,
                )
                return
            results = self._drain_results(timeout=min(left, 0.1))
            with self._lock:
                self._take_results(results)

    # --- the loop's plumbing ----------------------------------------------------------------

    def _housekeeping(self) -> None:
        reset_queries()
        now = time.monotonic()
        if now >= self._db_check_due:
            # Drops a broken connection, or one past CONN_MAX_AGE (0: at every check). Once a
            # second, not after every poll: reopening the connection costs more than a batch.
            close_old_connections()
            self._db_check_due = now + DB_CHECK_INTERVAL
        if now >= self._gauges_due:
            self._gauges_due = now + GAUGE_INTERVAL
            self._update_gauges()
        elapsed = now - self._window_start
        if elapsed >= self.stats_interval:
            logger.info(
                "%s: %d record(s) in %.0f s (%.1f/s), %d since start, %d dead-lettered, %d call(s) in flight",
                self.name,
                self._window_count,
                elapsed,
                self._window_count / elapsed,
                self.processed_total,
                self.dead_lettered_total,
                self._calls_in_flight,
            )
            self._window_start, self._window_count = now, 0

    def status(self) -> dict:
        """What the loop holds now: calls in flight, keys waiting on a retry, records done but
        not yet committable per partition, the pacer's state."""
        with self._lock:
            return self._status()

    def _status(self) -> dict:
        return {
            "group_id": self.group_id,
            "concurrency": self.concurrency,
            "calls_in_flight": self._calls_in_flight,
            "retries_waiting": self._scheduler.waiting,
            "records_queued": self._scheduler.queued,
            "calls_prepared": len(self._prepared),
            "breaker": self.pacer.state if self.pacer is not None else None,
            "partitions": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "commit_point": self._tracker.commit_point(tp),
                    "uncommitted": self._tracker.uncommitted(tp),
                    "done_uncommitted": self._tracker.done_ahead(tp),
                    "paused": tp in self._paused,
                }
                for tp in sorted(self._tracker.partitions())
            ],
        }

    def _update_gauges(self) -> None:
        group = self.group_id
        with self._lock:
            status = self.status()
            done_ahead = {tp: self._tracker.done_ahead(tp) for tp in self._tracker.partitions()}
            commit_points = {tp: self._tracker.commit_point(tp) for tp in done_ahead}
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(group).set(status["calls_in_flight"])
        metrics.CONSUMER_RETRIES_WAITING.labels(group).set(status["retries_waiting"])
        if self.pacer is not None:
            metrics.CONSUMER_BREAKER_STATE.labels(group).set(STATE_VALUES[self.pacer.state])
        for tp, count in done_ahead.items():
            metrics.CONSUMER_DONE_UNCOMMITTED.labels(group, tp.topic, str(tp.partition)).set(count)
            self._uncommitted_partitions.add(tp)
        self._update_lag(commit_points)
        if self.member is not None:
            try:
                consumer_state_record(member=self.member, state=status)
            except Exception as exc:
                logger.warning("%s: status not recorded: %s: %s", self.name, type(exc).__name__, exc)

    def _fields(self, record: ConsumerRecord) -> dict:
        """The record's coordinates as structured log fields (`extra=`), for the JSON log format."""
        fields = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        event_id = next(
            (value for name, value in record.headers or [] if name == "event_id" and value is not None), None
        )
        if event_id is not None:
            fields["event_id"] = event_id.decode("utf-8", "replace")
        if self.log_fields is not None:
            fields.update(self.log_fields(record))
        return fields

    def _update_lag(self, commit_points: dict[TopicPartition, int | None]) -> None:
        """Set the lag gauges from the consumer's own view, which costs no broker round trip:
        the highwater comes with every fetch response, and the commit point is known locally
        (records fetched but not done with are lag too: a crash would read them again)."""
        for tp in self._consumer.assignment():
            try:
                highwater = self._consumer.highwater(tp)
                position = commit_points.get(tp)
                if position is None and highwater is not None:
                    position = self._consumer.position(tp, timeout_ms=0)
            except (IllegalStateError, KafkaError):
                continue
            if position is None:
                continue
            metrics.CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(max(0, highwater - position))
            self._lag_partitions.add(tp)

    def _forget_partition_gauges(self, partitions) -> None:
        """Partitions this consumer no longer owns: their figures are the new owner's to report."""
        for gauge, owned in (
            (metrics.CONSUMER_LAG, self._lag_partitions),
            (metrics.CONSUMER_DONE_UNCOMMITTED, self._uncommitted_partitions),
        ):
            for tp in set(partitions) & owned:
                owned.discard(tp)
                try:
                    gauge.remove(self.group_id, tp.topic, str(tp.partition))
                except KeyError:
                    pass

    def _close(self) -> None:
        if self._consumer is None:
            return
        # No new work starts (the stop flag is set, or the loop failed); what is in flight
        # finishes and is recorded before the final commit. Leaving the group revokes the
        # partitions once more: by then everything is committed.
        self._closing = True
        self._finish_in_flight(lambda: self._calls_in_flight or self._dead_letters_in_flight)
        try:
            self._commit(force=True)
        except KafkaError as exc:
            logger.error("%s: final commit failed: %s", self.name, exc)
        self._forget_partition_gauges(list(self._lag_partitions | self._uncommitted_partitions))
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(self.group_id).set(0)
        metrics.CONSUMER_RETRIES_WAITING.labels(self.group_id).set(0)
        if self.member is not None:
            try:
                consumer_state_forget(member=self.member)
            except Exception as exc:
                logger.warning("%s: status not removed: %s: %s", self.name, type(exc).__name__, exc)
        self._consumer.close(autocommit=False)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._dead_letter_worker.shutdown(wait=False, cancel_futures=True)
        if self.dead_letter is not None:
            self.dead_letter.close()
        logger.info("%s: stopped after %d record(s); left group %s", self.name, self.processed_total, self.group_id)


def _unpark_resumed_partitions(consumer: KafkaConsumer) -> None:
    """kafka-python 3.0 parks the fetched records of a paused partition and, once it is resumed,
    puts them back in line only when its in-line slot is empty (None); but a drained record set
    stays in that slot, so a resumed partition would never be read (nor fetched) again. Clear a
    drained slot while records of a resumed partition are parked. On the loop thread, the one
    that reads the fetcher's records."""
    fetcher = getattr(consumer, "_fetcher", None)
    parked = getattr(fetcher, "_paused_partition_records", None)
    if not parked or all(consumer._subscription.is_paused(tp) for tp in list(parked)):
        return
    current = fetcher._next_partition_records
    if current is not None and not current:
        fetcher._next_partition_records = None


def _offsets(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def _fatal(exc: KafkaError) -> bool:
    """Errors no retry can cure (refused credentials, no permission): the command reports
    them and exits."""
    return isinstance(exc, (SaslAuthenticationFailedError, AuthorizationError))


def _where(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
