"""Sending dead-lettered events through again: `manage.py replay_dlt` and its permission check.

Replayed records go back to the topic they came from (the `dlt.original.topic` header) with
their original key, value and headers, so the event keeps its event_id and the platform its
Idempotency-Key. Exports of the replayed orders are reopened first, so the consumer tries them
again instead of acknowledging them as dead-lettered earlier. The DLT is read in a consumer
group of its own, so a record is replayed once, and every replay leaves an audit row.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition

from exports.dead_letters import DeadLetter, dead_letters_list, replay_group, replayed_positions
from exports.events import PoisonRecord, export_request_decode
from exports.models import RedriveAudit
from exports.services import order_export_reopen
from kafka_bridge.client import connection_config
from kafka_bridge.dead_letter import DLT_HEADER_PREFIX
from kafka_bridge.offsets import OffsetReset, ResetTarget, group_offsets_reset
from kafka_bridge.producer import producer_config

# DeadLetter and dead_letters_list live with the dead letters' other reads in exports.dead_letters,
# and are still imported from here.
__all__ = [
    "REDRIVE_PERMISSION",
    "DeadLetter",
    "DeadLetterSelection",
    "DeadLettersNotFound",
    "RedriveForbidden",
    "ReplayItem",
    "dead_letters_list",
    "dlt_replay",
    "export_offsets_reset",
    "redrive_operator",
]

REDRIVE_PERMISSION = "exports.redrive_orderexport"


class RedriveForbidden(Exception):
    pass


class DeadLettersNotFound(Exception):
    """Selected dead letters that are not on the DLT, or were replayed before."""


@dataclass(frozen=True)
class DeadLetterSelection:
    """Which dead letters to replay: by DLT partition and offset, or by key (an order id)."""

    positions: frozenset[tuple[int, int]] = frozenset()
    keys: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.positions or self.keys)

    def matches(self, record: ConsumerRecord) -> bool:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        return (record.partition, record.offset) in self.positions or key in self.keys

    def unmatched(self, records: list[ConsumerRecord]) -> list[str]:
        """What this selection names that none of `records` is, in words."""
        found_positions = {(r.partition, r.offset) for r in records}
        found_keys = {r.key.decode("utf-8", "replace") for r in records if r.key is not None}
        return [f"DLT[{p}]@{o}" for p, o in sorted(self.positions - found_positions)] + [
            f"key {key!r}" for key in sorted(self.keys - found_keys)
        ]


@dataclass(frozen=True)
class ReplayItem:
    partition: int
    offset: int
    key: str | None
    target_topic: str
    event_id: str | None
    order_id: int | None
    error: str

    def __str__(self) -> str:
        return (
            f"DLT[{self.partition}]@{self.offset} -> {self.target_topic} key={self.key} "
            f"event={self.event_id or '-'}: {self.error}"
        )


def redrive_operator(*, username: str):
    """The active user `username` if they may redrive; raises `RedriveForbidden` otherwise."""
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise RedriveForbidden(f"no active user {username!r}")
    if not user.has_perm(REDRIVE_PERMISSION):
        raise RedriveForbidden(f"user {username!r} lacks the permission {REDRIVE_PERMISSION}")
    return user


def _header(record: ConsumerRecord, name: str) -> str | None:
    for header, value in record.headers or []:
        if header == name:
            return value.decode("utf-8", "replace")
    return None


def _item(record: ConsumerRecord) -> ReplayItem:
    try:
        request = export_request_decode(record.value)
        event_id, order_id = str(request.event_id), request.order_id
    except PoisonRecord:
        event_id, order_id = _header(record, "event_id"), None
    return ReplayItem(
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        target_topic=_header(record, "dlt.original.topic") or settings.ORDER_EXPORT_TOPIC,
        event_id=event_id,
        order_id=order_id,
        error=_header(record, "dlt.error") or "",
    )


def _read_dlt(
    consumer: KafkaConsumer, *, limit: int | None, timeout: float, from_start: bool = False
) -> list[ConsumerRecord]:
    """Records from the replay group's position (or the DLT's start) up to the DLT's current
    end, at most `limit`."""
    topic = settings.ORDER_EXPORT_DLT_TOPIC
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    if from_start:
        consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {topic} to its end within {timeout:g} s")
        for tp, batch in consumer.poll(timeout_ms=500).items():
            records.extend(r for r in batch if r.offset < end[tp])
    # Oldest first across partitions, and in offset order within each: a limit then takes a
    # prefix of every partition, so committing past the replayed records skips none.
    by_partition: dict[int, list[ConsumerRecord]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(record.partition, []).append(record)
    merged = list(heapq.merge(*by_partition.values(), key=lambda r: r.timestamp))
    return merged[:limit] if limit is not None else merged


def dlt_replay(
    *,
    operator: str,
    dry_run: bool = False,
    limit: int | None = None,
    selection: DeadLetterSelection | None = None,
    timeout: float = 30.0,
) -> list[ReplayItem]:
    """Replay dead-lettered records to their original topic: all not replayed yet (the oldest
    `limit`), or only those `selection` names. A selection naming a record that is not on the
    DLT, or was replayed before, replays nothing and raises `DeadLettersNotFound`."""
    user = redrive_operator(username=operator)
    consumer = KafkaConsumer(
        **connection_config(),
        group_id=replay_group(),
        client_id=settings.KAFKA_CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        records = _records_to_replay(consumer, selection=selection, limit=limit, timeout=timeout)
        items = [_item(record) for record in records]
        if dry_run or not records:
            return items
        began_at = timezone.now()
        order_export_reopen(order_ids=[item.order_id for item in items if item.order_id is not None])
        _republish(records, items, timeout=timeout)
        if not selection:
            _commit_past(consumer, records)
        _replay_audit(user, records, items, selected=bool(selection), began_at=began_at)
        return items
    finally:
        consumer.close(autocommit=False)


def _records_to_replay(
    consumer: KafkaConsumer, *, selection: DeadLetterSelection | None, limit: int | None, timeout: float
) -> list[ConsumerRecord]:
    """The DLT records `dlt_replay` replays, oldest first: those `selection` names, or all not
    replayed yet; at most `limit`. Raises `DeadLettersNotFound` as `dlt_replay` does."""
    replayed_before = replayed_positions()
    if selection:
        # The whole DLT, wherever the replay group stands: a record may be selected after
        # newer ones were replayed, and selecting it must not move the group past others.
        candidates = [
            r
            for r in _read_dlt(consumer, limit=None, timeout=timeout, from_start=True)
            if (r.partition, r.offset) not in replayed_before
        ]
        selected = [r for r in candidates if selection.matches(r)]
        if missing := selection.unmatched(selected):
            raise DeadLettersNotFound(", ".join(missing))
        return selected[:limit] if limit is not None else selected
    records = [
        r for r in _read_dlt(consumer, limit=None, timeout=timeout) if (r.partition, r.offset) not in replayed_before
    ]
    return records[:limit] if limit is not None else records


def _republish(records: list[ConsumerRecord], items: list[ReplayItem], *, timeout: float) -> None:
    """Send each record to its item's target topic with its key, value and headers (the `dlt.*`
    ones left out), and wait until the broker has every one."""
    producer = KafkaProducer(**producer_config(timeout_ms=int(timeout * 1000)))
    try:
        futures = [
            producer.send(
                item.target_topic,
                key=record.key,
                value=record.value,
                headers=[(n, v) for n, v in record.headers or [] if not n.startswith(DLT_HEADER_PREFIX)],
            )
            for record, item in zip(records, items)
        ]
        for future in futures:
            future.get(timeout=timeout)
    finally:
        producer.close(timeout=5)


def _commit_past(consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
    """Move the replay group past `records` on each of their partitions."""
    next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in next_offsets or next_offsets[tp].offset <= record.offset:
            next_offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
    consumer.commit(next_offsets)


def _replay_audit(
    user, records: list[ConsumerRecord], items: list[ReplayItem], *, selected: bool, began_at: datetime
) -> None:
    RedriveAudit.objects.create(
        created_at=began_at,
        actor=user.get_username(),
        action=RedriveAudit.Action.REPLAY_DLT,
        event_ids=[item.event_id for item in items],
        order_ids=[item.order_id for item in items if item.order_id is not None],
        dlt_positions=[[record.topic, record.partition, record.offset] for record in records],
        detail=f"{len(items)} record(s) from {settings.ORDER_EXPORT_DLT_TOPIC}"
        + (" selected by partition and offset or key" if selected else ""),
    )


def export_offsets_reset(*, operator: str, target: ResetTarget, dry_run: bool) -> OffsetReset:
    """Move the export group's committed offsets on the event topic to `target` for `operator`
    (who must hold the redrive permission), and audit what moved; a dry run only says what
    would. Raises what `group_offsets_reset` raises, a group with members included."""
    user = redrive_operator(username=operator)
    reset = group_offsets_reset(
        group=settings.ORDER_EXPORT_CONSUMER_GROUP, topic=settings.ORDER_EXPORT_TOPIC, target=target, dry_run=dry_run
    )
    if not dry_run:
        RedriveAudit.objects.create(
            actor=user.get_username(),
            action=RedriveAudit.Action.RESET_OFFSETS,
            detail="; ".join([reset.summary(), *map(str, reset.moves)]),
        )
    return reset
