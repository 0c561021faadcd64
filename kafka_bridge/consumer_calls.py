"""The consumer loop's work on records (`kafka_bridge.consumer.ConsumerLoop`): preparing them in
bulk, handing their calls to worker threads, taking the calls' results back and recording them in
bulk, and marking records done.

`CallsMixin` is a part of `ConsumerLoop`, which holds the state it uses; its methods run on the
loop thread holding the loop's lock, unless said otherwise.
"""

from __future__ import annotations

import functools
import queue
import time
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import IllegalStateError
from kafka.structs import TopicPartition

from kafka_bridge import metrics
from kafka_bridge.consumer_api import Call, NonRetryableError
from kafka_bridge.dead_letter import DeadLetterPosition

# Records taken per step when calls are made inline (they never wait): a poll's worth.
INLINE_BATCH = 1000

# What workers and the dead-letter thread hand back to the loop thread.
CALL, DEAD_LETTER = "call", "dead_letter"


@dataclass(eq=False)
class Item:
    record: ConsumerRecord
    tp: TopicPartition
    # The partition's assignment it belongs to: results of an earlier one are not acted on.
    generation: int
    attempts: int = 0
    # Given up on: to be sent to the dead-letter topic (again, if a send failed).
    giving_up: bool = False
    # On the dead-letter topic already; only the dead-letter hook is left to run.
    dead_lettered: bool = False
    dead_letter_position: DeadLetterPosition | None = None
    # Its call is the circuit breaker's probe.
    probe: bool = False
    error: str = ""


def where(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


class CallsMixin:
    # --- starting work ----------------------------------------------------------------------

    def _free_workers(self) -> int:
        if self.inline_calls:
            return INLINE_BATCH
        return self.concurrency - self._calls_in_flight

    def _prepare_more(self) -> None:
        """Take ready records and prepare them in one bulk step, so that calls are ready before
        workers are free: a worker that finishes gets its next call at once, not after the
        loop has recorded results and read the database again. Up to one call per worker is
        held prepared, besides the free workers' own."""
        if self.stop.is_set() or self._revoking:
            return
        room = self.concurrency + self._free_workers() - len(self._prepared)
        if room <= 0:
            return
        taken = self._scheduler.take(limit=room, now=time.monotonic())
        if not taken:
            return
        fresh = []
        for key, item in taken:
            if item.dead_lettered:
                self._run_dead_letter_hook(key, item)
            elif item.giving_up:
                self._dead_letter(key, item, item.error)
            else:
                fresh.append((key, item))
        if not fresh:
            return
        try:
            steps = self.processor.prepare([item.record for _, item in fresh])
        except Exception as exc:
            # Nothing could be prepared (the database, say): no record is at fault.
            steps = [exc] * len(fresh)
        for (key, item), step in zip(fresh, steps):
            if step is None:
                self._done(key, item)
            elif isinstance(step, BaseException):
                item.attempts += 1
                self._failed(key, item, step)
            else:
                self._prepared.append((key, item, step))

    def _start_calls(self) -> None:
        """Hand prepared calls to free workers, as far as the pacer allows."""
        if self.stop.is_set() or self._revoking:
            return
        while self._prepared and self._free_workers() > 0:
            if self.pacer is not None and self.pacer.wait() > 0:
                return
            key, item, call = self._prepared.popleft()
            if item.generation != self._generation.get(item.tp):
                continue  # its partition went meanwhile
            self._call(key, item, call)

    def _call(self, key: Hashable, item: Item, call: Call) -> None:
        item.attempts += 1
        item.probe = self.pacer.started() if self.pacer is not None else False
        self._calls_in_flight += 1
        self._in_flight[item.tp] = self._in_flight.get(item.tp, 0) + 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self._calls_in_flight)
        if self.inline_calls:
            # A call that never waits (an in-process client): made here, its outcome taken up
            # with the others, without a worker thread's hand-over per record.
            future: Future = Future()
            try:
                future.set_result(call())
            except Exception as exc:
                future.set_exception(exc)
            self._results.put((CALL, key, item, future))
            return
        future = self._workers.submit(call)
        future.add_done_callback(functools.partial(self._call_done, key, item))

    def _call_done(self, key: Hashable, item: Item, future: Future) -> None:
        # On the worker thread: only hand the outcome over.
        self._results.put((CALL, key, item, future))

    # --- taking results ---------------------------------------------------------------------

    def _drain_results(self, timeout: float = 0.0) -> list[tuple]:
        results = []
        try:
            results.append(self._results.get(timeout=timeout) if timeout else self._results.get_nowait())
            while True:
                results.append(self._results.get_nowait())
        except queue.Empty:
            pass
        return results

    def _take_results(self, results: list[tuple]) -> None:
        self._record(*self._release(results))

    def _release(self, results: list[tuple]) -> tuple[list[tuple], list[tuple]]:
        """Free the workers (and tell the pacer) of finished calls; returns the calls and the
        dead letters whose outcome is still to be recorded."""
        calls, dead_letters = [], []
        for kind, key, item, future in results:
            if kind == DEAD_LETTER:
                self._dead_letters_in_flight -= 1
                dead_letters.append((key, item, future))
                continue
            self._calls_in_flight -= 1
            if item.tp in self._in_flight:
                self._in_flight[item.tp] -= 1
            error = future.exception()
            if self.pacer is not None:
                if error is None or isinstance(error, NonRetryableError):
                    self.pacer.succeeded(probe=item.probe)
                else:
                    self.pacer.failed(retry_after=getattr(error, "retry_after", None), probe=item.probe)
            calls.append((key, item, None if error is not None else future.result(), error))
        return calls, dead_letters

    def _record(self, calls: list[tuple], dead_letters: list[tuple]) -> None:
        for key, item, future in dead_letters:
            self._dead_letter_done(key, item, future)
        if not calls:
            return
        try:
            outcomes = self.processor.complete([(item.record, value, error) for _, item, value, error in calls])
        except Exception as exc:
            # The outcomes could not be recorded: the calls are made again (an idempotent
            # processor makes that harmless, e.g. by an idempotency key the called system honours).
            outcomes = [exc] * len(calls)
        for (key, item, _, _), outcome in zip(calls, outcomes):
            if item.generation != self._generation.get(item.tp):
                continue  # the partition went meanwhile: its new owner reads the record again
            if outcome is None:
                self._done(key, item)
            else:
                self._failed(key, item, outcome)

    def _done(self, key: Hashable, item: Item) -> None:
        self._scheduler.finished(key)
        self._tracker.done(item.tp, item.record.offset)
        self.processed_total += 1
        self._window_count += 1
        metrics.EVENTS_CONSUMED.labels(group=self.group_id, topic=item.tp.topic).inc()
        if item.tp in self._paused:
            self._resume_if_room(item.tp)

    def _resume_if_room(self, tp: TopicPartition) -> None:
        if self._tracker.uncommitted(tp) < self.max_uncommitted:
            try:
                self._consumer.resume(tp)
            except IllegalStateError:
                pass  # no longer assigned
            self._paused.discard(tp)
