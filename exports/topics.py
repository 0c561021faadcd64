"""The topics of the export: the event topic and its dead-letter topic, which `ensure_topics`
creates and grows (registered in `ExportsConfig.ready()`)."""

from __future__ import annotations

from django.conf import settings

from kafka_bridge.cluster.topics import DLT_MAX_MESSAGE_BYTES, TopicSpec


def export_topic_specs(partitions: int | None = None) -> list[TopicSpec]:
    """The event topic and its dead-letter topic as configured in settings (ORDER_EXPORT_*).

    The DLT gets the same partition count, so a dead-lettered record can keep its partition,
    and room for a record as large as the event topic takes plus the `dlt.*` headers, so an
    oversized record can always be dead-lettered.
    """
    partitions = partitions or settings.ORDER_EXPORT_PARTITIONS
    rf = settings.ORDER_EXPORT_REPLICATION_FACTOR
    return [
        TopicSpec(name=settings.ORDER_EXPORT_TOPIC, partitions=partitions, replication_factor=rf),
        TopicSpec(
            name=settings.ORDER_EXPORT_DLT_TOPIC,
            partitions=partitions,
            replication_factor=rf,
            configs={"max.message.bytes": str(DLT_MAX_MESSAGE_BYTES)},
        ),
    ]
