"""The dead letters as the operator sees them: the DLT's newest records for the admin's
dead-letters page, each with its order's export status, whether it was replayed already, by
`replay_dlt` or a redrive, and why it cannot be; and the DLT's records as a redrive reads them,
at the positions it selected or by a scan in chunks (exports.redrive, which reads the same
replay state from here)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from exports.models import OrderExport, RedriveAudit
from exports.record_keys import order_id_from_key
from kafka_bridge.consumer.dead_letters import CUT_HEADER
from kafka_bridge.registry import event_topics


@dataclass(frozen=True)
class DeadLetter:
    """A record on the DLT as the operator's page shows it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    order_id: int | None
    error: str
    attempts: str
    original: str  # "<topic>[<partition>]@<offset>"
    export_status: str | None  # the order's export, None when there is no such order or export
    replayed: bool
    # Why it cannot be redriven ("" when it can): a target that is not this app's, a bounded letter.
    refusal: str = ""

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)


# A redrive reads the DLT in chunks of at most this many records, each republished before the
# next is read, and with fetches of at most this many bytes (compressed) at a time: a DLT of any
# size, whatever its records hold, is redriven in bounded memory.
REPLAY_CHUNK = 500
REPLAY_FETCH_BYTES = 1024 * 1024
# How often a scan says how far it got.
PROGRESS_EVERY_SECONDS = 2.0


def redrive_targets() -> set[str]:
    """The topics a redrive may write to: the event topics the apps registered, the DLT's own
    source among them. A dead letter's `dlt.original.topic` is only a header, which whoever can
    write to the DLT sets: it never chooses where an operator's click writes."""
    return set(event_topics())


class RedriveRefusal(NamedTuple):
    """Why a dead letter cannot be redriven: `kind` for the metric ("cut", "target"), `reason`
    in words for the operator."""

    kind: str
    reason: str


def redrive_refusal(
    *, target_topic: str, headers: list[tuple[str, bytes | None]] | None, targets: set[str]
) -> RedriveRefusal | None:
    """Why a dead letter cannot be redriven (None when it can)."""
    cut = next((v for n, v in headers or () if n == CUT_HEADER), None)
    if cut is not None:
        return RedriveRefusal(
            "cut",
            "a bounded dead letter, not the record: the DLT could not keep it "
            f"({cut.decode('utf-8', 'replace')}); the record is still on its topic",
        )
    if target_topic not in targets:
        return RedriveRefusal(
            "target", f"its dlt.original.topic {target_topic!r} is not an event topic of this app; refused"
        )
    return None


def replay_group() -> str:
    """The consumer group `replay_dlt` reads the DLT in, so that a record is replayed once."""
    return f"{settings.ORDER_EXPORT_CONSUMER_GROUP}.dlt-replay"


def replayed_positions() -> set[tuple[int, int]]:
    """DLT positions replayed on their own earlier (a replay of everything moves the replay
    group past what it replays; a selection leaves the group where it is)."""
    topic = settings.ORDER_EXPORT_DLT_TOPIC
    positions = RedriveAudit.objects.filter(action=RedriveAudit.Action.REPLAY_DLT).exclude(dlt_positions=[])
    return {(p, o) for rows in positions.values_list("dlt_positions", flat=True) for t, p, o in rows if t == topic}


def dead_letters_list(*, limit: int = 200, timeout_ms: int) -> list[DeadLetter]:
    """The newest `limit` records of the DLT, newest first, each with its order's export status
    and whether it was replayed already (two queries, whatever the count). Raises
    `KafkaBridgeError` when the broker is unreachable or the DLT does not exist."""
    from kafka_bridge.console.browser.reading import topic_records_read

    topic = settings.ORDER_EXPORT_DLT_TOPIC
    result = topic_records_read(topic=topic, limit=limit, max_scanned=limit * 3, timeout_ms=timeout_ms)
    committed = _replay_group_positions(timeout_ms=timeout_ms)
    replayed = replayed_positions()
    keys = [record.key.decode("utf-8", "replace") if record.key is not None else None for record in result.records]
    order_ids = [order_id_from_key(key) for key in keys]
    known = {order_id for order_id in order_ids if order_id is not None}
    statuses = dict(OrderExport.objects.filter(order_id__in=known).values_list("order_id", "status"))
    targets = redrive_targets()
    letters = []
    for record, key, order_id in zip(result.records, keys, order_ids):
        headers = {name: (value or b"").decode("utf-8", "replace") for name, value in record.headers}
        refusal = redrive_refusal(
            target_topic=headers.get("dlt.original.topic") or settings.ORDER_EXPORT_TOPIC,
            headers=record.headers,
            targets=targets,
        )
        letters.append(
            DeadLetter(
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                key=key,
                order_id=order_id,
                error=headers.get("dlt.error", ""),
                attempts=headers.get("dlt.attempts", ""),
                original=f"{headers.get('dlt.original.topic', '?')}[{headers.get('dlt.original.partition', '?')}]"
                f"@{headers.get('dlt.original.offset', '?')}",
                export_status=statuses.get(order_id),
                replayed=(record.partition, record.offset) in replayed
                or record.offset < committed.get(record.partition, 0),
                refusal=refusal.reason if refusal else "",
            )
        )
    return letters


def _replay_group_positions(*, timeout_ms: int) -> dict[int, int]:
    """The replay group's committed offset per DLT partition: what `replay_dlt` replayed already."""
    from kafka_bridge.connection import admin_client

    group = replay_group()
    with admin_client(timeout_ms=timeout_ms) as admin:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in committed.items()
        if tp.topic == settings.ORDER_EXPORT_DLT_TOPIC and meta is not None and meta.offset >= 0
    }


def dlt_records_at(
    consumer: KafkaConsumer, *, positions: Iterable[tuple[int, int]], timeout: float
) -> list[ConsumerRecord]:
    """The DLT's records at `positions` (partition, offset), read by seeking to each: what a
    selection costs, whatever the DLT holds before and after. A position with no record (past
    the end, deleted, compacted) is left out. Raises TimeoutError past `timeout`."""
    topic = settings.ORDER_EXPORT_DLT_TOPIC
    known = set(consumer.partitions_for_topic(topic) or ())
    wanted: dict[int, set[int]] = defaultdict(set)
    for partition, offset in positions:
        if partition in known:
            wanted[partition].add(offset)
    found: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    for partition, offsets in sorted(wanted.items()):
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        start, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
        pending = sorted(offset for offset in offsets if start <= offset < end)
        sought = None
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic}[{partition}] at {pending[0]} within {timeout:g} s")
            if sought != pending[0]:
                sought = pending[0]
                consumer.seek(tp, sought)
            batch = consumer.poll(timeout_ms=500).get(tp, [])
            if not batch:
                continue
            found += [record for record in batch if record.offset in offsets]
            pending = [offset for offset in pending if offset > batch[-1].offset]
    return sorted(found, key=lambda r: (r.partition, r.offset))


def dlt_records_scan(
    consumer: KafkaConsumer,
    *,
    from_start: bool,
    keep: Callable[[ConsumerRecord], bool],
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> Iterator[list[ConsumerRecord]]:
    """The DLT's records that `keep` takes, up to its end as it was when the scan began, in
    chunks of about `REPLAY_CHUNK` (each partition's in offset order): from the replay group's
    position, or from the start. Only the records kept are held, one chunk at a time. Raises
    TimeoutError when a step reads nothing new for `timeout` seconds."""
    topic = settings.ORDER_EXPORT_DLT_TOPIC
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        return
    consumer.assign(partitions)
    if from_start:
        consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)
    total = sum(max(0, end[tp] - consumer.position(tp)) for tp in partitions)
    read, kept = 0, []
    deadline, told = time.monotonic() + timeout, time.monotonic()
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {topic} further within {timeout:g} s ({read:,} of {total:,} read)")
        for tp, batch in consumer.poll(timeout_ms=500).items():
            batch = [record for record in batch if record.offset < end[tp]]
            read += len(batch)
            kept += [record for record in batch if keep(record)]
            deadline = time.monotonic() + timeout
        if progress is not None and time.monotonic() - told >= PROGRESS_EVERY_SECONDS:
            told = time.monotonic()
            progress(f"read {read:,} of {total:,} record(s) of {topic}")
        if len(kept) >= REPLAY_CHUNK:
            yield kept
            kept = []
    if progress is not None and total:
        progress(f"read {read:,} of {total:,} record(s) of {topic}")
    if kept:
        yield kept
