"""Reading a topic's records for people: the newest ones, or from an offset or a timestamp, in one
partition or all, filtered by key or by text in the value.

Every read is bounded in wall time, in records scanned and in the bytes it keeps of each record
(`records.VALUE_HEAD_BYTES` and the rest; see `scan` for its memory), joins no
consumer group and commits nothing: offsets and partitions come from the admin client, records from a consumer that is
assigned its partitions and seeks. Nothing here knows what the records mean; other apps may turn
a record into a link with `record_linker_register`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.protocol.consumer import OffsetSpec

from kafka_bridge.cluster.status import existing_partition_offsets, has_offsets
from kafka_bridge.connection import BrokerUnavailable, admin_client, bootstrap_servers
from kafka_bridge.console.browser.records import (
    HEADER_HEAD_BYTES,
    KEY_HEAD_BYTES,
    STOPPED_AT_END,
    STOPPED_AT_LIMIT,
    STOPPED_AT_SCAN_BOUND,
    STOPPED_AT_TIME_BOUND,
    VALUE_HEAD_BYTES,
    BrowseResult,
    PartitionRead,
    RecordView,
    TopicNotFound,
    TopicSummary,
    bytes_text,
)
from kafka_bridge.console.browser.scan import HeaderSearch, Scan, partition_offsets, remaining_ms, topic_partitions

# The record types live in kafka_bridge.console.browser.records and the scanning in .scan; the
# names callers use are all importable from here.
__all__ = [
    "HEADER_HEAD_BYTES",
    "KEY_HEAD_BYTES",
    "STOPPED_AT_END",
    "STOPPED_AT_LIMIT",
    "STOPPED_AT_SCAN_BOUND",
    "STOPPED_AT_TIME_BOUND",
    "BrowseResult",
    "PartitionRead",
    "RecordView",
    "TopicNotFound",
    "TopicSummary",
    "VALUE_HEAD_BYTES",
    "bytes_text",
    "record_at",
    "record_link",
    "record_linker_register",
    "topic_records_read",
    "topics_summarize",
]


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


def topics_summarize(*, names: Collection[str], timeout_ms: int) -> list[TopicSummary]:
    """The topics of `names` the broker has, by name, but never its internal ones. Raises
    `BrokerUnavailable`."""
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        with admin_client(timeout_ms=timeout_ms) as admin:
            # Only the topics asked for: an empty list describes none (None would be all).
            described = [
                t for t in admin.describe_topics(sorted(names)) if t["error_code"] == 0 and not t["is_internal"]
            ]
            partitions = [TopicPartition(t["name"], p["partition_index"]) for t in described for p in t["partitions"]]
            # Topics another client deletes meanwhile are left out.
            earliest = existing_partition_offsets(
                admin, partitions, OffsetSpec.EARLIEST, timeout_ms=max(1, remaining_ms(deadline))
            )
            latest = existing_partition_offsets(
                admin, partitions, OffsetSpec.LATEST, timeout_ms=max(1, remaining_ms(deadline))
            )
            described = [t for t in described if has_offsets(t, earliest) and has_offsets(t, latest)]
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} did not list its topics ({type(exc).__name__})"
        ) from exc
    return [
        TopicSummary(
            name=t["name"],
            partitions=len(t["partitions"]),
            records=sum(
                max(0, latest.get(tp, 0) - earliest.get(tp, 0))
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
    header: str | None = None,
    header_contains: str | None = None,
    limit: int,
    max_scanned: int,
    timeout_ms: int,
    value_bytes: int | None = VALUE_HEAD_BYTES,
) -> BrowseResult:
    """Records of `topic` (all partitions, or those in `partitions`) matching `key` (the exact
    key, as UTF-8), `contains` (bytes of the value, as UTF-8) and a header named `header` (any
    name when None) whose value holds `header_contains` (e.g. a trace id in `traceparent`), at
    most `limit` of them.

    With `from_offset` (the same offset in each partition) or `from_timestamp` (the first record
    at or after it), the first matches from there, oldest first; otherwise the newest matches,
    newest first. Both orders are by record timestamp, then partition and offset. At most
    `max_scanned` records are read and the whole call takes about `timeout_ms` at most; the
    result says when either bound cut the search short. Each record keeps the first
    `value_bytes` of its value (None: all of it) and its size. Raises `BrokerUnavailable` and
    `TopicNotFound`.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    forward = from_offset is not None or from_timestamp is not None
    key_bytes = key.encode() if key is not None else None
    needle = contains.encode() if contains else None
    header_search = (
        HeaderSearch(header or None, header_contains.encode() if header_contains else None)
        if header or header_contains
        else None
    )
    filtered = key_bytes is not None or needle is not None or header_search is not None

    tps, earliest, latest, at_time = _offsets_read(topic, partitions, from_timestamp, deadline)
    # Newest mode: whether the scan bound, rather than `limit`, decided how far back to look.
    window_bounded = filtered or limit * len(tps) > max_scanned
    starts = _starts(
        tps,
        earliest=earliest,
        latest=latest,
        at_time=at_time,
        from_offset=from_offset,
        from_timestamp=from_timestamp,
        window_bounded=window_bounded,
        limit=limit,
        max_scanned=max_scanned,
    )
    scan = Scan(
        starts=starts,
        ends=latest,
        key=key_bytes,
        contains=needle,
        header=header_search,
        value_head_bytes=value_bytes,
        limit_per_partition=limit if forward else None,
        max_scanned=max_scanned,
    )
    try:
        scan.run(deadline=deadline)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} stopped answering ({type(exc).__name__})"
        ) from exc
    return _result(topic, tps, scan, earliest=earliest, forward=forward, window_bounded=window_bounded, limit=limit)


def _offsets_read(
    topic: str, partitions: Iterable[int] | None, from_timestamp: datetime | None, deadline: float
) -> tuple[list[TopicPartition], dict[TopicPartition, int], dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The partitions to read, their earliest and latest offsets, and (with `from_timestamp`)
    the offset of each one's first record at or after it."""
    try:
        with admin_client(timeout_ms=max(1, remaining_ms(deadline))) as admin:
            tps = topic_partitions(admin, topic, partitions)
            earliest = partition_offsets(admin, tps, OffsetSpec.EARLIEST, deadline)
            latest = partition_offsets(admin, tps, OffsetSpec.LATEST, deadline)
            at_time = (
                partition_offsets(admin, tps, int(from_timestamp.timestamp() * 1000), deadline)
                if from_timestamp
                else {}
            )
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"the broker at {bootstrap_servers()} did not describe {topic} ({type(exc).__name__})"
        ) from exc
    return tps, earliest, latest, at_time


def _starts(
    tps: list[TopicPartition],
    *,
    earliest: dict[TopicPartition, int],
    latest: dict[TopicPartition, int],
    at_time: dict[TopicPartition, int],
    from_offset: int | None,
    from_timestamp: datetime | None,
    window_bounded: bool,
    limit: int,
    max_scanned: int,
) -> dict[TopicPartition, int]:
    """Where the read of each partition begins."""
    starts: dict[TopicPartition, int] = {}
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
    return starts


def _result(
    topic: str,
    tps: list[TopicPartition],
    scan: Scan,
    *,
    earliest: dict[TopicPartition, int],
    forward: bool,
    window_bounded: bool,
    limit: int,
) -> BrowseResult:
    """The finished scan as a result: the matches in the order asked for, each partition's read,
    and whether a bound cut the search short."""
    records = [r for tp in tps for r in scan.found[tp]]
    if forward:
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    else:
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset), reverse=True)
    reads = [
        PartitionRead(
            partition=tp.partition,
            earliest=earliest[tp],
            latest=scan.ends[tp],
            start=scan.starts[tp],
            next_offset=scan.next_offsets[tp],
            stopped=scan.stopped[tp],
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
        scanned=scan.scanned,
        newest_first=not forward,
        scan_bound_reached=bound_reached,
        timed_out=any(r.stopped == STOPPED_AT_TIME_BOUND for r in reads),
    )


def record_at(
    *, topic: str, partition: int, offset: int, timeout_ms: int, value_bytes: int | None = VALUE_HEAD_BYTES
) -> RecordView | None:
    """The record at `offset` of `topic`'s `partition`, exactly as the broker holds it, its value
    to its first `value_bytes` (None: all of it, for a download); None when there is no such
    topic, partition or offset (past the end, deleted, or compacted away). Raises
    `BrokerUnavailable`, also when the broker did not hand the record over in time."""
    try:
        result = topic_records_read(
            topic=topic,
            partitions=[partition],
            from_offset=offset,
            limit=1,
            max_scanned=1,
            timeout_ms=timeout_ms,
            value_bytes=value_bytes,
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
