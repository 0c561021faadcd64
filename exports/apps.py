from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig
from django.conf import settings

from exports.record_keys import order_id_from_key

if TYPE_CHECKING:
    from kafka_bridge.console.browser.reading import RecordView


def order_admin_link(record: RecordView) -> str | None:
    """The admin page of the order a record of the event topic or its DLT is about: by the
    contract their key is the order id. Other topics' keys may be numbers that mean something else."""
    from django.urls import reverse

    if record.topic not in (settings.ORDER_EXPORT_TOPIC, settings.ORDER_EXPORT_DLT_TOPIC):
        return None
    order_id = order_id_from_key(record.key)
    if order_id is None:
        return None
    return reverse("admin:orders_order_change", args=[order_id])


# The names kafka_bridge is told, read from the settings each time they are used.
def _export_topic() -> str:
    return settings.ORDER_EXPORT_TOPIC


def _export_group() -> str:
    return settings.ORDER_EXPORT_CONSUMER_GROUP


def _export_dlt() -> str:
    return settings.ORDER_EXPORT_DLT_TOPIC


class ExportsConfig(AppConfig):
    name = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        from exports.console.panels import delivery_panel, export_status_panel_html
        from exports.topics import export_topic_specs
        from kafka_bridge import registry
        from kafka_bridge.console.browser.reading import record_linker_register
        from kafka_bridge.outbox.recorder import outbox_record
        from orders.admin import order_page_panel_register
        from orders.events import OrderExportRequested, event_recorder_register

        # The orders' events go to the Kafka outbox; orders itself knows nothing of Kafka.
        event_recorder_register(recorder=outbox_record)
        # All that kafka_bridge knows of the export, it is told here.
        registry.event_topic_register(event_type=OrderExportRequested.event_type, topic=_export_topic)
        registry.topic_specs_register(specs=export_topic_specs)
        registry.watched_group_register(
            watched=registry.WatchedGroup(name="export-group", group=_export_group, dead_letter_topic=_export_dlt)
        )
        registry.status_panel_register(panel=export_status_panel_html)
        record_linker_register(linker=order_admin_link)
        # The order's admin page shows its Delivery panel; orders itself knows nothing of it.
        order_page_panel_register(panel=delivery_panel)
