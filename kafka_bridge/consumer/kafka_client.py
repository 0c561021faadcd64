"""What the consumer loop needs of a Kafka consumer (`LoopConsumer`), and the real one:
`KafkaLoopConsumer`, a kafka-python `KafkaConsumer` with the loop's rebalance listener.

The loop sees only this small interface, so its behaviour can be driven without a broker (the
unit tests give it an in-memory consumer, `tests/support/local_consumer.py`). What the loop needs
of kafka-python's internals (the fetcher's parked records, the coordinator's commit coroutine
and the I/O thread's sleep during a rebalance) stays in this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_bridge.consumer.api import consumer_config


class RebalanceListener(Protocol):
    """What the loop does when the group assigns it partitions or takes them away; called by
    the consumer while the loop thread waits in `poll()`."""

    async def partitions_revoked(self, revoked: set[TopicPartition], *, lost: bool) -> None: ...

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None: ...


class LoopConsumer(Protocol):
    """The subset of a Kafka consumer the loop uses. `rebalance_commit` and `rebalance_sleep` are
    awaited only inside the listener's `partitions_revoked`, where a blocking commit or sleep
    would hold up the very thread that answers it."""

    def subscribe(self, topics: Sequence[str], *, listener: RebalanceListener) -> None: ...

    def poll(self, *, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    def pause(self, tp: TopicPartition) -> None: ...

    def resume(self, tp: TopicPartition) -> None:
        """Raises kafka's IllegalStateError when `tp` is no longer assigned."""

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None:
        """Raises CommitFailedError after a rebalance, another KafkaError on a timeout."""

    async def rebalance_commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None: ...

    async def rebalance_sleep(self, seconds: float) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def position(self, tp: TopicPartition, *, timeout_ms: int) -> int | None: ...

    def close(self) -> None:
        """Leave the group without committing (the loop committed what is done)."""


def commit_offsets(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def unpark_resumed_partitions(consumer: KafkaConsumer) -> None:
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


class KafkaRebalances(AsyncConsumerRebalanceListener):
    """kafka-python runs rebalance listeners on its I/O thread, as tasks of the group join, while
    the loop thread waits inside `poll()`; the listener's coroutines await between checks, so
    the heartbeats go on meanwhile."""

    def __init__(self, listener: RebalanceListener):
        self.listener = listener

    async def on_partitions_revoked(self, revoked):
        await self.listener.partitions_revoked(set(revoked), lost=False)

    async def on_partitions_lost(self, lost):
        # Already someone else's: nothing may be committed for them any more.
        await self.listener.partitions_revoked(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned):
        self.listener.partitions_assigned(set(assigned))


class KafkaLoopConsumer:
    """A `KafkaConsumer` in the loop's group (`consumer_config`: auto-commit off), as the loop
    uses it."""

    def __init__(self, *, group_id: str):
        self.consumer = KafkaConsumer(**consumer_config(group_id=group_id))

    def subscribe(self, topics: Sequence[str], *, listener: RebalanceListener) -> None:
        self.consumer.subscribe(list(topics), listener=KafkaRebalances(listener))

    def poll(self, *, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        unpark_resumed_partitions(self.consumer)
        return self.consumer.poll(timeout_ms=timeout_ms)

    def pause(self, tp: TopicPartition) -> None:
        self.consumer.pause(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.consumer.resume(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)

    def commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None:
        self.consumer.commit(commit_offsets(offsets), timeout_ms=timeout_ms)

    async def rebalance_commit(self, offsets: dict[TopicPartition, int], *, timeout_ms: int) -> None:
        # On the I/O thread, with the coordinator's own coroutine: `commit()` would wait for the
        # I/O thread, which is this one.
        await self.consumer._coordinator._commit_offsets_sync_async(commit_offsets(offsets), timeout_ms=timeout_ms)

    async def rebalance_sleep(self, seconds: float) -> None:
        await self.consumer._net.sleep(seconds)

    def assignment(self) -> set[TopicPartition]:
        return self.consumer.assignment()

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp)

    def position(self, tp: TopicPartition, *, timeout_ms: int) -> int | None:
        return self.consumer.position(tp, timeout_ms=timeout_ms)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
