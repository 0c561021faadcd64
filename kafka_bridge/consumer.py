"""A Kafka consumer loop with at-least-once delivery: the `@KafkaListener` of this project.

Auto-commit is off. A record's offset is committed only after its handler returned, so a crash
redelivers what was not finished, never skips it. Handlers must therefore be idempotent.

The loop checks a stop flag between records; on a stop it finishes the record in hand,
commits, closes the consumer (which leaves the group, so the partitions move at once), and
returns.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import close_old_connections, reset_queries
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_bridge.client import connection_config
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)

RecordHandler = Callable[[ConsumerRecord], None]


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


class ConsumerLoop:
    """Polls `topics` in `group_id` and calls `handler` for each record, in partition order.

    A handler that raises is retried: the partition is rewound to the failed record and the
    loop backs off for `retry_backoff` seconds, keeping its place in the group meanwhile.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: RecordHandler,
        stop: StopFlag,
        name: str = "consumer",
        poll_timeout_ms: int | None = None,
        retry_backoff: float = 1.0,
        stats_interval: float | None = None,
    ):
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.stop = stop
        self.name = name
        self.poll_timeout_ms = poll_timeout_ms or settings.KAFKA_CONSUMER_POLL_TIMEOUT_MS
        self.retry_backoff = retry_backoff
        self.stats_interval = stats_interval or settings.KAFKA_CONSUMER_STATS_INTERVAL
        self.processed_total = 0
        self._window_start = time.monotonic()
        self._window_count = 0
        self._consumer: KafkaConsumer | None = None
        self._broker_trouble_since = 0.0

    def run(self) -> None:
        self._consumer = KafkaConsumer(*self.topics, **consumer_config(group_id=self.group_id))
        logger.info("%s: consuming %s in group %s", self.name, ",".join(self.topics), self.group_id)
        pending: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            while not self.stop.is_set():
                batch = self._poll()
                for tp, records in batch.items():
                    for record in records:
                        if self.stop.is_set():
                            break
                        if not self._handle(tp, record):
                            break
                        pending[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                        self.processed_total += 1
                        self._window_count += 1
                    if self.stop.is_set():
                        break
                self._commit(pending)
                self._after_batch()
        finally:
            self._close(pending)

    def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            batch = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
        except KafkaError as exc:
            # The broker is unreachable or the group coordinator moved: keep the consumer and
            # try again; it reconnects by itself. Nothing was handed out, so nothing is lost.
            if not self._broker_trouble_since:
                self._broker_trouble_since = time.monotonic()
                logger.warning("%s: poll failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
            self.stop.wait(self.retry_backoff)
            return {}
        if self._broker_trouble_since:
            logger.info(
                "%s: polling again after %.0f s of broker trouble",
                self.name, time.monotonic() - self._broker_trouble_since,
            )
            self._broker_trouble_since = 0.0
        return batch

    def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> bool:
        try:
            self.handler(record)
            return True
        except Exception:
            logger.exception(
                "%s: handling %s[%d]@%d failed; retrying in %.1f s",
                self.name, record.topic, record.partition, record.offset, self.retry_backoff,
            )
            # Rewind so the next poll returns this record again: nothing is skipped.
            self._consumer.seek(tp, record.offset)
            self.stop.wait(self.retry_backoff)
            return False

    def _commit(self, pending: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not pending:
            return
        try:
            self._consumer.commit(dict(pending))
            pending.clear()
        except CommitFailedError as exc:
            # The group rebalanced under us: the new owner re-reads from the last commit, and
            # the handler's idempotence makes the replay harmless.
            logger.warning("%s: commit failed after a rebalance: %s", self.name, exc)
            pending.clear()

    def _after_batch(self) -> None:
        reset_queries()
        close_old_connections()
        elapsed = time.monotonic() - self._window_start
        if elapsed >= self.stats_interval:
            logger.info(
                "%s: %d record(s) in %.0f s (%.1f/s), %d since start",
                self.name, self._window_count, elapsed, self._window_count / elapsed, self.processed_total,
            )
            self._window_start, self._window_count = time.monotonic(), 0

    def _close(self, pending: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self._consumer is None:
            return
        try:
            self._commit(pending)
        except KafkaError as exc:
            logger.error("%s: final commit failed: %s", self.name, exc)
        self._consumer.close(autocommit=False)
        logger.info("%s: stopped after %d record(s); left group %s", self.name, self.processed_total, self.group_id)
