"""The machinery under `kafka_bridge.browse`: partitions and offsets from the admin client, and
a scan that reads partitions from given offsets with a consumer that joins no group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from kafka_bridge.browse_records import (
    STOPPED_AT_END,
    STOPPED_AT_LIMIT,
    STOPPED_AT_SCAN_BOUND,
    STOPPED_AT_TIME_BOUND,
    RecordView,
    TopicNotFound,
)
from kafka_bridge.client import (
    BrokerAuthenticationFailed,
    BrokerUnavailable,
    ClosedOnFailedBootstrap,
    SaslLoginRejected,
    _NetClient,
    bootstrap_servers,
    connection_config,
)

# The longest one poll of a scan waits for records (never past the deadline). The scan checks
# its bounds and each partition's position between polls, so a poll that finds nothing should
# end well within a page's bound (KAFKA_STATUS_TIMEOUT_MS, 3 s by default).
POLL_MAX_MS = 200
# How long the broker holds a fetch that finds nothing new: the idle time of a poll, kept well
# under POLL_MAX_MS so that an idle partition does not use up a poll.
FETCH_MAX_WAIT_MS = 100
# A request's timeout is what is left of the read's bound, but at least this (KafkaConsumer
# refuses a request timeout that does not exceed the fetch wait, and a request needs a moment
# even when the bound is nearly spent) ...
REQUEST_TIMEOUT_MIN_MS = 1_000
# ... and at most this: KafkaConsumer also refuses one that is not below its
# connections_max_idle_ms (9 minutes by default), and no page waits five minutes.
REQUEST_TIMEOUT_MAX_MS = 300_000
# How long closing the consumer may take: it commits nothing and leaves no group, so there is
# nothing to wait for beyond closing its connections.
CLOSE_TIMEOUT_MS = 1_000


class Scan:
    """Reads each partition from its start up to its end offset (as it was when the page
    started, so records arriving meanwhile do not keep the read going), collecting matches,
    until every partition is done or a bound is reached."""

    def __init__(
        self,
        *,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        matches: Callable[[Any], bool],
        limit_per_partition: int | None,
        max_scanned: int,
    ):
        self.starts, self.ends, self.matches = starts, ends, matches
        self.limit_per_partition, self.max_scanned = limit_per_partition, max_scanned
        self.found: dict[TopicPartition, list[RecordView]] = {tp: [] for tp in starts}
        self.next_offsets = dict(starts)
        self.stopped: dict[TopicPartition, str] = {tp: STOPPED_AT_END for tp in starts if starts[tp] >= ends[tp]}
        self.scanned = 0

    def run(self, *, deadline: float) -> None:
        pending = [tp for tp in self.starts if tp not in self.stopped]
        if not pending:
            return
        with _consumer(deadline) as consumer:
            consumer.assign(pending)
            for tp in pending:
                consumer.seek(tp, self.starts[tp])
            while len(self.stopped) < len(self.starts):
                remaining = remaining_ms(deadline)
                if remaining <= 0:
                    self._stop_the_rest(STOPPED_AT_TIME_BOUND)
                    return
                for tp, batch in consumer.poll(timeout_ms=min(remaining, POLL_MAX_MS)).items():
                    if tp not in self.stopped:
                        self._take(tp, batch)
                for tp in self.starts:
                    if tp in self.stopped:
                        continue
                    # Transaction markers and compacted-away records take offsets no record
                    # has: the consumer's position, not the last record, says the end is reached.
                    position = consumer.position(tp, timeout_ms=max(1, remaining_ms(deadline)))
                    if position is not None and position >= self.ends[tp]:
                        self.next_offsets[tp] = self.ends[tp]
                        self.stopped[tp] = STOPPED_AT_END
                if self.scanned >= self.max_scanned:
                    # The bound holds for partitions that had nothing in this poll, too.
                    self._stop_the_rest(STOPPED_AT_SCAN_BOUND)
                # Done partitions fetch nothing more, so the others get the fetches.
                done = [tp for tp in pending if tp in self.stopped]
                if done:
                    consumer.pause(*done)

    def _take(self, tp: TopicPartition, batch: list) -> None:
        for record in batch:
            if record.offset >= self.ends[tp]:
                self.stopped[tp] = STOPPED_AT_END
                return
            if self.scanned >= self.max_scanned:
                self.stopped[tp] = STOPPED_AT_SCAN_BOUND
                return
            self.scanned += 1
            self.next_offsets[tp] = record.offset + 1
            if self.matches(record):
                self.found[tp].append(_view(record))
                if self.limit_per_partition is not None and len(self.found[tp]) >= self.limit_per_partition:
                    self.stopped[tp] = STOPPED_AT_LIMIT
                    return
            if self.next_offsets[tp] >= self.ends[tp]:
                self.stopped[tp] = STOPPED_AT_END
                return

    def _stop_the_rest(self, reason: str) -> None:
        for tp in self.starts:
            self.stopped.setdefault(tp, reason)


def remaining_ms(deadline: float) -> int:
    return int((deadline - time.monotonic()) * 1000)


def topic_partitions(admin, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
    """`topic`'s partitions (those in `partitions`, or all). Raises `TopicNotFound`, also for
    the broker's internal topics, which are not read: `__consumer_offsets` holds every group's
    members, hosts and offsets."""
    described = [t for t in admin.describe_topics([topic]) if t["error_code"] == 0 and not t["is_internal"]]
    if not described:
        raise TopicNotFound(f"no topic named {topic!r}")
    existing = sorted(p["partition_index"] for p in described[0]["partitions"])
    if partitions is None:
        return [TopicPartition(topic, p) for p in existing]
    missing = sorted(set(partitions) - set(existing))
    if missing:
        raise TopicNotFound(f"topic {topic!r} has no partition {', '.join(map(str, missing))} (it has {len(existing)})")
    return [TopicPartition(topic, p) for p in sorted(set(partitions))]


def partition_offsets(admin, partitions: list[TopicPartition], spec, deadline: float) -> dict[TopicPartition, int]:
    if not partitions:
        return {}
    found = admin.list_partition_offsets(dict.fromkeys(partitions, spec), timeout_ms=max(1, remaining_ms(deadline)))
    return {tp: found[tp].offset for tp in partitions}


def record_matches(record, key: bytes | None, needle: bytes | None) -> bool:
    if key is not None and record.key != key:
        return False
    return needle is None or (record.value is not None and needle in record.value)


def _view(record) -> RecordView:
    return RecordView(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=[(name, value) for name, value in record.headers or []],
    )


class _ClosedOnFailedBootstrapConsumer(ClosedOnFailedBootstrap, KafkaConsumer):
    """KafkaConsumer 3.0, like the admin client, leaves its I/O thread running when its
    bootstrap fails."""


@contextmanager
def _consumer(deadline: float) -> Iterator[KafkaConsumer]:
    """A consumer outside any group (no offsets committed, nobody rebalanced), closed on every path."""
    remaining = max(1, remaining_ms(deadline))
    config = {"kafka_client": _NetClient, **connection_config()}
    try:
        consumer = _ClosedOnFailedBootstrapConsumer(
            **config,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.KAFKA_CLIENT_ID}-browse",
            allow_auto_create_topics=False,
            # A record deleted by retention between the offset lookup and the fetch: start at the
            # earliest that is left instead of failing the page.
            auto_offset_reset="earliest",
            bootstrap_timeout_ms=remaining,
            # The fetch wait is the idle time of a poll; the request timeout must exceed it.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            request_timeout_ms=min(max(remaining, REQUEST_TIMEOUT_MIN_MS), REQUEST_TIMEOUT_MAX_MS),
        )
    except SaslLoginRejected as exc:
        raise BrokerAuthenticationFailed(str(exc)) from exc
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap_servers()} within the time left ({type(exc).__name__})"
        ) from exc
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
