"""`run_outbox_relay`'s loop: send outbox rows that the on-commit fast path did not (broker
down at commit time, process died after the commit), oldest first."""
from __future__ import annotations

import logging
from datetime import timedelta

import os
import socket
import uuid

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from kafka_bridge import metrics
from kafka_bridge.models import OutboxEvent
from kafka_bridge.producer import OutboxPublisher, PublishResult
from kafka_bridge.runner import StopFlag
from kafka_bridge.selectors import outbox_backlog

logger = logging.getLogger(__name__)


def outbox_claim(*, relay_id: str, older_than: float, limit: int, lease: float) -> list[OutboxEvent]:
    """Claim up to `limit` unsent rows, oldest first, for `relay_id` until `lease` seconds from
    now, and return them.

    Two relays never hold the same row: on PostgreSQL the candidates are locked with
    `SELECT ... FOR UPDATE SKIP LOCKED`, so a concurrent relay passes over them; on SQLite the
    IMMEDIATE transaction is a single-writer lock, so claims happen one after the other. Rows
    claimed by another relay whose claim is still running are not candidates. Per-key order
    holds across relays: a row is only claimed when every older unsent row of its key is
    claimed in the same batch.
    """
    now = timezone.now()
    with transaction.atomic():
        candidates = (
            OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=now - timedelta(seconds=older_than))
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("id")
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = list(candidates[:limit])
        if not rows:
            return []
        # Oldest unsent row of each key, whoever holds it (a plain read; it does not wait on
        # other relays' locks). A key whose oldest unsent row is not in this batch belongs to
        # another relay for now.
        keys = {row.key for row in rows if row.key is not None}
        oldest = dict(
            OutboxEvent.objects.filter(sent_at__isnull=True, key__in=keys)
            .values("key")
            .annotate(first=Min("id"))
            .values_list("key", "first")
        )
        mine = {row.id for row in rows}
        blocked = {key for key, first in oldest.items() if first not in mine}
        rows = [row for row in rows if row.key not in blocked]
        OutboxEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
            claimed_by=relay_id, claimed_until=now + timedelta(seconds=lease)
        )
    return rows


def outbox_release(*, rows: list[OutboxEvent]) -> None:
    """Drop the claim on rows that were not sent, so the next round (of any relay) retries them."""
    OutboxEvent.objects.filter(pk__in=[row.pk for row in rows], sent_at__isnull=True).update(
        claimed_by="", claimed_until=None
    )


class OutboxRelay:
    def __init__(
        self,
        *,
        stop: StopFlag,
        publisher: OutboxPublisher | None = None,
        batch_size: int | None = None,
        interval: float | None = None,
        grace: float | None = None,
        max_backoff: float | None = None,
    ):
        self.stop = stop
        self.publisher = publisher or OutboxPublisher(timeout=settings.OUTBOX_RELAY_SEND_TIMEOUT)
        self.batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
        self.interval = interval if interval is not None else settings.OUTBOX_RELAY_INTERVAL
        # Rows younger than this are still the fast path's to send; relaying them at once would
        # only publish them twice.
        self.grace = grace if grace is not None else settings.OUTBOX_RELAY_GRACE_SECONDS
        self.max_backoff = max_backoff or settings.OUTBOX_RELAY_MAX_BACKOFF
        self.lease = max(settings.OUTBOX_RELAY_CLAIM_SECONDS, self.publisher.timeout * 3)
        self.relay_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.total_sent = 0

    def run_once(self) -> PublishResult:
        rows = outbox_claim(relay_id=self.relay_id, older_than=self.grace, limit=self.batch_size, lease=self.lease)
        result = self.publisher.publish(rows)
        if result.failed:
            outbox_release(rows=rows)
        self.total_sent += result.sent
        if result.sent:
            logger.info("relay: sent %d outbox event(s)", result.sent)
        metrics.outbox_backlog_set(outbox_backlog())
        return result

    def run(self) -> None:
        logger.info("relay: started (batch %d, interval %.1f s)", self.batch_size, self.interval)
        backoff = self.interval
        try:
            while not self.stop.is_set():
                # A long-running process must not keep a connection the database dropped.
                close_old_connections()
                result = self.run_once()
                if result.failed:
                    logger.warning("relay: broker unreachable (%s); retrying in %.1f s", result.error, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.interval
                if result.sent < self.batch_size:
                    self.stop.wait(self.interval)
        finally:
            self.publisher.close()
            logger.info("relay: stopped after sending %d event(s)", self.total_sent)
