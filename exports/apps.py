from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from kafka_bridge.browse import RecordView


def order_admin_link(record: RecordView) -> str | None:
    """The admin page of the order a record of the event topic or its DLT is about: by the
    contract their key is the order id. Other topics' keys may be numbers that mean something else."""
    from django.conf import settings
    from django.urls import reverse

    if record.topic not in (settings.ORDER_EXPORT_TOPIC, settings.ORDER_EXPORT_DLT_TOPIC):
        return None
    key = record.key_text
    if not key or not key.isascii() or not key.isdigit():
        return None
    return reverse("admin:orders_order_change", args=[int(key)])


class ExportsConfig(AppConfig):
    name = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        from exports.delivery import delivery_panel
        from kafka_bridge.browse import record_linker_register
        from orders.admin import order_page_panel_register

        record_linker_register(linker=order_admin_link)
        # The order's admin page shows its Delivery panel; orders itself knows nothing of it.
        order_page_panel_register(panel=delivery_panel)
