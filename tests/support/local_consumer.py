"""An in-memory `LoopConsumer` (kafka_bridge.consumer.kafka_client), so that unit tests drive the
consumer loop without a broker: the test appends records, the loop's polls return them, and a
rebalance happens when the test asks for one.

Like kafka-python, it runs the rebalance listener inside `poll()`, while the loop thread waits
there: the assignment of `partitions` at the first poll, and each `rebalance()` the test asked
for at the next one. The listener's coroutines are driven the way kafka-python drives them on
its I/O thread (no asyncio loop, so the Django calls made inside them stay legal).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import IllegalStateError
from kafka.structs import TopicPartition

from kafka_bridge.consumer import RebalanceListener


class _Sleep:
    """What `rebalance_sleep` awaits: the driver sleeps for it between steps."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __await__(self):
        yield self.seconds


def _drive(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        while True:
            time.sleep(coroutine.send(None) or 0)
    except StopIteration:
        pass


class LocalConsumer:
    """One consumer in a group of its own: `partitions` assigned at the first poll, records
    appended by the test, commits kept in `committed` (and each one in `history`)."""

    def __init__(self, *, partitions: Iterable[TopicPartition], max_poll_records: int = 500):
        self.max_poll_records = max_poll_records
        # A partition's entries by offset: records, and None for a transaction marker.
        self.log: dict[TopicPartition, list[ConsumerRecord | None]] = {tp: [] for tp in partitions}
        self.committed: dict[TopicPartition, int] = {}
        self.closed = False
        # What happened, in order: ("assigned" | "revoked" | "commit", partitions or offsets).
        self.history: list[tuple[str, Any]] = []
        self.polls = 0
        # True while the listener's revocation runs (the loop thread waits in it).
        self.revoking = False
        self.topics: list[str] = []
        self._listener: RebalanceListener | None = None
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._pending: deque[tuple[set[TopicPartition], set[TopicPartition], threading.Event]] = deque()
        self._pending.append((set(), set(self.log), threading.Event()))
        # Guards the log, the pending rebalances and the positions against the test's thread;
        # `changed` wakes a waiting poll.
        self._changed = threading.Condition()

    # --- what the test does -----------------------------------------------------------------

    def append(self, tp: TopicPartition, *, key: bytes | None, value: bytes = b"", headers=None) -> ConsumerRecord:
        """A record at the end of `tp`, for the loop's next polls."""
        with self._changed:
            log = self.log.setdefault(tp, [])
            record = ConsumerRecord(
                tp.topic, tp.partition, -1, len(log), 0, 0, key, value, list(headers or []), None, 0, 0, 0
            )
            log.append(record)
            self._changed.notify_all()
            return record

    def append_marker(self, tp: TopicPartition) -> int:
        """A transaction's commit marker at the end of `tp`: it takes an offset, and a poll never
        returns it (the consumer's position passes it). Returns its offset."""
        with self._changed:
            log = self.log.setdefault(tp, [])
            log.append(None)
            self._changed.notify_all()
            return len(log) - 1

    def rebalance(
        self, *, revoke: Iterable[TopicPartition] = (), assign: Iterable[TopicPartition] = ()
    ) -> threading.Event:
        """At the loop's next poll: `revoke` taken away (the listener's revocation), then `assign`
        handed over, each reading on from its committed offset. The event is set once the listener
        has run."""
        done = threading.Event()
        with self._changed:
            self._pending.append((set(revoke), set(assign), done))
            self._changed.notify_all()
        return done

    def assigned(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    # --- what the loop uses (LoopConsumer) --------------------------------------------------

    def subscribe(self, topics: Sequence[str], *, listener: RebalanceListener) -> None:
        self.topics = list(topics)
        self._listener = listener

    def poll(self, *, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self.closed:
            raise IllegalStateError("consumer is closed")
        self.polls += 1
        self._run_rebalances()
        with self._changed:
            polled = self._fetch()
            if not polled and timeout_ms > 0 and not self._pending:
                self._changed.wait(timeout_ms / 1000)
                polled = self._fetch()
        return polled

    def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        polled, room = {}, self.max_poll_records
        for tp in sorted(self._assigned - self._paused):
            position = self._positions[tp]
            entries = self.log.get(tp, [])[position : position + room]
            records = [entry for entry in entries if entry is not None]  # markers are passed
            self._positions[tp] = position + len(entries)
            if records:
                polled[tp] = records
                room -= len(records)
            if not room:
                break
        return polled

    def _run_rebalances(self) -> None:
        while True:
            with self._changed:
                if not self._pending:
                    return
                revoke, assign, done = self._pending.popleft()
            revoke &= self._assigned
            if revoke:
                self.revoking = True
                _drive(self._listener.partitions_revoked(revoke, lost=False))
                self.revoking = False
                self.history.append(("revoked", revoke))
                self._assigned -= revoke
                self._paused -= revoke
            if assign:
                self._assigned |= assign
                for tp in assign:
                    self._positions[tp] = self.committed.get(tp, 0)
                self.history.append(("assigned", assign))
            self._listener.partitions_assigned(assign)
            done.set()

    def pause(self, tp: TopicPartition) -> None:
        self._check_assigned(tp)
        self._paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self._check_assigned(tp)
        self._paused.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._check_assigned(tp)
        self._positions[tp] = offset

    def _check_assigned(self, tp: TopicPartition) -> None:
        if tp not in self._assigned:
            raise IllegalStateError(f"{tp} is not assigned")

    def commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None:
        self.committed.update(offsets)
        self.history.append(("commit", dict(offsets)))

    async def rebalance_commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None:
        self.commit(offsets, timeout_ms=timeout_ms)

    async def rebalance_sleep(self, seconds: float) -> None:
        await _Sleep(seconds)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.log.get(tp, []))

    def position(self, tp: TopicPartition, *, timeout_ms: int) -> int | None:
        self._check_assigned(tp)
        return self._positions[tp]

    def close(self) -> None:
        """Leaves the group: the listener hears of the revocation, as kafka-python's does."""
        if self._assigned:
            _drive(self._listener.partitions_revoked(set(self._assigned), lost=False))
            self.history.append(("revoked", set(self._assigned)))
            self._assigned.clear()
        self.history.append(("closed", None))
        self.closed = True
