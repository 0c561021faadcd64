"""Reading a topic's records for people: the newest ones, or from an offset or a timestamp, in one
partition or all, filtered by key or by text in the value.

Every read is bounded in wall time and in records scanned, joins no consumer group and commits
nothing: offsets and partitions come from the admin client, records from a consumer that is
assigned its partitions and seeks. Nothing here knows what the records mean; other apps may turn
a record into a link with `record_linker_register`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.protocol.consumer import OffsetSpec

from kafka_bridge.client import (
    BrokerAuthenticationFailed,
    BrokerUnavailable,
    ClosedOnFailedBootstrap,
    KafkaBridgeError,
    SaslLoginRejected,
    _NetClient,
    admin_client,
    bootstrap_servers,
    connection_config,
)


class TopicNotFound(KafkaBridgeError):
    """The broker does not know the topic (or the partition asked for)."""


# How stopping a partition's read is reported.
STOPPED_AT_END = "end"  # every record up to the end offset read when the page started
STOPPED_AT_LIMIT = "limit"  # enough matching records found
STOPPED_AT_SCAN_BOUND = "scan_bound"  # max_scanned records read in all
STOPPED_AT_TIME_BOUND = "time_bound"  # timeout_ms ran out


@dataclass(frozen=True)
class RecordView:
    """One record as the broker holds it: key, value and header values are the exact bytes
    (None for a null key, value or header value)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @property
    def timestamp(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC) if self.timestamp_ms >= 0 else None

    @property
    def key_text(self) -> str | None:
        """The key as text (bytes that are not UTF-8 escaped as \\xNN); None for a null key."""
        return bytes_text(self.key)

    @cached_property
    def value_json(self) -> str | None:
        """The value pretty-printed, when it is JSON; else None."""
        if self.value is None:
            return None
        try:
            return json.dumps(json.loads(self.value), indent=2, ensure_ascii=False)
        # Not UTF-8 (UnicodeDecodeError is a ValueError), not JSON, or nested too deep to parse.
        except (ValueError, RecursionError):
            return None

    @property
    def value_text(self) -> str | None:
        """The value pretty-printed when it is JSON, else as text (see `bytes_text`); None for a
        null value."""
        if self.value is None:
            return None
        return self.value_json if self.value_json is not None else bytes_text(self.value)

    @property
    def value_is_json(self) -> bool:
        return self.value_json is not None

    @property
    def header_texts(self) -> list[tuple[str, str | None]]:
        return [(name, bytes_text(value)) for name, value in self.headers]


# Control characters other than tab and line breaks: valid UTF-8, but invisible (or worse) on a
# page, so a binary value shows them as escapes as well.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def bytes_text(data: bytes | None) -> str | None:
    """UTF-8 text, with bytes that are not valid UTF-8, and control characters, shown as \\xNN."""
    if data is None:
        return None
    text = data.decode("utf-8", errors="backslashreplace")
    return _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass(frozen=True)
class PartitionRead:
    """What was read of one partition: its offsets when the read started, where the read began
    and the first offset it did not scan, and why it stopped (one of the STOPPED_AT_ values)."""

    partition: int
    earliest: int
    latest: int
    start: int
    next_offset: int
    stopped: str

    @property
    def unsearched_before(self) -> bool:
        """Older records exist that this read did not look at."""
        return self.start > self.earliest

    @property
    def older_search_offset(self) -> int:
        """Where a forward search of as many records again, just before `start`, would begin."""
        return max(self.earliest, self.start - (self.latest - self.start))


@dataclass(frozen=True)
class BrowseResult:
    topic: str
    records: list[RecordView]
    partitions: list[PartitionRead]
    scanned: int
    # True: the records are the newest (newest first); False: from a start point, oldest first.
    newest_first: bool
    # True when a bound, not the data, decided what was searched: the newest records of a
    # partition were looked at only back to `start` (newest mode), or a read stopped at
    # `next_offset` (forward mode).
    scan_bound_reached: bool
    timed_out: bool

    @property
    def resume_points(self) -> list[PartitionRead]:
        """Partitions whose search a bound cut short, for the caller to offer a continuation."""
        if self.newest_first:
            return [p for p in self.partitions if p.unsearched_before] if self.scan_bound_reached else []
        return [p for p in self.partitions if p.stopped in (STOPPED_AT_SCAN_BOUND, STOPPED_AT_TIME_BOUND)]


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    records: int  # latest minus earliest offset, summed over the partitions


# Other apps' ways of linking a record to what it is about (an order, say): each takes a
# RecordView and returns a URL, or None when the record is not one it knows.
_record_linkers: list[Callable[[RecordView], str | None]] = []


def record_linker_register(*, linker: Callable[[RecordView], str | None]) -> None:
    """Adds `linker` to the ones `record_link` asks; registering the same one twice is harmless."""
    if linker not in _record_linkers:
        _record_linkers.append(linker)


def record_link(*, record: RecordView) -> str | None:
    """The first URL a registered linker gives for `record`, or None."""
    for linker in _record_linkers:
        url = linker(record)
        if url:
            return url
    return None


def topics_summarize(*, timeout_ms: int) -> list[TopicSummary]:
    """Every topic but the broker's internal ones, by name. Raises `BrokerUnavailable`."""
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        with admin_client(timeout_ms=timeout_ms) as admin:
            described = [t for t in admin.describe_topics() if t["error_code"] == 0 and not t["is_internal"]]
            partitions = [TopicPartition(t["name"], p["partition_index"]) for t in described for p in t["partitions"]]
            earliest = _offsets(admin, partitions, OffsetSpec.EARLIEST, deadline)
            latest = _offsets(admin, partitions, OffsetSpec.LATEST, deadline)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} did not list its topics ({type(exc).__name__})"
        ) from exc
    return [
        TopicSummary(
            name=t["name"],
            partitions=len(t["partitions"]),
            records=sum(
                max(0, latest[tp] - earliest[tp])
                for tp in (TopicPartition(t["name"], p["partition_index"]) for p in t["partitions"])
            ),
        )
        for t in sorted(described, key=lambda t: t["name"])
    ]


def topic_records_read(
    *,
    topic: str,
    partitions: Iterable[int] | None = None,
    from_offset: int | None = None,
    from_timestamp: datetime | None = None,
    key: str | None = None,
    contains: str | None = None,
    limit: int,
    max_scanned: int,
    timeout_ms: int,
) -> BrowseResult:
    """Records of `topic` (all partitions, or those in `partitions`) matching `key` (the exact
    key, as UTF-8) and `contains` (bytes of the value, as UTF-8), at most `limit` of them.

    With `from_offset` (the same offset in each partition) or `from_timestamp` (the first record
    at or after it), the first matches from there, oldest first; otherwise the newest matches,
    newest first. Both orders are by record timestamp, then partition and offset. At most
    `max_scanned` records are read and the whole call takes about `timeout_ms` at most; the
    result says when either bound cut the search short. Raises `BrokerUnavailable` and
    `TopicNotFound`.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    forward = from_offset is not None or from_timestamp is not None
    key_bytes = key.encode() if key is not None else None
    needle = contains.encode() if contains else None
    filtered = key_bytes is not None or needle is not None

    try:
        with admin_client(timeout_ms=max(1, _remaining_ms(deadline))) as admin:
            tps = _partitions(admin, topic, partitions)
            earliest = _offsets(admin, tps, OffsetSpec.EARLIEST, deadline)
            latest = _offsets(admin, tps, OffsetSpec.LATEST, deadline)
            at_time = _offsets(admin, tps, int(from_timestamp.timestamp() * 1000), deadline) if from_timestamp else {}
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} did not describe {topic} ({type(exc).__name__})"
        ) from exc

    starts: dict[TopicPartition, int] = {}
    # Newest mode: whether the scan bound, rather than `limit`, decided how far back to look.
    window_bounded = filtered or limit * len(tps) > max_scanned
    for tp in tps:
        if from_offset is not None:
            starts[tp] = min(max(from_offset, earliest[tp]), latest[tp])
        elif from_timestamp is not None:
            # Kafka answers -1 when no record is that recent.
            found = at_time[tp]
            starts[tp] = latest[tp] if found is None or found < 0 else max(found, earliest[tp])
        else:
            # The newest `limit` records of all partitions are among the newest `limit` of each;
            # a filter needs more, as far back as the scan bound allows.
            window = max(1, max_scanned // len(tps)) if window_bounded else limit
            starts[tp] = max(earliest[tp], latest[tp] - window)

    scan = _Scan(
        starts=starts,
        ends=latest,
        matches=lambda record: _matches(record, key_bytes, needle),
        limit_per_partition=limit if forward else None,
        max_scanned=max_scanned,
    )
    try:
        scan.run(deadline=deadline)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} stopped answering ({type(exc).__name__})"
        ) from exc
    found_records, next_offsets, stopped, scanned = scan.found, scan.next_offsets, scan.stopped, scan.scanned

    records = [r for tp in tps for r in found_records[tp]]
    if forward:
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    else:
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset), reverse=True)
    reads = [
        PartitionRead(
            partition=tp.partition,
            earliest=earliest[tp],
            latest=latest[tp],
            start=starts[tp],
            next_offset=next_offsets[tp],
            stopped=stopped[tp],
        )
        for tp in tps
    ]
    if forward:
        bound_reached = any(r.stopped == STOPPED_AT_SCAN_BOUND for r in reads)
    else:
        bound_reached = window_bounded and any(r.unsearched_before for r in reads)
        bound_reached = bound_reached or any(r.stopped == STOPPED_AT_SCAN_BOUND for r in reads)
    return BrowseResult(
        topic=topic,
        records=records[:limit],
        partitions=reads,
        scanned=scanned,
        newest_first=not forward,
        scan_bound_reached=bound_reached,
        timed_out=any(r.stopped == STOPPED_AT_TIME_BOUND for r in reads),
    )


class _Scan:
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
                remaining = _remaining_ms(deadline)
                if remaining <= 0:
                    self._stop_the_rest(STOPPED_AT_TIME_BOUND)
                    return
                for tp, batch in consumer.poll(timeout_ms=min(remaining, 200)).items():
                    if tp not in self.stopped:
                        self._take(tp, batch)
                for tp in self.starts:
                    if tp in self.stopped:
                        continue
                    # Transaction markers and compacted-away records take offsets no record
                    # has: the consumer's position, not the last record, says the end is reached.
                    position = consumer.position(tp, timeout_ms=max(1, _remaining_ms(deadline)))
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


def record_at(*, topic: str, partition: int, offset: int, timeout_ms: int) -> RecordView | None:
    """The record at `offset` of `topic`'s `partition`, exactly as the broker holds it; None when
    there is no such topic, partition or offset (past the end, deleted, or compacted away).
    Raises `BrokerUnavailable`, also when the broker did not hand the record over in time."""
    try:
        result = topic_records_read(
            topic=topic, partitions=[partition], from_offset=offset, limit=1, max_scanned=1, timeout_ms=timeout_ms
        )
    except TopicNotFound:
        return None
    if result.records:
        record = result.records[0]
        return record if record.offset == offset else None
    if result.timed_out:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} did not return {topic}[{partition}]@{offset} "
            f"within {timeout_ms / 1000:g} s"
        )
    return None


def _remaining_ms(deadline: float) -> int:
    return int((deadline - time.monotonic()) * 1000)


def _partitions(admin, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
    described = [t for t in admin.describe_topics([topic]) if t["error_code"] == 0]
    if not described:
        raise TopicNotFound(f"no topic named {topic!r}")
    existing = sorted(p["partition_index"] for p in described[0]["partitions"])
    if partitions is None:
        return [TopicPartition(topic, p) for p in existing]
    missing = sorted(set(partitions) - set(existing))
    if missing:
        raise TopicNotFound(f"topic {topic!r} has no partition {', '.join(map(str, missing))} (it has {len(existing)})")
    return [TopicPartition(topic, p) for p in sorted(set(partitions))]


def _offsets(admin, partitions: list[TopicPartition], spec, deadline: float) -> dict[TopicPartition, int]:
    if not partitions:
        return {}
    found = admin.list_partition_offsets(dict.fromkeys(partitions, spec), timeout_ms=max(1, _remaining_ms(deadline)))
    return {tp: found[tp].offset for tp in partitions}


def _matches(record, key: bytes | None, needle: bytes | None) -> bool:
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
    remaining = max(1, _remaining_ms(deadline))
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
            fetch_max_wait_ms=100,
            request_timeout_ms=min(max(remaining, 1000), 300_000),
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
        consumer.close(autocommit=False, timeout_ms=1000)
