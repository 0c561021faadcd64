"""Reads of the outbox."""
from __future__ import annotations

from django.db.models import Count, Min
from django.utils import timezone

from kafka_bridge.models import OutboxEvent


def outbox_backlog() -> dict:
    """How many events wait to be sent, and how long the oldest has waited (seconds)."""
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True).aggregate(count=Count("id"), oldest=Min("created_at"))
    oldest = unsent["oldest"]
    return {
        "unsent": unsent["count"],
        "oldest_unsent_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else None,
    }
