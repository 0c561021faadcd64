"""The consumer loop's partitions: which ones it holds (each assignment a new generation, so that
results of an earlier one are not acted on), each one's commit point (`OffsetTracker`), pausing a
partition held `max_uncommitted` records past it and resuming it once it moves, committing, and
letting partitions go at a revocation.

`Partitions` uses the consumer only through `LoopConsumer`. Each method says on which thread it
runs; all but `commit` are called holding the loop's lock.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.errors import CommitFailedError, IllegalStateError, KafkaError
from kafka.structs import TopicPartition

from kafka_bridge.consumer.commit_points import OffsetTracker
from kafka_bridge.consumer.dispatch import Item
from kafka_bridge.consumer.kafka_client import LoopConsumer

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# Seconds between offset commits while records keep finishing.
COMMIT_INTERVAL = 0.2
# A commit that takes longer is given up and tried again at the next interval: a broker that
# does not answer must not hold the loop (nor a stop) for kafka-python's 30 s request timeout.
COMMIT_TIMEOUT_MS = 5000


def partition_names(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


class Partitions:
    """The partitions the loop holds and their commits. `lock` is the loop's: a commit reads the
    commit points under it, but sends them without it (the commit needs the I/O thread, which
    may be revoking under it)."""

    def __init__(self, *, name: str, max_uncommitted: int, lock: threading.RLock):
        self.name = name
        self.max_uncommitted = max_uncommitted
        # How many times the group handed this consumer a non-empty set of partitions: 1 in a
        # run without rebalances.
        self.assignments = 0
        self._lock = lock
        self._consumer: LoopConsumer | None = None
        self._tracker = OffsetTracker()
        self._generation: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        # Where to read on in a revoked partition, should the group hand it back.
        self._resume_at: dict[TopicPartition, int] = {}
        self._revoking: set[TopicPartition] = set()
        self._commit_due = 0.0
        self._commit_trouble = False

    def attach(self, consumer: LoopConsumer) -> None:
        self._consumer = consumer

    # --- records ----------------------------------------------------------------------------

    def generation(self, tp: TopicPartition) -> int | None:
        """The partition's current assignment, None when it is not held (records handed out
        just before a revocation: the new owner reads them again)."""
        return self._generation.get(tp)

    def current(self, item: Item) -> bool:
        """Whether `item` belongs to its partition's current assignment."""
        return item.generation == self._generation.get(item.tp)

    def received(self, tp: TopicPartition, offset: int) -> None:
        self._tracker.received(tp, offset)

    def pause_if_full(self, tp: TopicPartition) -> None:
        if self._tracker.uncommitted(tp) >= self.max_uncommitted and tp not in self._paused:
            # Far enough ahead of the committed offset: fetch no more until it moves.
            self._consumer.pause(tp)
            self._paused.add(tp)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self._tracker.done(tp, offset)
        if tp in self._paused and self._tracker.uncommitted(tp) < self.max_uncommitted:
            try:
                self._consumer.resume(tp)
            except IllegalStateError:
                pass  # no longer assigned
            self._paused.discard(tp)

    # --- commits ----------------------------------------------------------------------------

    def commit(self, *, force: bool = False) -> None:
        """Commit the partitions whose commit point moved, once a `COMMIT_INTERVAL` (`force`: now);
        from the loop thread, not holding the lock."""
        now = time.monotonic()
        if not force and now < self._commit_due:
            return
        self._commit_due = now + COMMIT_INTERVAL
        with self._lock:
            # Where every record handed out is done with, the consumer's position may be past
            # offsets that were no records (transaction markers): commit up to it.
            for tp in self._tracker.settled():
                try:
                    position = self._consumer.position(tp, timeout_ms=0)
                except (IllegalStateError, KafkaError):
                    continue
                if position is not None:
                    self._tracker.passed(tp, position)
            offsets = self._tracker.to_commit()
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
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

    # --- rebalances -------------------------------------------------------------------------

    def assigned(self, assigned: set[TopicPartition]) -> None:
        """On the consumer's I/O thread, holding the lock: a new generation of each partition."""
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
        logger.info("%s: partitions assigned: %s", self.name, partition_names(assigned) or "none")

    @property
    def revoking(self) -> bool:
        """Partitions are being revoked: no new work starts until they went."""
        return bool(self._revoking)

    def revoke(self, revoked: set[TopicPartition]) -> None:
        self._revoking |= revoked

    async def commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """On the I/O thread, not holding the lock: commit what is done in the revoked partitions,
        with the consumer's rebalance commit (a plain commit would wait for this very thread)."""
        with self._lock:
            offsets = {tp: offset for tp, offset in self._tracker.to_commit().items() if tp in revoked}
        if offsets:
            try:
                await self._consumer.rebalance_commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            except KafkaError as exc:
                self._commit_failed(exc)
            else:
                self._commit_succeeded()

    def let_go(self, revoked: set[TopicPartition]) -> None:
        """Forget the revoked partitions' records, remembering where to read on should the group
        hand them back."""
        for tp in revoked:
            point = self._tracker.commit_point(tp)
            if point is not None:
                self._resume_at[tp] = point
            self._generation.pop(tp, None)
            self._paused.discard(tp)
        self._tracker.forget(revoked)
        self._revoking -= revoked

    # --- what it reports --------------------------------------------------------------------

    def status(self) -> list[dict]:
        return [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "commit_point": self._tracker.commit_point(tp),
                "uncommitted": self._tracker.uncommitted(tp),
                "done_uncommitted": self._tracker.done_ahead(tp),
                "paused": tp in self._paused,
            }
            for tp in sorted(self._tracker.partitions())
        ]
