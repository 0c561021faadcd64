"""`run_outbox_relay`'s loop: send outbox rows that the on-commit fast path did not (broker
down at commit time, process died after the commit), oldest first."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.producer import OutboxPublisher, PublishResult
from kafka_bridge.runner import StopFlag

logger = logging.getLogger(__name__)


def outbox_unsent(*, older_than: float, limit: int) -> list[OutboxEvent]:
    """Unsent rows created at least `older_than` seconds ago, oldest first."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    return list(OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=cutoff).order_by("id")[:limit])


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
        self.total_sent = 0

    def run_once(self) -> PublishResult:
        result = self.publisher.publish(outbox_unsent(older_than=self.grace, limit=self.batch_size))
        self.total_sent += result.sent
        if result.sent:
            logger.info("relay: sent %d outbox event(s)", result.sent)
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
