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

The loop is this module's `ConsumerLoop`, in parts of their own: `consumer_polling` (the polls),
`consumer_calls` (preparing records, their calls on worker threads, recording their results),
`consumer_failures` (retries and dead letters), `consumer_partitions` (commits and rebalances)
and `consumer_reporting` (gauges, status, stats line). What its users give it and see of it is in
`consumer_api`, re-exported here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, reset_queries
from kafka import KafkaConsumer
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError
from kafka.structs import TopicPartition

from kafka_bridge.consumer_api import (
    Call,
    CallEach,
    DeadLetterHook,
    LogFields,
    NonRetryableError,
    RecordHandler,
    RecordProcessor,
    RetryableError,
    backoff_delay,
    consumer_config,
)
from kafka_bridge.consumer_calls import CallsMixin, Item
from kafka_bridge.consumer_failures import FailuresMixin
from kafka_bridge.consumer_partitions import PartitionsMixin, Rebalances
from kafka_bridge.consumer_polling import PollingMixin
from kafka_bridge.consumer_reporting import ReportingMixin
from kafka_bridge.consumer_state import consumer_member_name
from kafka_bridge.dead_letter import DeadLetterPublisher
from kafka_bridge.pacing import Pacer
from kafka_bridge.runner import StopFlag
from kafka_bridge.scheduling import KeyScheduler
from kafka_bridge.tracking import OffsetTracker

__all__ = [
    "Call",
    "CallEach",
    "ConsumerLoop",
    "DeadLetterHook",
    "LogFields",
    "NonRetryableError",
    "RecordHandler",
    "RecordProcessor",
    "RetryableError",
    "backoff_delay",
    "consumer_config",
]

logger = logging.getLogger(__name__)

# Seconds between checks of the database connections (broken, or older than CONN_MAX_AGE).
DB_CHECK_INTERVAL = 1.0


class ConsumerLoop(PollingMixin, CallsMixin, FailuresMixin, PartitionsMixin, ReportingMixin):
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
        self._init_state(report_status=report_status)

    def _init_state(self, *, report_status: bool) -> None:
        """The counters and the state that the loop's parts (its mixins' modules) share, all set
        here so that they read in one place."""
        # Recorded in the database once a second (`ConsumerState`), for the admin's status page
        # in the web process, which cannot see this process's gauges.
        self.member = consumer_member_name(self.name) if report_status else None
        self.processed_total = 0
        self.dead_lettered_total = 0
        self.dead_letters_cut_total = 0
        # How many times the group handed this consumer a non-empty set of partitions: 1 in a
        # run without rebalances.
        self.assignments = 0
        self.max_in_flight_seen = 0

        self._tracker = OffsetTracker()
        self._scheduler: KeyScheduler[Item] = KeyScheduler()
        self._generation: dict[TopicPartition, int] = {}
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        # The loop's state is the loop thread's, except while partitions are revoked: that runs
        # on kafka-python's I/O thread. Held by the loop thread for each step but the network
        # calls that need the I/O thread (a commit), so the two never wait on each other.
        self._lock = threading.RLock()
        self._revoking: set[TopicPartition] = set()
        # Calls prepared and waiting for a free worker: (key, item, call).
        self._prepared: deque[tuple[Hashable, Item, Call]] = deque()
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
        self._open()
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

    def _open(self) -> None:
        """The workers, the dead-letter thread and the consumer, subscribed."""
        self._workers = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.name}-call")
        self._dead_letter_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-dlt")
        self._consumer = KafkaConsumer(**consumer_config(group_id=self.group_id))
        self._consumer.subscribe(self.topics, listener=Rebalances(self))
        logger.info(
            "%s: consuming %s in group %s, up to %d call(s) at once",
            self.name,
            ",".join(self.topics),
            self.group_id,
            self.concurrency,
        )

    def _trouble(self, exc: Exception) -> None:
        logger.error("%s: %s: %s; going on in 1 s", self.name, type(exc).__name__, exc, exc_info=exc)
        self.stop.wait(1.0)

    def _housekeeping(self) -> None:
        reset_queries()
        now = time.monotonic()
        if now >= self._db_check_due:
            # Drops a broken connection, or one past CONN_MAX_AGE (0: at every check). Once a
            # second, not after every poll: reopening the connection costs more than a batch.
            close_old_connections()
            self._db_check_due = now + DB_CHECK_INTERVAL
        self._report(now=now)

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
        self._stop_reporting()
        self._consumer.close(autocommit=False)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._dead_letter_worker.shutdown(wait=False, cancel_futures=True)
        if self.dead_letter is not None:
            self.dead_letter.close()
        logger.info("%s: stopped after %d record(s); left group %s", self.name, self.processed_total, self.group_id)


def _fatal(exc: KafkaError) -> bool:
    """Errors no retry can cure (refused credentials, no permission): the command reports
    them and exits."""
    return isinstance(exc, (SaslAuthenticationFailedError, AuthorizationError))
