"""A recorder of domain events, for an app to register as where its events go: an event written
to the outbox with the change that caused it, and handed to the producer after the commit (the
fast path). What the fast path does not get acknowledged, `run_outbox_relay` sends later. With
OUTBOX_PUBLISHER=debezium the row is all: Debezium publishes it from the write-ahead log."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from kafka_bridge.outbox.store import DomainEvent, outbox_insert


def outbox_record(*, event: DomainEvent) -> OutboxEvent:
    """Write `event` to the outbox in the current transaction; after the commit, hand it to the
    producer without waiting for the broker (the row is marked sent when the broker
    acknowledges it). A rolled-back transaction takes the row and the send with it."""
    row = outbox_insert(event=event)
    if settings.KAFKA_PUBLISH_ON_COMMIT and settings.OUTBOX_PUBLISHER == "relay":
        # robust: the commit has happened; a failure to publish must not turn the response into
        # an error. The row stays unsent and the relay sends it.
        transaction.on_commit(lambda: request_publisher().publish_nowait([row]), robust=True)
    return row
