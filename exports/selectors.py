"""Reads of the exports app."""
from __future__ import annotations

from django.db.models import Count

from exports.models import OrderExport


def export_counts() -> dict[str, int]:
    counts = dict(OrderExport.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {status: counts.get(status, 0) for status in OrderExport.Status.values}


def export_failures(*, limit: int = 10) -> list[OrderExport]:
    return list(OrderExport.objects.filter(status=OrderExport.Status.FAILED).order_by("-updated_at")[:limit])


def export_status_panel() -> dict:
    """The exports' part of the admin's Kafka status page."""
    return {
        "title": "Exports",
        "counts": export_counts(),
        "failed": [
            {"order_id": e.order_id, "attempts": e.attempts, "last_error": e.last_error, "updated_at": e.updated_at}
            for e in export_failures()
        ],
    }
