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

from django.conf import settings
from django.contrib.auth import get_user_model
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition

from exports.events import PoisonRecord, export_request_decode
from exports.models import RedriveAudit
from exports.services import order_export_reopen
from kafka_bridge.client import connection_config
from kafka_bridge.dead_letter import DLT_HEADER_PREFIX
from kafka_bridge.producer import producer_config

REDRIVE_PERMISSION = "exports.redrive_orderexport"


class RedriveForbidden(Exception):
    pass


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


def _read_dlt(consumer: KafkaConsumer, *, limit: int | None, timeout: float) -> list[ConsumerRecord]:
    """Records from the replay group's position up to the DLT's current end, at most `limit`."""
    topic = settings.ORDER_EXPORT_DLT_TOPIC
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
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


def dlt_replay(*, operator: str, dry_run: bool = False, limit: int | None = None, timeout: float = 30.0) -> list[ReplayItem]:
    """Replay dead-lettered records (all, or the oldest `limit`) to their original topic."""
    user = redrive_operator(username=operator)
    consumer = KafkaConsumer(
        **connection_config(),
        group_id=f"{settings.ORDER_EXPORT_CONSUMER_GROUP}.dlt-replay",
        client_id=settings.KAFKA_CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        records = _read_dlt(consumer, limit=limit, timeout=timeout)
        items = [_item(record) for record in records]
        if dry_run or not records:
            return items
        order_export_reopen(order_ids=[item.order_id for item in items if item.order_id is not None])
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
        next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in next_offsets or next_offsets[tp].offset <= record.offset:
                next_offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        consumer.commit(next_offsets)
        RedriveAudit.objects.create(
            actor=user.get_username(),
            action=RedriveAudit.Action.REPLAY_DLT,
            event_ids=[item.event_id for item in items],
            order_ids=[item.order_id for item in items if item.order_id is not None],
            detail=f"{len(items)} record(s) from {settings.ORDER_EXPORT_DLT_TOPIC}",
        )
        return items
    finally:
        consumer.close(autocommit=False)
