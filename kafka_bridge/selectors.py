"""Reads of the outbox."""

from __future__ import annotations

from django.db.models import Count, Min, Q
from django.utils import timezone

from kafka_bridge.models import OutboxEvent


def outbox_backlog() -> dict:
    """How many events wait to be sent, and how long the oldest has waited (seconds); and how
    many are quarantined. A quarantined event waits for an operator, not for the relay, so it
    is counted apart and never makes the backlog look stuck."""
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True).aggregate(
        count=Count("id", filter=Q(quarantined_at__isnull=True)),
        oldest=Min("created_at", filter=Q(quarantined_at__isnull=True)),
        quarantined=Count("id", filter=Q(quarantined_at__isnull=False)),
    )
    oldest = unsent["oldest"]
    return {
        "unsent": unsent["count"],
        "oldest_unsent_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else None,
        "quarantined": unsent["quarantined"],
    }
