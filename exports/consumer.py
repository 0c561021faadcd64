"""What `run_export_consumer` does with each record of the event topic."""
from __future__ import annotations

import logging

from django.conf import settings
from kafka.consumer.fetcher import ConsumerRecord

from exports.clients import ExternalPlatformClient, platform_client
from exports.events import PoisonRecord, export_request_decode
from exports.services import order_export
from kafka_bridge.consumer import ConsumerLoop, RecordHandler
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)


def export_record_handler(*, client: ExternalPlatformClient) -> RecordHandler:
    def handle(record: ConsumerRecord) -> None:
        where = f"partition {record.partition} offset {record.offset}"
        try:
            request = export_request_decode(record.value)
            outcome = order_export(request=request, client=client)
        except PoisonRecord as exc:
            logger.error("export: skipped a record that cannot be exported (%s): %s", where, exc)
            return
        logger.info(
            "export: order %s event %s %s: %s",
            request.order_id, request.event_id, where, outcome.status,
        )

    return handle


def export_consumer(*, stop: StopFlag, client: ExternalPlatformClient | None = None) -> ConsumerLoop:
    """The loop `run_export_consumer` runs; tests drive it directly."""
    return ConsumerLoop(
        topics=[settings.ORDER_EXPORT_TOPIC],
        group_id=settings.ORDER_EXPORT_CONSUMER_GROUP,
        handler=export_record_handler(client=client or platform_client()),
        stop=stop,
        name="export-consumer",
    )
