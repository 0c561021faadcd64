"""What the consumer loop reports about itself: its gauges (calls in flight, retries waiting, the
breaker, lag and records done but not committed per partition), its status snapshot (also
recorded in the database for the admin's status page) and its periodic stats line.

`Reporter` is given the loop's `status()` (a consistent snapshot, taken under the loop's lock)
and reads the consumer's own view for the lag; it runs on the loop thread (`forget` also on the
I/O thread, for revoked partitions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from kafka.errors import IllegalStateError, KafkaError
from kafka.structs import TopicPartition

from kafka_bridge import metrics
from kafka_bridge.consumer.kafka_client import LoopConsumer
from kafka_bridge.consumer.pacing import STATE_VALUES
from kafka_bridge.consumer.state import consumer_state_forget, consumer_state_record

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# Seconds between updates of the gauges and of the status snapshot.
GAUGE_INTERVAL = 1.0


class Reporter:
    """Counts the records done, and reports. `member`: the name under which the status is
    recorded in the database (None: not recorded)."""

    def __init__(
        self,
        *,
        name: str,
        group_id: str,
        stats_interval: float,
        member: str | None,
        status: Callable[[], dict],
    ):
        self.name = name
        self.group_id = group_id
        self.stats_interval = stats_interval
        self.member = member
        self.status = status
        self.processed_total = 0
        self._consumer: LoopConsumer | None = None
        self._window_start = time.monotonic()
        self._window_count = 0
        self._gauges_due = 0.0
        self._lag_partitions: set[TopicPartition] = set()
        self._uncommitted_partitions: set[TopicPartition] = set()

    def attach(self, consumer: LoopConsumer) -> None:
        self._consumer = consumer

    def record_done(self, tp: TopicPartition) -> None:
        self.processed_total += 1
        self._window_count += 1
        metrics.EVENTS_CONSUMED.labels(group=self.group_id, topic=tp.topic).inc()

    def report(self, *, now: float, dead_lettered: int, calls_in_flight: int) -> None:
        """The gauges and the status snapshot once a `GAUGE_INTERVAL`, the stats line once a
        `stats_interval`."""
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
                dead_lettered,
                calls_in_flight,
            )
            self._window_start, self._window_count = now, 0

    def _update_gauges(self) -> None:
        group = self.group_id
        status = self.status()
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(group).set(status["calls_in_flight"])
        metrics.CONSUMER_RETRIES_WAITING.labels(group).set(status["retries_waiting"])
        if status["breaker"] is not None:
            metrics.CONSUMER_BREAKER_STATE.labels(group).set(STATE_VALUES[status["breaker"]])
        commit_points = {}
        for row in status["partitions"]:
            tp = TopicPartition(row["topic"], row["partition"])
            metrics.CONSUMER_DONE_UNCOMMITTED.labels(group, tp.topic, str(tp.partition)).set(row["done_uncommitted"])
            self._uncommitted_partitions.add(tp)
            commit_points[tp] = row["commit_point"]
        self._update_lag(commit_points)
        if self.member is not None:
            try:
                consumer_state_record(member=self.member, state=status)
            except Exception as exc:
                logger.warning("%s: status not recorded: %s: %s", self.name, type(exc).__name__, exc)

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

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
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

    def stop(self) -> None:
        """On a stop: this consumer's figures go, and so does its recorded status."""
        self.forget(list(self._lag_partitions | self._uncommitted_partitions))
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(self.group_id).set(0)
        metrics.CONSUMER_RETRIES_WAITING.labels(self.group_id).set(0)
        if self.member is not None:
            try:
                consumer_state_forget(member=self.member)
            except Exception as exc:
                logger.warning("%s: status not removed: %s: %s", self.name, type(exc).__name__, exc)
