"""Sending dead-lettered events through again: `manage.py replay_dlt`, the dead letters page's
redrive, and their permission check.

Replayed records go back to the topic they came from (the `dlt.original.topic` header, if it
names an event topic this app registered, and only then) through the path that wrote them to the
DLT (`kafka_bridge.consumer.dead_letters.RecordCopier`): key, value and headers byte for byte, null ones
included, the `dlt.*` headers left out and `redrive.from` added, so the event keeps its event_id
and the platform its Idempotency-Key.

An export is reopened only together with its record being on the topic: the records are
republished first, then the exports reopened and the audit row written in one transaction. The
consumer does not wait for that: a failed export is sent again for the copy of its latest dead
letter (`redrive.from`, `exports.services.order_exports_plan`), and the reopening leaves alone an
export the consumer has taken up again meanwhile. A crash between the two leaves the copies on
the topic and the exports failed until the consumer reads them: never pending with nothing on
the way.

A selection (the page's, `--offset`) is read by seeking to each position; `--key` and a replay
of everything read the DLT in chunks of `REPLAY_CHUNK`, each republished before the next is read.
A record that cannot be republished is named with its reason and the others go on; the replay
group (which marks what a replay of everything has done) never moves past it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition

from exports import metrics
from exports.console.dead_letters import (
    REPLAY_CHUNK,
    REPLAY_FETCH_BYTES,
    DeadLetter,
    dead_letters_list,
    dlt_records_at,
    dlt_records_scan,
    redrive_refusal,
    redrive_targets,
    replay_group,
    replayed_positions,
)
from exports.events import REDRIVE_HEADER, PoisonRecord, export_request_decode, redrive_header
from exports.models import RedriveAudit
from exports.services import DeadLetterRedrive, ReplayedDeadLetter, order_exports_redrive
from kafka_bridge.cluster.group_offsets import OffsetReset, ResetTarget, group_offsets_reset
from kafka_bridge.connection import connection_config
from kafka_bridge.consumer.dead_letters import DLT_HEADER_PREFIX, DeadLetterPosition, RecordCopier
from kafka_bridge.send_failures import error_line

# DeadLetter and dead_letters_list live with the dead letters' other reads in exports.console.dead_letters,
# and are still imported from here.
__all__ = [
    "REDRIVE_PERMISSION",
    "DeadLetter",
    "DeadLetterSelection",
    "DeadLettersNotFound",
    "RedriveForbidden",
    "Refusal",
    "ReplayItem",
    "ReplayResult",
    "dead_letters_list",
    "dlt_replay",
    "export_offsets_reset",
    "redrive_operator",
    "redrive_refusal",
    "redrive_targets",
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


@dataclass(frozen=True)
class Refusal:
    """A dead letter a replay could not republish, and why."""

    partition: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}: {self.reason}"


@dataclass
class ReplayResult:
    """What a replay did: `items` republished (or, on a dry run, that would be), `refused` not."""

    items: list[ReplayItem] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


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
        if header == name and value is not None:
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


def dlt_replay(
    *,
    operator: str,
    dry_run: bool = False,
    limit: int | None = None,
    selection: DeadLetterSelection | None = None,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Replay dead-lettered records to their original topic: all not replayed yet (at most
    `limit`, oldest first, each partition's in offset order), or only those `selection` names. A
    selection naming a record that is not on the DLT, or was replayed before, replays nothing and
    raises `DeadLettersNotFound`. A record that cannot be republished (a target that is not an
    event topic of this app, a bounded dead letter, a refusal by the broker, whatever its error)
    is named in the result's `refused`, and the others go on. `progress` is told how a scan of
    the DLT advances; `timeout` bounds each step of reading it."""
    user = redrive_operator(username=operator)
    consumer = KafkaConsumer(**_replay_consumer_config())
    result = ReplayResult()
    try:
        for chunk in _chunks_to_replay(consumer, selection=selection, limit=limit, timeout=timeout, progress=progress):
            _replay_chunk(chunk, user=user, result=result, dry_run=dry_run, selected=bool(selection), timeout=timeout)
            if not selection and not dry_run:
                _commit_past(consumer, chunk, refused=result.refused)
        return result
    finally:
        consumer.close(autocommit=False)


def _replay_consumer_config() -> dict:
    return {
        **connection_config(),
        "group_id": replay_group(),
        "client_id": settings.KAFKA_CLIENT_ID,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Dead letters may be giants compressed to kilobytes: a fetch is bounded in bytes (each
        # partition's, and the whole), and a poll in records.
        "max_partition_fetch_bytes": REPLAY_FETCH_BYTES,
        "fetch_max_bytes": REPLAY_FETCH_BYTES,
        "max_poll_records": REPLAY_CHUNK,
    }


def _chunks_to_replay(
    consumer: KafkaConsumer,
    *,
    selection: DeadLetterSelection | None,
    limit: int | None,
    timeout: float,
    progress: Callable[[str], None] | None,
) -> Iterator[list[ConsumerRecord]]:
    """The DLT records `dlt_replay` replays, chunk by chunk: those `selection` names (one chunk:
    read where they are, or, for keys, found by a scan from the DLT's start), or all not replayed
    yet, from the replay group's position. Raises `DeadLettersNotFound` as `dlt_replay` does."""
    replayed_before = replayed_positions()
    if selection:
        if selection.keys:
            chunks = dlt_records_scan(
                consumer, from_start=True, keep=selection.matches, timeout=timeout, progress=progress
            )
            selected = [record for chunk in chunks for record in chunk]
        else:
            selected = dlt_records_at(consumer, positions=selection.positions, timeout=timeout)
        selected = [r for r in selected if (r.partition, r.offset) not in replayed_before]
        if missing := selection.unmatched(selected):
            raise DeadLettersNotFound(", ".join(missing))
        yield selected[:limit] if limit is not None else selected
        return
    remaining = limit
    for chunk in dlt_records_scan(
        consumer,
        from_start=False,
        keep=lambda r: (r.partition, r.offset) not in replayed_before,
        timeout=timeout,
        progress=progress,
    ):
        chunk = _per_partition_prefix(chunk, remaining)
        yield chunk
        if remaining is not None:
            remaining -= len(chunk)
            if remaining <= 0:
                return


def _replay_chunk(
    records: list[ConsumerRecord], *, user, result: ReplayResult, dry_run: bool, selected: bool, timeout: float
) -> None:
    """Republish `records` (those that may be), then reopen their exports and audit them
    (`order_exports_redrive`, one transaction); add what was done and refused to `result`."""
    targets = redrive_targets()
    republishable, refused = [], []
    for record in records:
        item = _item(record)
        refusal = redrive_refusal(target_topic=item.target_topic, headers=record.headers, targets=targets)
        if refusal:
            refused.append(Refusal(record.partition, record.offset, refusal.reason))
            if not dry_run:
                metrics.REDRIVES_REFUSED.labels(reason=refusal.kind).inc()
        else:
            republishable.append((record, item))
    if dry_run:
        result.items += [item for _, item in republishable]
        result.refused += refused
        return
    began_at = timezone.now()
    replayed = _republish(republishable, refused=refused, timeout=timeout) if republishable else []
    if replayed:
        order_exports_redrive(
            actor=user.get_username(),
            source=DeadLetterRedrive(
                replayed=tuple(
                    ReplayedDeadLetter(
                        DeadLetterPosition(record.topic, record.partition, record.offset), item.event_id, item.order_id
                    )
                    for record, item in replayed
                ),
                began_at=began_at,
                selected=selected,
                refused=tuple(map(str, refused)),
            ),
        )
    result.items += [item for _, item in replayed]
    result.refused += refused


def _per_partition_prefix(records: list[ConsumerRecord], limit: int | None) -> list[ConsumerRecord]:
    """At most `limit` of `records`, oldest first across partitions, each partition's in offset
    order: committing past them then skips none."""
    by_partition: dict[int, list[ConsumerRecord]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(record.partition, []).append(record)
    merged = list(heapq.merge(*by_partition.values(), key=lambda r: r.timestamp))
    return merged[:limit] if limit is not None else merged


def _republish(
    republishable: list[tuple[ConsumerRecord, ReplayItem]], *, refused: list[Refusal], timeout: float
) -> list[tuple[ConsumerRecord, ReplayItem]]:
    """Send each record to its item's target topic through the path that wrote it to the DLT
    (`RecordCopier`): its key, value and headers byte for byte, nulls included, the `dlt.*` ones
    left out and `REDRIVE_HEADER` added. Returns those the broker acknowledged; each other is
    added to `refused` with its error, whatever the error, and the rest go on."""
    copier = RecordCopier(timeout=timeout)
    replayed = []
    try:
        for record, item in republishable:
            headers = [
                (n, v) for n, v in record.headers or [] if not n.startswith(DLT_HEADER_PREFIX) and n != REDRIVE_HEADER
            ]
            headers.append(redrive_header(DeadLetterPosition(record.topic, record.partition, record.offset)))
            try:
                copier.send(
                    item.target_topic,
                    partition=_original_partition(record),
                    key=record.key,
                    value=record.value,
                    headers=headers,
                )
            except Exception as exc:
                refused.append(Refusal(record.partition, record.offset, f"not republished: {error_line(exc)}"))
                metrics.REDRIVES_REFUSED.labels(reason="send").inc()
                continue
            replayed.append((record, item))
    finally:
        copier.close()
    return replayed


def _original_partition(record: ConsumerRecord) -> int | None:
    """The partition the record came from, where its key (the order id) had put it; None lets
    the copier place it by its key."""
    value = _header(record, "dlt.original.partition")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _commit_past(consumer: KafkaConsumer, records: list[ConsumerRecord], *, refused: list[Refusal]) -> None:
    """Move the replay group past `records` on each of their partitions, but never past a
    refused one: a later replay of everything names it again."""
    first_refused: dict[int, int] = {}
    for refusal in refused:
        first_refused[refusal.partition] = min(refusal.offset, first_refused.get(refusal.partition, refusal.offset))
    next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for record in records:
        if record.offset >= first_refused.get(record.partition, record.offset + 1):
            continue
        tp = TopicPartition(record.topic, record.partition)
        if tp not in next_offsets or next_offsets[tp].offset <= record.offset:
            next_offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
    if next_offsets:
        consumer.commit(next_offsets)


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
