"""A Kafka consumer loop with at-least-once delivery, retries and a dead-letter topic: the
`@KafkaListener` of this project.

Auto-commit is off. A record's offset is committed only after its handler returned (or the
record was dead-lettered), so a crash redelivers what was not finished, never skips it.
Handlers must therefore be idempotent.

What a handler raises decides what happens to the record:
- `RetryableError`: retried with exponential backoff and jitter, up to `max_attempts`, then
  dead-lettered. While it waits, its partition is paused and the loop keeps polling, so the
  consumer stays in the group (no `max_poll_interval_ms` overrun, no rebalance) and the other
  partitions keep moving. Records after it on the same partition wait: per-key order holds.
- `NonRetryableError`: dead-lettered at once.
- anything else (a database outage, a bug): retried with backoff for as long as it takes,
  never dead-lettered, since the record itself is not at fault.

With a `batch_handler`, each poll's records go to it together first (one database
transaction and bulk writes for many records, instead of a few per record). It returns the
records it did not finish; on each partition, everything from the first of those on goes
through the one-record path above, in order, so retries, dead-lettering and per-key order are
exactly those of the one-record path. Offsets are committed after the batch is done with.

The loop checks a stop flag between records; on a stop it finishes the record in hand,
commits, closes the consumer (which leaves the group, so the partitions move at once), and
returns.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, reset_queries
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, IllegalStateError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_bridge import metrics
from kafka_bridge.client import connection_config
from kafka_bridge.dead_letter import DeadLetterPublisher
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)

# Seconds between checks of the database connections (broken, or older than CONN_MAX_AGE).
DB_CHECK_INTERVAL = 1.0

RecordHandler = Callable[[ConsumerRecord], None]


@dataclass(frozen=True)
class Unfinished:
    """A record the batch handler did not finish. `error` is what handling it raised, if it was
    tried (the loop retries or dead-letters it as if the record handler had raised it); None
    when it was not tried (the record handler takes it)."""

    record: ConsumerRecord
    error: Exception | None = None


# Takes a poll's records (in partition order within each partition) and a `keep_going()` to ask
# before each unit of work after the first; returns the records it did not finish. On each
# partition, the first of them and everything after it go the one-record way, unless the batch
# ran out of time before trying it: then the partition is read again from there.
BatchHandler = Callable[[list[ConsumerRecord], Callable[[], bool]], Collection[Unfinished]]
DeadLetterHook = Callable[[ConsumerRecord, str, int], None]
LogFields = Callable[[ConsumerRecord], dict]


class RetryableError(Exception):
    """The record may succeed later: retry it with backoff, then dead-letter it."""


class NonRetryableError(Exception):
    """No retry can help this record: dead-letter it at once."""


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


@dataclass
class _Retry:
    offset: int
    attempts: int
    due: float
    error: str


class _Rebalances(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop):
        self.loop = loop

    def on_partitions_revoked(self, revoked):
        # The new owner starts from the last commit; retry state here would be stale.
        for tp in revoked:
            self.loop._retries.pop(tp, None)
        self.loop._forget_lag(revoked)
        if revoked:
            logger.info("%s: partitions revoked: %s", self.loop.name, _names(revoked))

    def on_partitions_assigned(self, assigned):
        if assigned:
            self.loop.assignments += 1
        logger.info("%s: partitions assigned: %s", self.loop.name, _names(assigned) or "none")


def _names(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


class ConsumerLoop:
    """Polls `topics` in `group_id` and calls `handler` for each record, in partition order."""

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: RecordHandler,
        stop: StopFlag,
        batch_handler: BatchHandler | None = None,
        name: str = "consumer",
        dead_letter: DeadLetterPublisher | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        max_attempts: int | None = None,
        backoff_base: float | None = None,
        backoff_max: float | None = None,
        poll_timeout_ms: int | None = None,
        stats_interval: float | None = None,
        log_fields: LogFields | None = None,
        batch_time_budget: float | None = None,
    ):
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.batch_handler = batch_handler
        self.stop = stop
        self.name = name
        self.dead_letter = dead_letter
        self.on_dead_letter = on_dead_letter
        self.max_attempts = max_attempts or settings.EXPORT_MAX_ATTEMPTS
        self.backoff_base = backoff_base if backoff_base is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS / 1000
        self.backoff_max = backoff_max if backoff_max is not None else settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS / 1000
        self.poll_timeout_ms = poll_timeout_ms or settings.KAFKA_CONSUMER_POLL_TIMEOUT_MS
        self.stats_interval = stats_interval or settings.KAFKA_CONSUMER_STATS_INTERVAL
        # Seconds a batch may keep taking on work: half the max poll interval by default.
        self.batch_time_budget = (
            batch_time_budget if batch_time_budget is not None else settings.KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS / 2000
        )
        # What the handler's domain knows about a record (e.g. its order id), added to the
        # structured fields of the loop's own log lines about it.
        self.log_fields = log_fields
        self.processed_total = 0
        self.dead_lettered_total = 0
        # How many times the group handed this consumer a non-empty set of partitions: 1 in a
        # run without rebalances.
        self.assignments = 0
        self._retries: dict[TopicPartition, _Retry] = {}
        self._window_start = time.monotonic()
        self._window_count = 0
        self._broker_trouble_since = 0.0
        self._db_check_due = 0.0
        self._lag_partitions: set[TopicPartition] = set()
        self._consumer: KafkaConsumer | None = None

    def run(self) -> None:
        self._consumer = KafkaConsumer(**consumer_config(group_id=self.group_id))
        self._consumer.subscribe(self.topics, listener=_Rebalances(self))
        logger.info("%s: consuming %s in group %s", self.name, ",".join(self.topics), self.group_id)
        pending: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            while not self.stop.is_set():
                self._resume_due_partitions()
                polled = self._poll()
                if polled:
                    self._handle_polled(polled, pending)
                self._commit(pending)
                self._after_batch()
        finally:
            self._close(pending)

    def _handle_polled(
        self, polled: dict[TopicPartition, list[ConsumerRecord]], pending: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        left, errors = self._handle_batch(polled, pending) if self.batch_handler is not None else (polled, {})
        for tp, records in left.items():
            for record in records:
                if self.stop.is_set() or not self._process(tp, record, errors.get((tp, record.offset))):
                    break
                self._done(tp, [record], pending)
            if self.stop.is_set():
                break

    def _handle_batch(
        self, polled: dict[TopicPartition, list[ConsumerRecord]], pending: dict[TopicPartition, OffsetAndMetadata]
    ) -> tuple[dict[TopicPartition, list[ConsumerRecord]], dict[tuple[TopicPartition, int], Exception]]:
        """Give the batch handler every record of partitions with no retry under way. Returns,
        per partition, the records the one-record path must take, in order, and the errors the
        batch handler already met for some of them."""
        # A partition with a retry under way has a record whose attempts the one-record path
        # counts: it stays on that path until that record is done with.
        left = {tp: records for tp, records in polled.items() if tp in self._retries}
        batch = [record for tp, records in polled.items() if tp not in self._retries for record in records]
        if not batch or self.stop.is_set():
            return left, {}
        # A batch stops taking on work well within max_poll_interval_ms, so a slow platform
        # never costs the consumer its place in the group.
        ends = time.monotonic() + self.batch_time_budget

        def keep_going() -> bool:
            return not self.stop.is_set() and time.monotonic() < ends

        try:
            unfinished = self.batch_handler(batch, keep_going)
        except Exception as exc:
            # The batch as a whole failed (the database, say): none of it is recorded as done,
            # and the one-record path finds out which record is at fault, if any.
            logger.warning(
                "%s: a batch of %d record(s) failed (%s: %s); handling them one by one",
                self.name, len(batch), type(exc).__name__, exc,
            )
            return polled, {}
        cuts: dict[TopicPartition, int] = {}
        errors: dict[tuple[TopicPartition, int], Exception] = {}
        for item in unfinished:
            tp = TopicPartition(item.record.topic, item.record.partition)
            cuts[tp] = min(item.record.offset, cuts.get(tp, item.record.offset))
            if item.error is not None:
                errors[(tp, item.record.offset)] = item.error
        out_of_time = not keep_going() and not self.stop.is_set()
        for tp, records in polled.items():
            if tp in left:
                continue
            cut = cuts.get(tp)
            if cut is None:
                self._done(tp, records, pending)
                continue
            self._done(tp, [record for record in records if record.offset < cut], pending)
            if out_of_time and (tp, cut) not in errors:
                # Not tried for lack of time: the next poll hands it to a new batch.
                self._consumer.seek(tp, cut)
                continue
            left[tp] = [record for record in records if record.offset >= cut]
        return left, errors

    def _done(self, tp: TopicPartition, records: list[ConsumerRecord], pending: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not records:
            return
        pending[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        self.processed_total += len(records)
        self._window_count += len(records)
        metrics.EVENTS_CONSUMED.labels(group=self.group_id, topic=tp.topic).inc(len(records))

    # --- one record -------------------------------------------------------------------------

    def _process(self, tp: TopicPartition, record: ConsumerRecord, error: Exception | None = None) -> bool:
        """Handle `record` (or act on `error`, what handling it already raised); True when it is
        done with (handled or dead-lettered), False when its partition was paused to retry it."""
        retry = self._retries.get(tp)
        attempt = retry.attempts + 1 if retry and retry.offset == record.offset else 1
        try:
            if error is not None:
                raise error
            self.handler(record)
        except NonRetryableError as exc:
            return self._give_up(tp, record, f"{type(exc).__name__}: {exc}", attempt)
        except RetryableError as exc:
            if attempt >= self.max_attempts:
                return self._give_up(tp, record, f"{type(exc).__name__}: {exc} (after {attempt} attempts)", attempt)
            return self._retry_later(tp, record, attempt, f"{type(exc).__name__}: {exc}", self.backoff_max)
        except Exception as exc:
            logger.exception("%s: unexpected error handling %s", self.name, _where(record), extra=self._fields(record))
            # Not the record's fault: retry without limit, but never faster than the backoff.
            return self._retry_later(tp, record, attempt, f"{type(exc).__name__}: {exc}", self.backoff_max, limited=False)
        self._retries.pop(tp, None)
        return True

    def _retry_later(self, tp, record, attempt, error, cap, *, limited=True) -> bool:
        delay = backoff_delay(attempt=attempt, base=self.backoff_base, cap=cap)
        self._retries[tp] = _Retry(record.offset, attempt, time.monotonic() + delay, error)
        # Rewind and pause: the next polls return nothing from this partition until the retry
        # is due, while the loop keeps polling the others and keeps its group membership.
        self._consumer.seek(tp, record.offset)
        self._consumer.pause(tp)
        limit = f"/{self.max_attempts}" if limited else ""
        logger.warning(
            "%s: attempt %d%s of %s failed (%s); retrying in %.1f s",
            self.name, attempt, limit, _where(record), error, delay, extra=self._fields(record),
        )
        return False

    def _give_up(self, tp, record, error, attempts) -> bool:
        if self.dead_letter is None:
            logger.error(
                "%s: dropping %s after %d attempt(s): %s", self.name, _where(record), attempts, error,
                extra=self._fields(record),
            )
        else:
            try:
                self.dead_letter.publish(record, error=error, attempts=attempts)
            except KafkaError as exc:
                # Not on the DLT yet: keep the record and try the whole thing again later.
                return self._retry_later(tp, record, attempts, f"dead-lettering failed: {exc}", self.backoff_max, limited=False)
            logger.error(
                "%s: dead-lettered %s after %d attempt(s): %s", self.name, _where(record), attempts, error,
                extra=self._fields(record),
            )
        if self.on_dead_letter is not None:
            self.on_dead_letter(record, error, attempts)
        self.dead_lettered_total += 1
        metrics.EVENTS_DEAD_LETTERED.labels(group=self.group_id, topic=record.topic).inc()
        self._retries.pop(tp, None)
        return True

    # --- the loop's plumbing ----------------------------------------------------------------

    def _resume_due_partitions(self) -> None:
        now = time.monotonic()
        paused = self._consumer.paused()
        for tp, retry in self._retries.items():
            if retry.due <= now and tp in paused:
                self._consumer.resume(tp)

    def _poll_timeout_ms(self) -> int:
        if not self._retries:
            return self.poll_timeout_ms
        until_due = min(retry.due for retry in self._retries.values()) - time.monotonic()
        return max(0, min(self.poll_timeout_ms, int(until_due * 1000) + 1))

    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            batch = self._consumer.poll(timeout_ms=self._poll_timeout_ms())
        except KafkaError as exc:
            # The broker is unreachable or the group coordinator moved: keep the consumer and
            # try again; it reconnects by itself. Nothing was handed out, so nothing is lost.
            if not self._broker_trouble_since:
                self._broker_trouble_since = time.monotonic()
                logger.warning("%s: poll failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
            self.stop.wait(1.0)
            return {}
        if self._broker_trouble_since:
            logger.info(
                "%s: polling again after %.0f s of broker trouble",
                self.name, time.monotonic() - self._broker_trouble_since,
            )
            self._broker_trouble_since = 0.0
        return batch

    def _commit(self, pending: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not pending:
            return
        try:
            self._consumer.commit(dict(pending))
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner re-reads from the last commit, and
            # the handler's idempotence makes the replay harmless.
            logger.warning("%s: commit failed after a rebalance: %s", self.name, exc)
        pending.clear()

    def _after_batch(self) -> None:
        reset_queries()
        now = time.monotonic()
        if now >= self._db_check_due:
            # Drops a broken connection, or one past CONN_MAX_AGE (0: at every check). Once a
            # second, not after every poll: reopening the connection cost more than a batch.
            close_old_connections()
            self._db_check_due = now + DB_CHECK_INTERVAL
        self._update_lag()
        elapsed = time.monotonic() - self._window_start
        if elapsed >= self.stats_interval:
            logger.info(
                "%s: %d record(s) in %.0f s (%.1f/s), %d since start, %d dead-lettered",
                self.name, self._window_count, elapsed, self._window_count / elapsed,
                self.processed_total, self.dead_lettered_total,
            )
            self._window_start, self._window_count = time.monotonic(), 0

    def _fields(self, record: ConsumerRecord) -> dict:
        """The record's coordinates as structured log fields (`extra=`), for the JSON log format."""
        fields = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        event_id = next((value for name, value in record.headers or [] if name == "event_id"), None)
        if event_id is not None:
            fields["event_id"] = event_id.decode("utf-8", "replace")
        if self.log_fields is not None:
            fields.update(self.log_fields(record))
        return fields

    def _update_lag(self) -> None:
        """Set the lag gauges from the consumer's own view, which costs no broker round trip:
        the highwater comes with every fetch response, and the position is known locally."""
        for tp in self._consumer.assignment():
            try:
                highwater = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=0) if highwater is not None else None
            except (IllegalStateError, KafkaError):
                continue
            if position is None:
                continue
            metrics.CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(max(0, highwater - position))
            self._lag_partitions.add(tp)

    def _forget_lag(self, partitions) -> None:
        """Partitions this consumer no longer owns: their lag is the new owner's to report."""
        for tp in set(partitions) & self._lag_partitions:
            self._lag_partitions.discard(tp)
            try:
                metrics.CONSUMER_LAG.remove(self.group_id, tp.topic, str(tp.partition))
            except KeyError:
                pass

    def _close(self, pending: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self._forget_lag(list(self._lag_partitions))
        if self._consumer is None:
            return
        try:
            self._commit(pending)
        except KafkaError as exc:
            logger.error("%s: final commit failed: %s", self.name, exc)
        self._consumer.close(autocommit=False)
        if self.dead_letter is not None:
            self.dead_letter.close()
        logger.info("%s: stopped after %d record(s); left group %s", self.name, self.processed_total, self.group_id)


def _where(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
