"""What becomes of a record whose work failed, in the consumer loop: a retry later, with backoff,
or a dead letter, sent on the dispatcher's dead-letter thread and retried until the dead-letter
topic acknowledged it; then the dead-letter hook.

`FailurePolicy` decides and acts through the `Dispatcher`'s public interface (a retry is its
key's due time; a dead letter is a send on its thread). Each of its methods returns whether the
record is done with, for the loop to mark it; they run on the loop thread holding the loop's
lock (or on the I/O thread holding it, during a revocation).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Hashable
from concurrent.futures import Future

from kafka.consumer.fetcher import ConsumerRecord

from kafka_bridge import metrics
from kafka_bridge.consumer.api import DeadLetterHook, LogFields, NonRetryableError, RetryableError, backoff_delay
from kafka_bridge.consumer.dead_letters import DeadLetterPosition, DeadLetterPublisher, dead_letter_cut_record
from kafka_bridge.consumer.dispatch import Dispatcher, Item, where
from kafka_bridge.tracing import span_dead_lettered, span_retry, trace_headers

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")


class FailurePolicy:
    """Retries with backoff up to `max_attempts` for a `RetryableError`, at once a dead letter for
    a `NonRetryableError`, retries without limit for anything else; dead letters through
    `dead_letter` (dropped and logged without one), then `on_dead_letter`."""

    def __init__(
        self,
        *,
        name: str,
        group_id: str,
        dispatcher: Dispatcher,
        dead_letter: DeadLetterPublisher | None,
        on_dead_letter: DeadLetterHook | None,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        log_fields: LogFields | None,
    ):
        self.name = name
        self.group_id = group_id
        self.dispatcher = dispatcher
        self.dead_letter_publisher = dead_letter
        self.on_dead_letter = on_dead_letter
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # What the processor's domain knows about a record (e.g. its order id), added to the
        # structured fields of the loop's own log lines about it.
        self.log_fields = log_fields
        self.dead_lettered_total = 0
        self.dead_letters_cut_total = 0

    # --- retries ----------------------------------------------------------------------------

    def failed(self, key: Hashable, item: Item, error: BaseException) -> bool:
        record = item.record
        if isinstance(error, NonRetryableError):
            return self.dead_letter(key, item, f"{type(error).__name__}: {error}")
        if isinstance(error, RetryableError):
            if item.attempts >= self.max_attempts:
                return self.dead_letter(key, item, f"{type(error).__name__}: {error} (after {item.attempts} attempts)")
            self._retry_later(key, item, f"{type(error).__name__}: {error}", retry_after=error.retry_after)
            return False
        logger.error(
            "%s: unexpected error handling %s: %s: %s",
            self.name,
            where(record),
            type(error).__name__,
            error,
            exc_info=error,
            extra=self.fields(record),
        )
        # Not the record's fault: retry without limit, but never faster than the backoff.
        self._retry_later(key, item, f"{type(error).__name__}: {error}", limited=False)
        return False

    def _retry_later(
        self, key: Hashable, item: Item, error: str, *, limited: bool = True, retry_after: float | None = None
    ) -> None:
        delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
        if retry_after:
            delay = max(delay, retry_after)
        self.dispatcher.retry_at(key, time.monotonic() + delay)
        span_retry(item.trace, attempt=item.attempts, error=error, delay=delay)
        limit = f"/{self.max_attempts}" if limited else ""
        logger.warning(
            "%s: attempt %d%s of %s failed (%s); retrying in %.1f s",
            self.name,
            item.attempts,
            limit,
            where(item.record),
            error,
            delay,
            extra=self.fields(item.record),
        )

    # --- dead letters -----------------------------------------------------------------------

    def dead_letter(self, key: Hashable, item: Item, error: str) -> bool:
        """Give up on the record: its dead letter goes out on the dead-letter thread (the record
        is done with once it is acknowledged and the hook ran)."""
        item.error, item.giving_up = error, True
        span_dead_lettered(item.trace, error=error)
        if self.dead_letter_publisher is None:
            logger.error(
                "%s: dropping %s after %d attempt(s): %s",
                self.name,
                where(item.record),
                item.attempts,
                error,
                extra=self.fields(item.record),
            )
            item.dead_lettered = True
            return self.run_hook(key, item)
        send = functools.partial(
            self.dead_letter_publisher.publish,
            item.record,
            error=error,
            attempts=item.attempts,
            # The dead letter continues the record's trace from its process span.
            trace_headers=[(name, value.encode()) for name, value in trace_headers(item.trace)],
        )
        self.dispatcher.send_dead_letter(key, item, send)
        return False

    def dead_letter_sent(self, key: Hashable, item: Item, future: Future) -> bool:
        """The outcome of a dead letter's send, for a record of a partition still held."""
        error = future.exception()
        if error is not None:
            # Not on the DLT yet (the broker unreachable, not the leader, timed out; a record
            # refused for its own sake comes back as a bounded dead letter instead): keep the
            # record and try again later; its key waits, nothing else does.
            delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
            self.dispatcher.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
            logger.warning(
                "%s: dead-lettering %s failed (%s: %s); retrying in %.1f s",
                self.name,
                where(item.record),
                type(error).__name__,
                error,
                delay,
                extra=self.fields(item.record),
            )
            return False
        position = future.result()
        logger.error(
            "%s: dead-lettered %s after %d attempt(s): %s",
            self.name,
            where(item.record),
            item.attempts,
            item.error,
            extra=self.fields(item.record),
        )
        if position.cut:
            self._dead_letter_cut(item, position)
        self.dead_lettered_total += 1
        item.dead_letter_position = position
        metrics.EVENTS_DEAD_LETTERED.labels(group=self.group_id, topic=item.record.topic).inc()
        item.dead_lettered = True
        return self.run_hook(key, item)

    def _dead_letter_cut(self, item: Item, position: DeadLetterPosition) -> None:
        """The DLT refused the record itself: a bounded dead letter names it instead. Said once,
        at ERROR, counted, and kept in the database for the status page; the commit point moves
        on, and the record stays on its topic."""
        record = item.record
        logger.error(
            "%s: %s (%d byte value) could not be kept on the dead-letter topic: %s; a bounded dead letter "
            "at %s[%d]@%d names it, and it stays on its topic",
            self.name,
            where(record),
            len(record.value or b""),
            position.cut,
            position.topic,
            position.partition,
            position.offset,
            extra=self.fields(record),
        )
        self.dead_letters_cut_total += 1
        metrics.DEAD_LETTERS_CUT.labels(group=self.group_id, topic=record.topic).inc()
        try:
            dead_letter_cut_record(group_id=self.group_id, record=record, position=position)
        except Exception as exc:
            # The bounded dead letter on the DLT holds the same facts: only the count is lost.
            logger.warning(
                "%s: recording the cut dead letter of %s failed: %s: %s",
                self.name,
                where(record),
                type(exc).__name__,
                exc,
                extra=self.fields(record),
            )

    def run_hook(self, key: Hashable, item: Item) -> bool:
        """The dead-letter hook, for a record on the DLT (or dropped); retried alone if it fails."""
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(item.record, item.error, item.attempts, item.dead_letter_position)
            except Exception as exc:
                # On the DLT already: only the hook is tried again, never the send.
                delay = backoff_delay(attempt=2, base=self.backoff_base, cap=self.backoff_max)
                self.dispatcher.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
                logger.warning(
                    "%s: after dead-lettering %s: %s: %s; retrying",
                    self.name,
                    where(item.record),
                    type(exc).__name__,
                    exc,
                    extra=self.fields(item.record),
                )
                return False
        return True

    def close(self) -> None:
        if self.dead_letter_publisher is not None:
            self.dead_letter_publisher.close()

    # --- log lines --------------------------------------------------------------------------

    def fields(self, record: ConsumerRecord) -> dict:
        """The record's coordinates as structured log fields (`extra=`), for the JSON log format."""
        fields = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        event_id = next(
            (value for name, value in record.headers or [] if name == "event_id" and value is not None), None
        )
        if event_id is not None:
            fields["event_id"] = event_id.decode("utf-8", "replace")
        if self.log_fields is not None:
            fields.update(self.log_fields(record))
        return fields
