"""What becomes of a record whose work failed, in the consumer loop
(`kafka_bridge.consumer.ConsumerLoop`): a retry later, with backoff, or a dead letter, sent on a
thread of its own and retried until the dead-letter topic acknowledged it; then the dead-letter
hook.

`FailuresMixin` is a part of `ConsumerLoop`, which holds the state it uses; its methods run on
the loop thread holding the loop's lock, unless said otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from concurrent.futures import Future

from kafka.consumer.fetcher import ConsumerRecord

from kafka_bridge import metrics
from kafka_bridge.consumer_api import NonRetryableError, RetryableError, backoff_delay
from kafka_bridge.consumer_calls import DEAD_LETTER, Item, where
from kafka_bridge.dead_letter import DeadLetterPosition, dead_letter_cut_record

# The loop's lines keep the one logger name, whichever of its modules writes them: LOG_LEVELS
# and the log captures name that logger.
logger = logging.getLogger("kafka_bridge.consumer")


class FailuresMixin:
    # --- retries ----------------------------------------------------------------------------

    def _failed(self, key: Hashable, item: Item, error: BaseException) -> None:
        record = item.record
        if isinstance(error, NonRetryableError):
            self._dead_letter(key, item, f"{type(error).__name__}: {error}")
        elif isinstance(error, RetryableError):
            if item.attempts >= self.max_attempts:
                self._dead_letter(key, item, f"{type(error).__name__}: {error} (after {item.attempts} attempts)")
            else:
                self._retry_later(key, item, f"{type(error).__name__}: {error}", retry_after=error.retry_after)
        else:
            logger.error(
                "%s: unexpected error handling %s: %s: %s",
                self.name,
                where(record),
                type(error).__name__,
                error,
                exc_info=error,
                extra=self._fields(record),
            )
            # Not the record's fault: retry without limit, but never faster than the backoff.
            self._retry_later(key, item, f"{type(error).__name__}: {error}", limited=False)

    def _retry_later(
        self, key, item: Item, error: str, *, limited: bool = True, retry_after: float | None = None
    ) -> None:
        delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
        if retry_after:
            delay = max(delay, retry_after)
        self._scheduler.retry_at(key, time.monotonic() + delay)
        limit = f"/{self.max_attempts}" if limited else ""
        logger.warning(
            "%s: attempt %d%s of %s failed (%s); retrying in %.1f s",
            self.name,
            item.attempts,
            limit,
            where(item.record),
            error,
            delay,
            extra=self._fields(item.record),
        )

    # --- dead letters -----------------------------------------------------------------------

    def _dead_letter(self, key: Hashable, item: Item, error: str) -> None:
        item.error, item.giving_up = error, True
        if self.dead_letter is None:
            logger.error(
                "%s: dropping %s after %d attempt(s): %s",
                self.name,
                where(item.record),
                item.attempts,
                error,
                extra=self._fields(item.record),
            )
            item.dead_lettered = True
            self._run_dead_letter_hook(key, item)
            return
        self._dead_letters_in_flight += 1
        future = self._dead_letter_worker.submit(
            self.dead_letter.publish, item.record, error=error, attempts=item.attempts
        )
        future.add_done_callback(lambda f: self._results.put((DEAD_LETTER, key, item, f)))

    def _dead_letter_done(self, key: Hashable, item: Item, future: Future) -> None:
        if item.generation != self._generation.get(item.tp):
            return
        error = future.exception()
        if error is not None:
            # Not on the DLT yet (the broker unreachable, not the leader, timed out; a record
            # refused for its own sake comes back as a bounded dead letter instead): keep the
            # record and try again later; its key waits, nothing else does.
            delay = backoff_delay(attempt=max(1, item.attempts), base=self.backoff_base, cap=self.backoff_max)
            self._scheduler.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
            logger.warning(
                "%s: dead-lettering %s failed (%s: %s); retrying in %.1f s",
                self.name,
                where(item.record),
                type(error).__name__,
                error,
                delay,
                extra=self._fields(item.record),
            )
            return
        position = future.result()
        logger.error(
            "%s: dead-lettered %s after %d attempt(s): %s",
            self.name,
            where(item.record),
            item.attempts,
            item.error,
            extra=self._fields(item.record),
        )
        if position.cut:
            self._dead_letter_cut(item, position)
        self.dead_lettered_total += 1
        item.dead_letter_position = position
        metrics.EVENTS_DEAD_LETTERED.labels(group=self.group_id, topic=item.record.topic).inc()
        item.dead_lettered = True
        self._run_dead_letter_hook(key, item)

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
            extra=self._fields(record),
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
                extra=self._fields(record),
            )

    def _run_dead_letter_hook(self, key: Hashable, item: Item) -> None:
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(item.record, item.error, item.attempts, item.dead_letter_position)
            except Exception as exc:
                # On the DLT already: only the hook is tried again, never the send.
                delay = backoff_delay(attempt=2, base=self.backoff_base, cap=self.backoff_max)
                self._scheduler.retry_at(key, time.monotonic() + max(delay, self.backoff_base))
                logger.warning(
                    "%s: after dead-lettering %s: %s: %s; retrying",
                    self.name,
                    where(item.record),
                    type(exc).__name__,
                    exc,
                    extra=self._fields(item.record),
                )
                return
        self._done(key, item)

    # --- log lines --------------------------------------------------------------------------

    def _fields(self, record: ConsumerRecord) -> dict:
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
