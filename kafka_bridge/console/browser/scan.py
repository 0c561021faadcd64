"""The machinery under `kafka_bridge.console.browser.reading`: partitions and offsets from the admin client, and
a scan that reads partitions from given offsets with a consumer that joins no group.

The scan's memory is bounded whatever the records hold: each record's key and value are cut to
their heads (and the value's size, hash and whether it holds the text searched for noted) by the
consumer's deserializers, as kafka-python unpacks them one by one, so no whole value outlives its
unpacking. What is left is kafka-python's own: it decompresses a whole record batch at once (two
copies of it for a moment), and holds a fetch's compressed bytes (FETCH_MAX_BYTES).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, UnknownTopicOrPartitionError
from kafka.serializer import Deserializer

from kafka_bridge.connection import (
    BrokerAuthenticationFailed,
    BrokerUnavailable,
    ClosedOnFailedBootstrap,
    SaslLoginRejected,
    bootstrap_servers,
    short_lived_client_config,
)
from kafka_bridge.console.browser.records import (
    HEADER_HEAD_BYTES,
    KEY_HEAD_BYTES,
    MAX_HEADERS,
    STOPPED_AT_END,
    STOPPED_AT_LIMIT,
    STOPPED_AT_SCAN_BOUND,
    STOPPED_AT_TIME_BOUND,
    RecordView,
    TopicNotFound,
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
# Compressed bytes one fetch brings, per partition and in all (kafka-python's defaults are 1 MiB
# and 50 MiB). Compressed bytes are not what costs: gzip turns 10 MB of repetitive JSON into 10 KB,
# so 1 MiB may hold a hundred such values. These keep what is held before unpacking small (a few
# hundred order events per partition, enough that a scan of MAX_SCANNED takes a few dozen fetches);
# a batch larger than the bound is still fetched whole (KIP-74), one at a time.
MAX_PARTITION_FETCH_BYTES = 256 * 1024
FETCH_MAX_BYTES = 1024 * 1024
# Records one poll unpacks: the scan checks its deadline between polls, and unpacking a record
# of a compressed batch may mean decompressing the batch (10 MB of JSON: about 30 ms with the
# hashing). 20 keeps a poll of giants to well under a second, and costs a scan of 10,000 small
# records about a tenth of a second more than kafka-python's 500 (measured: 0.33 s against 0.27 s).
MAX_POLL_RECORDS = 20


class _Key(NamedTuple):
    """What the scan keeps of a key (head None for a null one): its head, its size, and whether
    it is the key searched for (True when no key is)."""

    head: bytes | None
    size: int
    wanted: bool


class _Value(NamedTuple):
    """What the scan keeps of a value (head None for a null one), and of the record's headers
    (each header value cut to HEADER_HEAD_BYTES; their whole sizes here)."""

    head: bytes | None
    size: int
    sha256: str
    found: bool  # holds the text searched for, or none is
    header_sizes: list[int]
    header_found: bool = True  # has the header searched for, or none is


class _KeyCut(Deserializer):
    def __init__(self, wanted: bytes | None):
        self.wanted = wanted

    def deserialize(self, topic, headers, data):
        if data is None:
            return _Key(None, -1, self.wanted is None)
        return _Key(data[:KEY_HEAD_BYTES], len(data), self.wanted is None or data == self.wanted)


class _ValueCut(Deserializer):
    """Called by kafka-python for each record as it unpacks it, with the whole value: the only
    moment the scan sees it. `head_bytes` None keeps all of it (`record_at` for a download)."""

    def __init__(self, *, head_bytes: int | None, needle: bytes | None, header: HeaderSearch | None = None):
        self.head_bytes, self.needle, self.header = head_bytes, needle, header

    def deserialize(self, topic, headers, data):
        # Before the headers are cut: a header value is matched whole.
        header_found = self.header is None or self.header.found_in(headers)
        header_sizes = _headers_cut(headers)
        if data is None:
            return _Value(None, -1, "", self.needle is None, header_sizes, header_found)
        return _Value(
            head=data if self.head_bytes is None else data[: self.head_bytes],
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            found=self.needle is None or self.needle in data,
            header_sizes=header_sizes,
            header_found=header_found,
        )


class HeaderSearch(NamedTuple):
    """A header to search for: named `name` (any name when None), its value holding `needle`
    (any value, null included, when None). A trace id is found in `traceparent`, an event id in
    `event_id`."""

    name: str | None
    needle: bytes | None

    def found_in(self, headers: list | None) -> bool:
        for name, value in headers or ():
            if self.name is not None and name != self.name:
                continue
            if self.needle is None or (value is not None and self.needle in value):
                return True
        return False


def _headers_cut(headers: list | None) -> list[int]:
    """Cuts `headers`, in place, to MAX_HEADERS of HEADER_HEAD_BYTES each; returns the values'
    whole sizes. In place because kafka-python hands the deserializer the list the record keeps,
    and has no deserializer for headers: cut here, no record held by a poll keeps a whole one."""
    if not headers:
        return []
    del headers[MAX_HEADERS:]
    sizes = []
    for i, (name, value) in enumerate(headers):
        sizes.append(-1 if value is None else len(value))
        if len(name) > HEADER_HEAD_BYTES or (value is not None and len(value) > HEADER_HEAD_BYTES):
            headers[i] = (name[:HEADER_HEAD_BYTES], value[:HEADER_HEAD_BYTES] if value is not None else None)
    return sizes


class Scan:
    """Reads each partition from its start up to its end offset (as it was when the page
    started, so records arriving meanwhile do not keep the read going), collecting matches,
    until every partition is done or a bound is reached."""

    def __init__(
        self,
        *,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        key: bytes | None,
        contains: bytes | None,
        value_head_bytes: int | None,
        limit_per_partition: int | None,
        max_scanned: int,
        header: HeaderSearch | None = None,
    ):
        self.starts, self.ends = starts, ends
        self.key_cut = _KeyCut(key)
        self.value_cut = _ValueCut(head_bytes=value_head_bytes, needle=contains, header=header)
        self.limit_per_partition, self.max_scanned = limit_per_partition, max_scanned
        self.found: dict[TopicPartition, list[RecordView]] = {tp: [] for tp in starts}
        self.next_offsets = dict(starts)
        self.stopped: dict[TopicPartition, str] = {tp: STOPPED_AT_END for tp in starts if starts[tp] >= ends[tp]}
        self.scanned = 0

    def run(self, *, deadline: float) -> None:
        pending = [tp for tp in self.starts if tp not in self.stopped]
        if not pending:
            return
        # A scan of a few records (`record_at`: one) unpacks no more than it reads: with whole
        # values kept, each record unpacked would be a whole value held.
        with _consumer(
            deadline,
            key_deserializer=self.key_cut,
            value_deserializer=self.value_cut,
            max_poll_records=min(MAX_POLL_RECORDS, self.max_scanned),
        ) as consumer:
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
                # Done partitions fetch nothing more, so the others get the fetches. Unassigned
                # rather than paused: kafka-python keeps a paused partition's unpacked batch (a
                # whole decompressed batch) for when it resumes; an unassigned one's is dropped.
                # The partitions left keep their positions.
                left = [tp for tp in pending if tp not in self.stopped]
                if left and len(left) < len(consumer.assignment()):
                    consumer.assign(left)

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
            if record_matches(record):
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
    try:
        found = admin.list_partition_offsets(dict.fromkeys(partitions, spec), timeout_ms=max(1, remaining_ms(deadline)))
    except UnknownTopicOrPartitionError as error:
        raise TopicNotFound(f"topic {partitions[0].topic!r} was deleted while it was read") from error
    return {tp: found[tp].offset for tp in partitions}


def record_matches(record) -> bool:
    """Whether a record the scan's deserializers unpacked has the key, the text and the header
    searched for."""
    return record.key.wanted and record.value.found and record.value.header_found


def _view(record) -> RecordView:
    key, value = record.key, record.value
    return RecordView(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=key.head,
        key_size=key.size if key.head is not None else None,
        value_head=value.head,
        value_size=value.size if value.head is not None else None,
        value_sha256=value.sha256,
        headers=[(name, value) for name, value in record.headers or []],
        header_sizes=value.header_sizes,
    )


class _ClosedOnFailedBootstrapConsumer(ClosedOnFailedBootstrap, KafkaConsumer):
    """KafkaConsumer 3.0, like the admin client, leaves its I/O thread running when its
    bootstrap fails."""


@contextmanager
def _consumer(
    deadline: float, *, key_deserializer: Deserializer, value_deserializer: Deserializer, max_poll_records: int
) -> Iterator[KafkaConsumer]:
    """A consumer outside any group (no offsets committed, nobody rebalanced), closed on every path."""
    remaining = max(1, remaining_ms(deadline))
    try:
        consumer = _ClosedOnFailedBootstrapConsumer(
            **short_lived_client_config(),
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
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_poll_records=max_poll_records,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
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
