"""The transactional outbox: events are written with the change that caused them and sent to
Kafka after the commit.

`event_record` is the recorder that `DOMAIN_EVENT_RECORDER` names. It knows nothing of what an
event means: it needs `event_id`, `event_type`, `key` and `to_dict()`, and finds the topic
through the `KAFKA_EVENT_TOPIC_SETTINGS` setting.
"""
from __future__ import annotations

import json
from typing import Any, Protocol
from uuid import UUID

from django.conf import settings
from django.db import transaction

from kafka_bridge.models import OutboxEvent
from kafka_bridge.producer import request_publisher


class DomainEvent(Protocol):
    event_id: UUID
    event_type: str

    @property
    def key(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...


def topic_for(event_type: str) -> str:
    """The topic of an event type: the value of the setting that KAFKA_EVENT_TOPIC_SETTINGS
    names for it (read at call time, so overriding ORDER_EXPORT_TOPIC is enough)."""
    try:
        setting_name = settings.KAFKA_EVENT_TOPIC_SETTINGS[event_type]
    except KeyError:
        raise LookupError(f"no topic configured for event type {event_type!r} in KAFKA_EVENT_TOPIC_SETTINGS") from None
    return getattr(settings, setting_name)


def event_record(*, event: DomainEvent) -> OutboxEvent:
    """Write `event` to the outbox in the current transaction; after the commit, hand it to the
    producer without waiting for the broker (the row is marked sent when the broker
    acknowledges it). A rolled-back transaction takes the row and the send with it."""
    row = OutboxEvent.objects.create(
        event_id=event.event_id,
        event_type=event.event_type,
        topic=topic_for(event.event_type),
        key=event.key,
        payload=json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False),
        headers=[["event_type", event.event_type], ["event_id", str(event.event_id)]],
    )
    if settings.KAFKA_PUBLISH_ON_COMMIT:
        # robust: the commit has happened; a failure to publish must not turn the response into
        # an error. The row stays unsent and the relay sends it.
        transaction.on_commit(lambda: request_publisher().publish_nowait([row]), robust=True)
    return row


def outbox_resend(*, event_ids) -> int:
    """Queue already-sent events for the relay again (same row, same bytes, same event id).
    Returns how many rows were found."""
    return OutboxEvent.objects.filter(event_id__in=list(event_ids)).update(
        sent_at=None, claimed_by="", claimed_until=None, last_error=""
    )


def outbox_purge(*, older_than, dry_run: bool = False, chunk: int = 5000) -> int:
    """Delete rows acknowledged more than `older_than` (a timedelta) ago, in chunks so no single
    transaction grows with the table. Unsent rows are never touched."""
    from django.utils import timezone

    cutoff = timezone.now() - older_than
    old = OutboxEvent.objects.filter(sent_at__isnull=False, sent_at__lt=cutoff)
    if dry_run:
        return old.count()
    deleted = 0
    while ids := list(old.order_by("id").values_list("id", flat=True)[:chunk]):
        deleted += OutboxEvent.objects.filter(pk__in=ids).delete()[0]
    return deleted
