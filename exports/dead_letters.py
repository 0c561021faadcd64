"""The dead letters as the operator sees them: the DLT's newest records for the admin's
dead-letters page, each with its order's export status and whether it was replayed already,
by `replay_dlt` or a redrive (exports.redrive, which reads the same replay state from here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from exports.models import OrderExport, RedriveAudit
from exports.record_keys import order_id_from_key


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

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)


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
    from kafka_bridge.browse import topic_records_read

    topic = settings.ORDER_EXPORT_DLT_TOPIC
    result = topic_records_read(topic=topic, limit=limit, max_scanned=limit * 3, timeout_ms=timeout_ms)
    committed = _replay_group_positions(timeout_ms=timeout_ms)
    replayed = replayed_positions()
    keys = [record.key.decode("utf-8", "replace") if record.key is not None else None for record in result.records]
    order_ids = [order_id_from_key(key) for key in keys]
    known = {order_id for order_id in order_ids if order_id is not None}
    statuses = dict(OrderExport.objects.filter(order_id__in=known).values_list("order_id", "status"))
    letters = []
    for record, key, order_id in zip(result.records, keys, order_ids):
        headers = {name: (value or b"").decode("utf-8", "replace") for name, value in record.headers}
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
            )
        )
    return letters


def _replay_group_positions(*, timeout_ms: int) -> dict[int, int]:
    """The replay group's committed offset per DLT partition: what `replay_dlt` replayed already."""
    from kafka_bridge.client import admin_client

    group = replay_group()
    with admin_client(timeout_ms=timeout_ms) as admin:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in committed.items()
        if tp.topic == settings.ORDER_EXPORT_DLT_TOPIC and meta is not None and meta.offset >= 0
    }
