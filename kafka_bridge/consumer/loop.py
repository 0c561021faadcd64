"""A Kafka consumer loop with per-key ordered concurrency, at-least-once delivery, retries and a
dead-letter topic: the `@KafkaListener` of this project, without its one-call-per-partition
ceiling.

Records with the same key (within a partition) are handled one at a time in offset order;
records with different keys run in parallel, up to `concurrency` calls at once, within a
partition and across partitions. The loop thread does everything but the calls: it polls
(so the consumer stays in its group however slow the calls are), asks the processor to
prepare what it took (one bulk step), hands the calls to the event loop thread (coroutines) or
worker threads (blocking calls), hands their results back to the processor (one bulk step),
and commits.

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

The loop composes its parts, each of which owns its state behind a small interface (see the
package's `__init__`); it is given its consumer by a factory (`consumer_factory`), so that its
behaviour can be tested with an in-memory consumer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence

from django.conf import settings
from django.db import close_old_connections, connections, reset_queries
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError
from kafka.structs import TopicPartition

from kafka_bridge.consumer.api import DeadLetterHook, LogFields, RecordProcessor
from kafka_bridge.consumer.dead_letters import DeadLetterPublisher
from kafka_bridge.consumer.dispatch import CallResult, DeadLetterResult, Dispatcher, Item
from kafka_bridge.consumer.failures import FailurePolicy
from kafka_bridge.consumer.kafka_client import KafkaLoopConsumer, LoopConsumer
from kafka_bridge.consumer.pacing import Pacer
from kafka_bridge.consumer.partitions import Partitions, partition_names
from kafka_bridge.consumer.reporting import Reporter
from kafka_bridge.consumer.state import consumer_member_name
from kafka_bridge.runner import StopFlag
from kafka_bridge.tracing import call_in_span, message_process_span, span_let_go

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# Seconds between checks of the database connections (broken, or older than CONN_MAX_AGE).
DB_CHECK_INTERVAL = 1.0
# Seconds between the loop's housekeeping (the statements DEBUG keeps, the gauges, the stats line).
HOUSEKEEPING_INTERVAL = 0.05
# While calls are in flight and enough records are on hand, the loop waits for results instead of
# polling Kafka, for at most this many seconds between polls.
POLL_GAP = 0.05
# Results are recorded in batches of twice the calls that may run at once (at most this many), or
# once the oldest waited this many seconds: a record transaction costs mostly per batch, and it
# holds the loop thread, which meanwhile neither polls nor prepares. A result waits for its batch
# even when nothing else is in flight: at a trickle, a transaction per export would keep the
# loop busy while the next records wait on the broker.
MAX_RECORD_BATCH = 250
RECORD_INTERVAL = 0.05

# Makes the loop's consumer when it starts: a `KafkaLoopConsumer` in its group unless a test
# gives it another.
ConsumerFactory = Callable[[], LoopConsumer]


class ConsumerLoop:
    """Polls `topics` in `group_id` and hands the records to `processor`: its `prepare` gives the
    calls to make on worker threads, its `complete` records what they did."""

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        stop: StopFlag,
        processor: RecordProcessor,
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
        consumer_factory: ConsumerFactory | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.topics = list(topics)
        self.group_id = group_id
        self.processor = processor
        self.stop = stop
        self.name = name
        self.concurrency = concurrency
        self.pacer = pacer
        self.poll_timeout_ms = poll_timeout_ms or settings.KAFKA_CONSUMER_POLL_TIMEOUT_MS
        # How long a stop or a revocation waits for the calls in flight; the processor's own
        # deadline per call should be shorter.
        self.drain_timeout = drain_timeout
        self.consumer_factory = consumer_factory or (lambda: KafkaLoopConsumer(group_id=group_id))
        # The loop's state is the loop thread's, except while partitions are revoked: that runs
        # on the consumer's I/O thread. Held by the loop thread for each step but the network
        # calls that need the I/O thread (a commit), so the two never wait on each other.
        self._lock = threading.RLock()
        self._closing = False
        self._broker_trouble_since = 0.0
        self._db_check_due = 0.0
        self._poll_due = 0.0
        self._housekeeping_due = 0.0
        # Ended calls whose results are not recorded yet (see `_record_held`), since when.
        self._held: list[CallResult] = []
        self._held_since = 0.0
        self.record_batch = min(2 * concurrency, MAX_RECORD_BATCH)
        self._consumer: LoopConsumer | None = None
        self._partitions = Partitions(
            name=name, max_uncommitted=max_uncommitted or max(1000, 4 * concurrency), lock=self._lock
        )
        self._dispatcher = Dispatcher(name=name, concurrency=concurrency, pacer=pacer)
        self._failures = FailurePolicy(
            name=name,
            group_id=group_id,
            dispatcher=self._dispatcher,
            dead_letter=dead_letter,
            on_dead_letter=on_dead_letter,
            max_attempts=max_attempts,
            backoff_base=(
                backoff_base if backoff_base is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS / 1000
            ),
            backoff_max=(
                backoff_max if backoff_max is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS / 1000
            ),
            log_fields=log_fields,
        )
        self._reporter = Reporter(
            name=name,
            group_id=group_id,
            stats_interval=stats_interval or settings.KAFKA_CONSUMER_STATS_INTERVAL,
            # Recorded in the database once a second (`ConsumerState`), for the admin's status
            # page in the web process, which cannot see this process's gauges.
            member=consumer_member_name(name) if report_status else None,
            status=self.status,
        )

    # --- what its users see -----------------------------------------------------------------

    @property
    def processed_total(self) -> int:
        return self._reporter.processed_total

    @property
    def dead_lettered_total(self) -> int:
        return self._failures.dead_lettered_total

    @property
    def dead_letters_cut_total(self) -> int:
        return self._failures.dead_letters_cut_total

    @property
    def assignments(self) -> int:
        """How many times the group handed this consumer a non-empty set of partitions."""
        return self._partitions.assignments

    @property
    def max_in_flight_seen(self) -> int:
        return self._dispatcher.max_in_flight_seen

    @property
    def member(self) -> str | None:
        return self._reporter.member

    def status(self) -> dict:
        """What the loop holds now: calls in flight, keys waiting on a retry, records done but
        not yet committable per partition, the pacer's state."""
        with self._lock:
            return {
                "group_id": self.group_id,
                "concurrency": self.concurrency,
                **self._dispatcher.status(),
                "breaker": self.pacer.state if self.pacer is not None else None,
                "partitions": self._partitions.status(),
            }

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        self._open()
        try:
            while not self.stop.is_set():
                try:
                    polled = self._poll() if self._records_wanted() else self._wait_for_results()
                    with self._lock:
                        self._take_polled(polled)
                        calls, dead_letters = self._dispatcher.results()
                        # Free slots get prepared calls first; recording what finished (a
                        # transaction) and preparing more (a read) come after, each in batches.
                        self._start_calls()
                        self._record_dead_letters(dead_letters)
                        self._hold(calls)
                        self._record_held()
                        self._prepare_more()
                        self._start_calls()
                    self._partitions.commit()
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

    def _open(self) -> None:
        """The workers, the dead-letter thread and the consumer, subscribed."""
        self._dispatcher.open()
        self._consumer = self.consumer_factory()
        self._partitions.attach(self._consumer)
        self._reporter.attach(self._consumer)
        self._consumer.subscribe(self.topics, listener=self)
        logger.info(
            "%s: consuming %s in group %s, up to %d call(s) at once",
            self.name,
            ",".join(self.topics),
            self.group_id,
            self.concurrency,
        )

    def _records_wanted(self) -> bool:
        """Poll Kafka when the records on hand run low (fewer than the calls that may run at
        once), when nothing is in flight, or at least every `POLL_GAP` (the group's rebalances
        are handled in the poll). Otherwise the loop waits for results instead: each poll costs
        the client's coordinator check and a hand-off to its I/O thread, records or none."""
        now = time.monotonic()
        if (
            now >= self._poll_due
            or not self._dispatcher.busy()
            or self._dispatcher.records_on_hand() < self.concurrency
        ):
            self._poll_due = now + POLL_GAP
            return True
        return False

    def _wait_for_results(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Until a call ends, a retry is due, the held results are due to be recorded or the next
        poll is: woken by the result itself, not by a poll's timeout."""
        cap = self._poll_due - time.monotonic()
        if self._held:
            cap = min(cap, self._held_since + RECORD_INTERVAL - time.monotonic())
        self._dispatcher.wait(timeout=self._dispatcher.idle_for(cap=cap))
        return {}

    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        timeout_ms = self._dispatcher.poll_timeout_ms(idle_ms=self.poll_timeout_ms)
        if self._held:
            # Back in time to record the held results.
            due = self._held_since + RECORD_INTERVAL - time.monotonic()
            timeout_ms = min(timeout_ms, max(0, int(due * 1000) + 1))
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            # The broker is unreachable or the group coordinator moved: keep the consumer and
            # try again; it reconnects by itself. Nothing was handed out, so nothing is lost.
            if not self._broker_trouble_since:
                self._broker_trouble_since = time.monotonic()
                logger.warning("%s: poll failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
            self.stop.wait(0.5 if self._dispatcher.busy() else 1.0)
            return {}
        if self._broker_trouble_since:
            logger.info(
                "%s: polling again after %.0f s of broker trouble",
                self.name,
                time.monotonic() - self._broker_trouble_since,
            )
            self._broker_trouble_since = 0.0
        return polled

    def _take_polled(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in polled.items():
            generation = self._partitions.generation(tp)
            if generation is None:
                continue  # handed out just before a revocation; the new owner reads it again
            for record in records:
                self._partitions.received(tp, record.offset)
                item = Item(record, tp, generation)
                # From its arrival to its end (exported, dropped as a duplicate, dead-lettered):
                # waits, retries and calls included.
                item.trace = message_process_span(
                    destination=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    headers=record.headers,
                    consumer_group=self.group_id,
                )
                self._dispatcher.add((tp, record.key), item)
            self._partitions.pause_if_full(tp)

    def _prepare_more(self) -> None:
        """Take ready records and prepare them in one bulk step, so that calls are ready before
        workers are free: a worker that finishes gets its next call at once, not after the
        loop has recorded results and read the database again."""
        if self.stop.is_set() or self._partitions.revoking:
            return
        taken = self._dispatcher.take(now=time.monotonic())
        if not taken:
            return
        fresh = []
        for key, item in taken:
            if item.dead_lettered:
                done = self._failures.run_hook(key, item)
            elif item.giving_up:
                done = self._failures.dead_letter(key, item, item.error)
            else:
                fresh.append((key, item))
                continue
            if done:
                self._done(key, item)
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
                self._dispatcher.hold(key, item, call_in_span(step, item.trace))

    def _start_calls(self) -> None:
        if self.stop.is_set() or self._partitions.revoking:
            return
        self._dispatcher.start_calls(current=self._partitions.current)

    def _hold(self, calls: list[CallResult]) -> None:
        if calls and not self._held:
            self._held_since = time.monotonic()
        self._held.extend(calls)

    def _record_held(self) -> None:
        """Record the results held, in one transaction, once there are `record_batch` of them,
        the oldest waited `RECORD_INTERVAL`, or the loop is stopping: a record transaction's cost
        is mostly per batch. A held record's key and commit point wait for it; its slot does not
        (it was freed when its call ended)."""
        if not self._held:
            return
        if (
            len(self._held) >= self.record_batch
            or time.monotonic() - self._held_since >= RECORD_INTERVAL
            or self.stop.is_set()
            or self._partitions.revoking
        ):
            self._record([], [])

    def _record_dead_letters(self, dead_letters: list[DeadLetterResult]) -> None:
        for key, item, future in dead_letters:
            if not self._partitions.current(item):
                span_let_go(item.trace)
            elif self._failures.dead_letter_sent(key, item, future):
                self._done(key, item)

    def _record(self, calls: list[CallResult], dead_letters: list[DeadLetterResult]) -> None:
        """Record the dead letters sent and the calls ended, with the results held before them."""
        self._record_dead_letters(dead_letters)
        if self._held:
            calls, self._held = self._held + calls, []
        if not calls:
            return
        try:
            outcomes = self.processor.complete([(item.record, value, error) for _, item, value, error in calls])
        except Exception as exc:
            # The outcomes could not be recorded: the calls are made again (an idempotent
            # processor makes that harmless, e.g. by an idempotency key the called system honours).
            outcomes = [exc] * len(calls)
        for (key, item, _, _), outcome in zip(calls, outcomes):
            if not self._partitions.current(item):
                span_let_go(item.trace)  # the partition went meanwhile: its new owner reads it again
                continue
            if outcome is None:
                self._done(key, item)
            else:
                self._failed(key, item, outcome)

    def _failed(self, key: Hashable, item: Item, error: BaseException) -> None:
        if self._failures.failed(key, item, error):
            self._done(key, item)

    def _done(self, key: Hashable, item: Item) -> None:
        if item.trace is not None:
            item.trace.end()
        self._dispatcher.finished(key)
        self._reporter.record_done(item.tp)
        self._partitions.done(item.tp, item.record.offset)

    def _trouble(self, exc: Exception) -> None:
        logger.error("%s: %s: %s; going on in 1 s", self.name, type(exc).__name__, exc, exc_info=exc)
        self.stop.wait(1.0)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._housekeeping_due:
            return
        self._housekeeping_due = now + HOUSEKEEPING_INTERVAL
        # The statements DEBUG keeps per connection (asgiref's locals make this cost a few µs:
        # not once per pass, which may be once per finished call).
        reset_queries()
        if now >= self._db_check_due:
            # Drops a broken connection, or one past CONN_MAX_AGE (0: at every check). Once a
            # second, not after every poll: reopening the connection costs more than a batch.
            close_old_connections()
            self._db_check_due = now + DB_CHECK_INTERVAL
        self._reporter.report(
            now=now,
            dead_lettered=self._failures.dead_lettered_total,
            calls_in_flight=self._dispatcher.calls_in_flight,
        )

    def _finish_in_flight(self) -> None:
        """Take results until nothing is in flight or the drain timeout passed."""
        ends = time.monotonic() + self.drain_timeout
        while self._dispatcher.busy():
            left = ends - time.monotonic()
            if left <= 0:
                logger.warning(
                    "%s: %d call(s) still in flight after %.0f s; not waiting longer",
                    self.name,
                    self._dispatcher.handed or self._dispatcher.dead_letters_in_flight,
                    self.drain_timeout,
                )
                return
            results = self._dispatcher.results(timeout=min(left, 0.1))
            with self._lock:
                self._record(*results)

    def _close(self) -> None:
        if self._consumer is None:
            return
        # No new work starts (the stop flag is set, or the loop failed); what is in flight
        # finishes and is recorded before the final commit. Leaving the group revokes the
        # partitions once more: by then everything is committed.
        self._closing = True
        with self._lock:
            self._dispatcher.recall_waiting()
        self._finish_in_flight()
        try:
            self._partitions.commit(force=True)
        except KafkaError as exc:
            logger.error("%s: final commit failed: %s", self.name, exc)
        self._reporter.stop()
        self._consumer.close()
        self._dispatcher.shutdown(before_loop_stops=getattr(self.processor, "aclose", None))
        self._failures.close()
        logger.info("%s: stopped after %d record(s); left group %s", self.name, self.processed_total, self.group_id)

    # --- rebalances (the consumer's listener) -----------------------------------------------

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """While the loop thread waits in `poll()`: a new generation of each partition."""
        with self._lock:
            self._partitions.assigned(assigned)

    async def partitions_revoked(self, revoked: set[TopicPartition], *, lost: bool) -> None:
        """While the loop thread waits in `poll()`: no new work starts for these partitions,
        their calls in flight finish and are recorded, what is done is committed (unless the
        partitions are lost already), then they go. Bounded by the drain timeout."""
        if not revoked or self._closing:
            return  # closing: the loop has finished and committed everything itself
        await self._drain_revoked(revoked)
        if not lost:
            await self._partitions.commit_revoked(revoked)
        with self._lock:
            self._partitions.let_go(revoked)
            self._dispatcher.forget(revoked)
        self._reporter.forget(revoked)
        # Results recorded here used a database connection of the I/O thread's own: closed, so
        # no connection outlives the revocation (and none holds up dropping a test database).
        connections.close_all()
        logger.info("%s: partitions %s: %s", self.name, "lost" if lost else "revoked", partition_names(revoked))

    async def _drain_revoked(self, revoked: set[TopicPartition]) -> None:
        """Take and record results until the revoked partitions' calls (and the dead letters) in
        flight are done with, or the drain timeout passed; the consumer's sleep in between keeps
        its heartbeats going."""
        ends = time.monotonic() + self.drain_timeout
        with self._lock:
            self._dispatcher.recall_waiting()
        while True:
            with self._lock:
                self._partitions.revoke(revoked)
                self._record(*self._dispatcher.results())
                outstanding = self._dispatcher.outstanding(revoked)
            if not outstanding:
                break
            if time.monotonic() >= ends:
                logger.warning(
                    "%s: %d call(s) still in flight after %.0f s; letting %s go",
                    self.name,
                    outstanding,
                    self.drain_timeout,
                    partition_names(revoked),
                )
                break
            await self._consumer.rebalance_sleep(0.01)


def _fatal(exc: KafkaError) -> bool:
    """Errors no retry can cure (refused credentials, no permission): the command reports
    them and exits."""
    return isinstance(exc, (SaslAuthenticationFailedError, AuthorizationError))
