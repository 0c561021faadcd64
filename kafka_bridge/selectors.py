"""Reads of the outbox, and of the dead letters the DLT could not keep whole."""

from __future__ import annotations

from django.db.models import Count, Min, Q
from django.utils import timezone

from kafka_bridge.models import CutDeadLetter, OutboxEvent


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


def dead_letters_cut_count(*, dead_letter_topics: list[str]) -> dict[str, int]:
    """Per dead-letter topic, how many of its dead letters are bounded stand-ins for records it
    refused to keep (one query)."""
    counts = dict(
        CutDeadLetter.objects.filter(dead_letter_topic__in=dead_letter_topics)
        .values_list("dead_letter_topic")
        .annotate(count=Count("id"))
        .values_list("dead_letter_topic", "count")
    )
    return {topic: counts.get(topic, 0) for topic in dead_letter_topics}
