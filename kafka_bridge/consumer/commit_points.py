"""Which offset of each partition may be committed when records finish out of order.

Records of one partition are handed out in offset order but, with per-key concurrency, finish
in any order. The committed offset must never pass a record that is not done with (handled or
dead-lettered), or a crash would skip it: so per partition it is the first offset received and
not yet done. Records done beyond it are remembered until it moves past them; after a crash or
a rebalance they are read again, and the handler's idempotence drops them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    # Offsets received and not yet committable, in offset order.
    outstanding: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    # The offset after the last one received: what to commit once everything is done.
    next_offset: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Per partition: offsets received, offsets done, and the offset that may be committed."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, _Partition] = {}

    def received(self, partition: Hashable, offset: int) -> None:
        """A record was handed out; offsets of a partition arrive in ascending order."""
        state = self._partitions.setdefault(partition, _Partition())
        state.outstanding.append(offset)
        state.next_offset = offset + 1

    def done(self, partition: Hashable, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is None:
            return  # the partition was revoked meanwhile: its new owner reads the record again
        if not state.outstanding or not state.outstanding[0] <= offset < state.next_offset:
            return  # done already, or never received: nothing to remember
        state.done.add(offset)
        # Pop the done prefix: what is left starts at the first record not done with.
        while state.outstanding and state.outstanding[0] in state.done:
            state.done.discard(state.outstanding.popleft())

    def settled(self) -> list[Hashable]:
        """The partitions with records received and every one of them done with."""
        return [p for p, state in self._partitions.items() if state.next_offset is not None and not state.outstanding]

    def passed(self, partition: Hashable, offset: int) -> None:
        """The consumer's position in `partition` is `offset`, and every record before it that
        it handed out is done with: the offsets between are no records (a transaction's commit
        or abort marker, a record of an aborted transaction), so the commit point may pass them.
        Without it, a topic written in transactions would show a lag of one marker for ever."""
        state = self._partitions.get(partition)
        if state is None or state.outstanding or state.next_offset is None:
            return
        state.next_offset = max(state.next_offset, offset)

    def commit_point(self, partition: Hashable) -> int | None:
        """The offset to commit: the first received record not yet done, or the offset after the
        last one received when all are done; None before any record arrived."""
        state = self._partitions.get(partition)
        if state is None or state.next_offset is None:
            return None
        return state.outstanding[0] if state.outstanding else state.next_offset

    def to_commit(self) -> dict[Hashable, int]:
        """The partitions whose commit point moved since `committed()` was last told of it."""
        changes = {}
        for partition, state in self._partitions.items():
            point = self.commit_point(partition)
            if point is not None and point != state.committed:
                changes[partition] = point
        return changes

    def committed(self, offsets: dict[Hashable, int]) -> None:
        for partition, offset in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = offset

    def uncommitted(self, partition: Hashable) -> int:
        """Records received at or past the commit point: what a crash would hand out again.
        Bounded by pausing the partition (`EXPORT_MAX_UNCOMMITTED`)."""
        state = self._partitions.get(partition)
        return len(state.outstanding) if state is not None else 0

    def done_ahead(self, partition: Hashable) -> int:
        """Records done but not committable yet, because an earlier one is not done."""
        state = self._partitions.get(partition)
        return len(state.done) if state is not None else 0

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Partitions this consumer no longer owns: their new owner starts at the last commit."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def partitions(self) -> list[Hashable]:
        return list(self._partitions)
