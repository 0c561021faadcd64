"""What the consumer loop (`kafka_bridge.consumer.ConsumerLoop`) reports about itself: its
gauges (calls in flight, retries waiting, the breaker, lag and records done but not committed per
partition), its status snapshot (`status()`, also recorded in the database for the admin's status
page) and its periodic stats line.

`ReportingMixin` is a part of `ConsumerLoop`, which holds the state it uses; its methods run on
the loop thread (`_forget_partition_gauges` also on the I/O thread, for revoked partitions).
"""

from __future__ import annotations

import logging

from kafka.errors import IllegalStateError, KafkaError
from kafka.structs import TopicPartition

from kafka_bridge import metrics
from kafka_bridge.consumer_state import consumer_state_forget, consumer_state_record
from kafka_bridge.pacing import STATE_VALUES

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")

# Seconds between updates of the gauges and of the status snapshot.
GAUGE_INTERVAL = 1.0


class ReportingMixin:
    def _report(self, *, now: float) -> None:
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
                self.dead_lettered_total,
                self._calls_in_flight,
            )
            self._window_start, self._window_count = now, 0

    def status(self) -> dict:
        """What the loop holds now: calls in flight, keys waiting on a retry, records done but
        not yet committable per partition, the pacer's state."""
        with self._lock:
            return self._status()

    def _status(self) -> dict:
        return {
            "group_id": self.group_id,
            "concurrency": self.concurrency,
            "calls_in_flight": self._calls_in_flight,
            "retries_waiting": self._scheduler.waiting,
            "records_queued": self._scheduler.queued,
            "calls_prepared": len(self._prepared),
            "breaker": self.pacer.state if self.pacer is not None else None,
            "partitions": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "commit_point": self._tracker.commit_point(tp),
                    "uncommitted": self._tracker.uncommitted(tp),
                    "done_uncommitted": self._tracker.done_ahead(tp),
                    "paused": tp in self._paused,
                }
                for tp in sorted(self._tracker.partitions())
            ],
        }

    def _update_gauges(self) -> None:
        group = self.group_id
        with self._lock:
            status = self.status()
            done_ahead = {tp: self._tracker.done_ahead(tp) for tp in self._tracker.partitions()}
            commit_points = {tp: self._tracker.commit_point(tp) for tp in done_ahead}
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(group).set(status["calls_in_flight"])
        metrics.CONSUMER_RETRIES_WAITING.labels(group).set(status["retries_waiting"])
        if self.pacer is not None:
            metrics.CONSUMER_BREAKER_STATE.labels(group).set(STATE_VALUES[self.pacer.state])
        for tp, count in done_ahead.items():
            metrics.CONSUMER_DONE_UNCOMMITTED.labels(group, tp.topic, str(tp.partition)).set(count)
            self._uncommitted_partitions.add(tp)
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

    def _forget_partition_gauges(self, partitions) -> None:
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

    def _stop_reporting(self) -> None:
        """On a stop: this consumer's figures go, and so does its recorded status."""
        self._forget_partition_gauges(list(self._lag_partitions | self._uncommitted_partitions))
        metrics.CONSUMER_CALLS_IN_FLIGHT.labels(self.group_id).set(0)
        metrics.CONSUMER_RETRIES_WAITING.labels(self.group_id).set(0)
        if self.member is not None:
            try:
                consumer_state_forget(member=self.member)
            except Exception as exc:
                logger.warning("%s: status not removed: %s: %s", self.name, type(exc).__name__, exc)
