"""A loop in a thread: a `ConsumerLoop` (the export consumer's, or one of a test's own) or an
`OutboxRelay`, run the way its management command runs it and stopped the way a signal stops it
(its stop flag), then checked to have stopped within 30 s without crashing. Its database
statements may go through an execute wrapper of the test's, e.g. a simulated outage."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection, connections

STOP_TIMEOUT = 30.0


class CallEach:
    """A processor for the loop's tests: `handler(record)` on a worker thread for each record,
    what it raises is what becomes of the record."""

    def __init__(self, handler: Callable[[Any], None]):
        self.handler = handler

    def prepare(self, records):
        return [functools.partial(self.handler, record) for record in records]

    def complete(self, results):
        return [error for _, _, error in results]


class LoopThread:
    """`loop.run()` in a daemon thread; `loop.stop` is the loop's StopFlag. With
    `execute_wrapper`, every database statement of the thread goes through it
    (`connection.execute_wrapper`)."""

    def __init__(self, loop: Any, *, name: str = "consumer-loop", execute_wrapper: Callable | None = None):
        self.loop = loop
        self.execute_wrapper = execute_wrapper
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            if self.execute_wrapper is None:
                self.loop.run()
            else:
                with connection.execute_wrapper(self.execute_wrapper):
                    self.loop.run()
        except BaseException as exc:  # surfaced by check_stopped()
            self.errors.append(exc)
        finally:
            # A connection left open by this thread would keep PostgreSQL from dropping the
            # test database.
            connections.close_all()

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        """Set the loop's stop flag and wait (up to 30 s) for the thread to end."""
        self.loop.stop.set()
        self.thread.join(timeout=STOP_TIMEOUT)

    def check_stopped(self) -> None:
        """Fail the test if the loop is still running or crashed."""
        assert not self.thread.is_alive(), f"the loop did not stop within {STOP_TIMEOUT:g} s"
        assert not self.errors, f"the loop crashed: {self.errors[0]!r}"


@contextlib.contextmanager
def loop_running(loop: Any, *, name: str = "consumer-loop") -> Iterator[LoopThread]:
    """`loop` running in a thread while the block runs; stopped on leaving, and checked to have
    stopped without crashing when the block itself did not fail."""
    running = LoopThread(loop, name=name).start()
    try:
        yield running
    finally:
        running.stop()
    running.check_stopped()


@contextlib.contextmanager
def export_consumer_running(client, **options: Any) -> Iterator:
    """`run_export_consumer`'s loop in a thread, exporting with `client` (`options` go to
    `export_consumer`, e.g. `concurrency`). Yields the loop."""
    from exports.consumer import export_consumer
    from kafka_bridge.runner import StopFlag

    with loop_running(export_consumer(stop=StopFlag(), client=client, **options), name="export-consumer") as running:
        yield running.loop
