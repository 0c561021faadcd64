"""What `run_export_consumer` does with each record of the event topic."""
from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from kafka.consumer.fetcher import ConsumerRecord

from exports.clients import ExternalPlatformClient, platform_client
from exports.events import ExportRequest, PoisonRecord, export_request_decode
from exports.services import order_export, order_export_batch, order_export_fail
from kafka_bridge.consumer import BatchHandler, ConsumerLoop, DeadLetterHook, RecordHandler, Unfinished
from kafka_bridge.dead_letter import DeadLetterPublisher
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)


def _where(record: ConsumerRecord) -> str:
    return f"partition {record.partition} offset {record.offset}"


def _fields(record: ConsumerRecord, request: ExportRequest) -> dict:
    """The same facts as the line's text, as structured fields for the JSON log format."""
    return {
        "order_id": request.order_id,
        "event_id": str(request.event_id),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }


def _log_outcome(record: ConsumerRecord, request: ExportRequest, status: str) -> None:
    logger.info(
        "export: order %s event %s %s: %s", request.order_id, request.event_id, _where(record), status,
        extra={**_fields(record, request), "outcome": status},
    )


def export_log_fields(record: ConsumerRecord) -> dict:
    """The order id of a record the consumer loop logs about, read from its key (the contract's
    key is the order id) without decoding the value."""
    key = (record.key or b"").decode("utf-8", "replace")
    return {"order_id": int(key) if key.isascii() and key.isdigit() else key or None}


def export_record_handler(*, client: ExternalPlatformClient) -> RecordHandler:
    """Decode and export one record. Raises what the consumer loop acts on: transient platform
    errors (retry), permanent ones and poison records (dead-letter)."""

    def handle(record: ConsumerRecord) -> None:
        request = export_request_decode(record.value)
        outcome = order_export(request=request, client=client)
        if settings.EXPORT_LOG_OUTCOMES:
            _log_outcome(record, request, outcome.status)

    return handle


def export_batch_handler(*, client: ExternalPlatformClient) -> BatchHandler:
    """Decode and export a poll's records together (`order_export_batch`); return those it did
    not finish, with the error each met, for the consumer loop's one-record path."""

    def handle(records: list[ConsumerRecord], keep_going: Callable[[], bool]) -> list[Unfinished]:
        unfinished: list[Unfinished] = []
        decoded: list[tuple[ConsumerRecord, ExportRequest]] = []
        poisoned: set[tuple[str, int]] = set()
        for record in records:
            if (record.topic, record.partition) in poisoned:
                continue  # behind a poison record of its partition: the one-record path's
            try:
                decoded.append((record, export_request_decode(record.value)))
            except PoisonRecord as exc:
                unfinished.append(Unfinished(record, exc))
                poisoned.add((record.topic, record.partition))
        items = order_export_batch(
            requests=[request for _, request in decoded],
            lanes=[(record.topic, record.partition) for record, _ in decoded],
            client=client,
            should_stop=lambda: not keep_going(),
        )
        log_outcomes = settings.EXPORT_LOG_OUTCOMES
        for (record, request), item in zip(decoded, items):
            if item.status is None:
                unfinished.append(Unfinished(record, item.error))
            elif log_outcomes:
                _log_outcome(record, request, item.status)
        return unfinished

    return handle


def export_dead_lettered(record: ConsumerRecord, reason: str, attempts: int) -> None:
    """After a record went to the DLT: mark its order's export failed, with the reason."""
    try:
        request = export_request_decode(record.value)
    except PoisonRecord:
        return  # nothing to mark: the record names no order we can read
    export = order_export_fail(order_id=request.order_id, event_id=request.event_id, reason=reason)
    if export is not None:
        logger.error(
            "export: order %s event %s %s: failed: %s", request.order_id, request.event_id, _where(record), reason,
            extra=_fields(record, request),
        )


def export_consumer(
    *,
    stop: StopFlag,
    client: ExternalPlatformClient | None = None,
    on_dead_letter: DeadLetterHook = export_dead_lettered,
) -> ConsumerLoop:
    """The loop `run_export_consumer` runs; tests drive it directly."""
    client = client or platform_client()
    return ConsumerLoop(
        topics=[settings.ORDER_EXPORT_TOPIC],
        group_id=settings.ORDER_EXPORT_CONSUMER_GROUP,
        handler=export_record_handler(client=client),
        batch_handler=export_batch_handler(client=client) if settings.EXPORT_CONSUMER_BATCH else None,
        stop=stop,
        name="export-consumer",
        dead_letter=DeadLetterPublisher(topic=settings.ORDER_EXPORT_DLT_TOPIC, timeout=settings.KAFKA_DLT_SEND_TIMEOUT),
        on_dead_letter=on_dead_letter,
        max_attempts=settings.EXPORT_MAX_ATTEMPTS,
        log_fields=export_log_fields,
    )
