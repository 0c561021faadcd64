"""The consumer loop's polls (`kafka_bridge.consumer.ConsumerLoop`): how long each may wait,
riding out a broker that does not answer, and taking in what they return, pausing a partition
held too far past its committed offset.

`PollingMixin` is a part of `ConsumerLoop`, which holds the state it uses; its methods run on the
loop thread, the one that reads the fetcher's records.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from kafka_bridge.consumer_calls import Item

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# While calls are in flight the loop polls with this timeout, so their results are taken up
# soon after they arrive (the broker's fetch responses wake the poll earlier anyway).
BUSY_POLL_MS = 2


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


class PollingMixin:
    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        unpark_resumed_partitions(self._consumer)
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
                self._scheduler.add((tp, record.key), Item(record, tp, generation))
            if self._tracker.uncommitted(tp) >= self.max_uncommitted and tp not in self._paused:
                # Far enough ahead of the committed offset: fetch no more until it moves.
                self._consumer.pause(tp)
                self._paused.add(tp)
