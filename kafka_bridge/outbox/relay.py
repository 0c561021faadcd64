"""`run_outbox_relay`'s loop: send outbox rows that the on-commit fast path did not (broker
down at commit time, process died after the commit), oldest first."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connection

from kafka_bridge import metrics
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import OutboxPublisher, PublishResult, SendOutcome
from kafka_bridge.outbox.store import outbox_claim, outbox_outcomes_record, outbox_release
from kafka_bridge.runner import StopFlag
from kafka_bridge.selectors import outbox_backlog
from kafka_bridge.tracing import messages_send_span, messages_send_span_end

logger = logging.getLogger(__name__)

# outbox_claim and outbox_release live with the outbox's other writes in kafka_bridge.outbox.store, and
# are still imported from here.
__all__ = ["OutboxRelay", "outbox_claim", "outbox_release"]

# What the database raises when it is away: a restart, a dropped connection, a failover.
DATABASE_ERRORS = (DatabaseError, InterfaceError)


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
        # A send whose outcome could not be written (the database went away after the broker
        # answered): written first once the database is back, so an acknowledged row is not
        # sent again. Its rows stay claimed meanwhile, so no other relay sends them either
        # until the claim runs out.
        self._unwritten: tuple[SendOutcome, list[OutboxEvent]] | None = None

    def run_once(self) -> PublishResult:
        """One round: write what an earlier round could not, claim a batch, send it, write each
        row's outcome. Database errors propagate (`run` rides them out); Kafka trouble is in
        the result."""
        if self._unwritten is not None:
            self._write(*self._unwritten)
        rows = outbox_claim(relay_id=self.relay_id, older_than=self.grace, limit=self.batch_size, lease=self.lease)
        # One span per round that sends, linked to each event's creation (when spans are made).
        span = messages_send_span(destinations=[row.topic for row in rows], headers=[row.headers for row in rows])
        outcome = self.publisher.send(rows)
        messages_send_span_end(span, failed=len(outcome.failed) + len(outcome.refused))
        result = self._write(outcome, rows)
        if result.sent:
            logger.info("relay: sent %d outbox event(s)", result.sent)
        metrics.outbox_backlog_set(outbox_backlog())
        return result

    def _write(self, outcome: SendOutcome, rows: list[OutboxEvent]) -> PublishResult:
        self._unwritten = (outcome, rows)
        quarantined = outbox_outcomes_record(
            acked=outcome.acked,
            refused=outcome.refused,
            failed=outcome.failed,
            relay_id=self.relay_id,
            claimed=rows,
        )
        self._unwritten = None
        self.total_sent += len(outcome.acked)
        return self.publisher.account(outcome, rows=rows, quarantined=quarantined)

    def run(self) -> None:
        """Rounds until the stop flag is set. A send failed for the broker's reason, or the
        database away: one line, then the next round after a backoff that doubles up to
        `max_backoff`. A row refused for its own reason is the row's business and does not slow
        the relay down."""
        logger.info("relay: started (batch %d, interval %.1f s)", self.batch_size, self.interval)
        backoff = self.interval
        try:
            while not self.stop.is_set():
                try:
                    # A long-running process must not keep a connection the database dropped.
                    close_old_connections()
                    result = self.run_once()
                except DATABASE_ERRORS as exc:
                    logger.warning(
                        "relay: database unavailable (%s: %s); retrying in %.1f s",
                        type(exc).__name__,
                        " ".join(str(exc).split())[:300],
                        backoff,
                    )
                    self._connection_drop()
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if result.failed:
                    logger.warning("relay: broker unreachable (%s); retrying in %.1f s", result.error, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.interval
                if result.sent + result.refused < self.batch_size:
                    self.stop.wait(self.interval)
        finally:
            self.publisher.close()
            self._write_unwritten_before_exit()
            logger.info("relay: stopped after sending %d event(s)", self.total_sent)

    def _write_unwritten_before_exit(self) -> None:
        if self._unwritten is None:
            return
        try:
            self._write(*self._unwritten)
        except DATABASE_ERRORS as exc:
            logger.warning(
                "relay: stopping with the outcome of %d send(s) unwritten (%s); their rows are sent "
                "again once their claim runs out",
                len(self._unwritten[1]),
                type(exc).__name__,
            )
            self._connection_drop()

    @staticmethod
    def _connection_drop() -> None:
        # The next query opens a new connection; closing a broken one may itself fail.
        try:
            connection.close()
        except DATABASE_ERRORS:
            pass
