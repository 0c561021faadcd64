"""The consumer loop's partitions (`kafka_bridge.consumer.ConsumerLoop`): committing what is done
with, and the group's rebalances, which assign partitions to the loop and take them away.

`PartitionsMixin` is a part of `ConsumerLoop`, which holds the state it uses; each method says
on which thread it runs, and whether it holds the loop's lock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from django.db import connections
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# Seconds between offset commits while records keep finishing.
COMMIT_INTERVAL = 0.2
# A commit that takes longer is given up and tried again at the next interval: a broker that
# does not answer must not hold the loop (nor a stop) for kafka-python's 30 s request timeout.
COMMIT_TIMEOUT_MS = 5000


class Rebalances(AsyncConsumerRebalanceListener):
    """kafka-python runs rebalance listeners on its I/O thread, as tasks of the group join, while
    the loop thread waits inside `poll()`. Giving up partitions therefore happens here: the
    results of their calls in flight are taken and recorded as they come (the loop's state
    under its lock), their offsets committed with the coordinator's own coroutine, then they
    go. The listener awaits between checks, so the heartbeats go on meanwhile.

    `loop` is the `ConsumerLoop` that subscribed with it; the listener calls only what its
    `PartitionsMixin` part (below) does with the loop's state."""

    def __init__(self, loop: PartitionsMixin):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):
        await self.loop._partitions_revoked(set(revoked), lost=False)

    async def on_partitions_lost(self, lost):
        # Already someone else's: nothing may be committed for them any more.
        await self.loop._partitions_revoked(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned):
        with self.loop._lock:
            self.loop._partitions_assigned(set(assigned))


def partition_names(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


def commit_offsets(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


class PartitionsMixin:
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
            self._consumer.commit(commit_offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS)
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
        logger.info("%s: partitions assigned: %s", self.name, partition_names(assigned) or "none")

    async def _partitions_revoked(self, revoked: set[TopicPartition], *, lost: bool) -> None:
        """On the I/O thread: no new work starts for these partitions, their calls in flight
        finish and are recorded, what is done is committed (unless the partitions are lost
        already), then they go. Bounded by the drain timeout."""
        if not revoked or self._closing:
            return  # closing: the loop has finished and committed everything itself
        await self._drain_revoked(revoked)
        if not lost:
            await self._commit_revoked(revoked)
        self._let_go(revoked)
        self._forget_partition_gauges(revoked)
        # Results recorded here used a database connection of the I/O thread's own: closed, so
        # no connection outlives the revocation (and none holds up dropping a test database).
        connections.close_all()
        logger.info("%s: partitions %s: %s", self.name, "lost" if lost else "revoked", partition_names(revoked))

    async def _drain_revoked(self, revoked: set[TopicPartition]) -> None:
        """On the I/O thread: take and record results until the revoked partitions' calls (and
        the dead letters) in flight are done with, or the drain timeout passed."""
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
                    partition_names(revoked),
                )
                break
            await net.sleep(0.01)

    async def _commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """On the I/O thread, with the coordinator's own coroutine: a commit through the consumer
        (`_commit`) waits for the I/O thread, which is this one."""
        with self._lock:
            offsets = {tp: offset for tp, offset in self._tracker.to_commit().items() if tp in revoked}
        if offsets:
            try:
                await self._consumer._coordinator._commit_offsets_sync_async(
                    commit_offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS
                )
            except KafkaError as exc:
                self._commit_failed(exc)
            else:
                self._commit_succeeded()

    def _let_go(self, revoked: set[TopicPartition]) -> None:
        """On the I/O thread: forget the revoked partitions' records, remembering where to read
        on should the group hand them back."""
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
