"""An asyncio event loop on a thread of its own, for calls that are coroutines: hundreds of them in
flight on one thread, where blocking calls need a worker thread each.

Calls are handed in a batch at a time (one wake-up of the loop for all the calls the consumer's
loop started in one pass) and their outcomes handed back a batch at a time (all the calls that
ended in one turn of the event loop, or within `hand_back_delay`): the hand-offs between the two
threads, not the calls, are what a call per hand-off would cost most (see docs/benchmarks.md,
"The hand-off").

At most `limit` calls run at once; calls handed in beyond it wait, and start as running ones end,
without a round trip to the thread that handed them in. Until that thread says otherwise
(`accept_waiting`), a call that ends with an error `stops_waiting` says so hands the waiting
calls back unstarted (their error `NotStarted`), and later calls that find no free slot too: the
handing thread decides again, with the error in hand, what may start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import uvloop

logger = logging.getLogger("kafka_bridge.consumer")

# A call: a coroutine function of no arguments.
AsyncCall = Callable[[], Awaitable[Any]]
# What ended: (the token it was handed in with, what it returned, what it raised).
Outcome = tuple[Hashable, Any, BaseException | None]


class NotStarted(Exception):
    """A call handed back without being started (see the module's docstring)."""


NOT_STARTED = NotStarted("handed back unstarted after a failure")


class EventLoopThread:
    """Runs coroutine calls on an event loop of its own thread. `submit` hands a batch in from
    any thread; `on_done` is called on the loop's thread with the outcomes of the calls that
    ended in one turn of the loop. `run` makes one call and waits for it (for code that is not a
    coroutine)."""

    def __init__(
        self,
        *,
        name: str,
        limit: int | None = None,
        stops_waiting: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.name = name
        self.limit = limit
        self.stops_waiting = stops_waiting
        # Seconds an outcome may wait for others to be handed back with it; set by the handing
        # thread (0: at the end of the loop's turn).
        self.hand_back_delay = 0.0
        # Calls running now, and the most seen at once (read from other threads).
        self.running = 0
        self.max_running_seen = 0
        self._waiting_accepted = True
        self._waiting: collections.deque[tuple[Hashable, AsyncCall, Callable[[list[Outcome]], None]]] = (
            collections.deque()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task] = set()
        self._ended: list[tuple[Callable[[list[Outcome]], None], Outcome]] = []
        self._hand_back_scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._loop

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_forever, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run_forever(self) -> None:
        # uvloop's loop (libuv, in C): about a fifth less CPU per platform call than asyncio's own
        # at 32 calls in flight (docs/benchmarks.md).
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # --- handing calls in -------------------------------------------------------------------

    def submit(self, calls: list[tuple[Hashable, AsyncCall]], on_done: Callable[[list[Outcome]], None]) -> None:
        """Start `calls` (token, coroutine function) on the loop, with one wake-up of it."""
        if calls:
            self.loop.call_soon_threadsafe(self._start, calls, on_done)

    def run(self, call: AsyncCall, *, timeout: float | None = None) -> Any:
        """Make `call` on the loop and wait for its outcome (from another thread)."""
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def accept_waiting(self) -> None:
        """From any thread: calls handed in beyond `limit` wait for a slot again."""
        self.loop.call_soon_threadsafe(self._accept_waiting)

    def _accept_waiting(self) -> None:
        self._waiting_accepted = True

    def refuse_waiting(self) -> None:
        """From any thread: hand back the calls waiting for a slot unstarted, and those handed in
        later that find no free slot, until `accept_waiting` (a stop, a revocation)."""
        self.loop.call_soon_threadsafe(self._refuse_waiting)

    def _refuse_waiting(self) -> None:
        self._waiting_accepted = False
        self._hand_back_unstarted()

    def _start(self, calls: list[tuple[Hashable, AsyncCall]], on_done: Callable[[list[Outcome]], None]) -> None:
        self._waiting.extend((token, call, on_done) for token, call in calls)
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._waiting and (self.limit is None or self.running < self.limit):
            token, call, on_done = self._waiting.popleft()
            self.running += 1
            self.max_running_seen = max(self.max_running_seen, self.running)
            task = self.loop.create_task(self._call(token, call, on_done))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._waiting and not self._waiting_accepted:
            self._hand_back_unstarted()

    def _hand_back_unstarted(self) -> None:
        while self._waiting:
            token, _, on_done = self._waiting.popleft()
            self._end(on_done, (token, None, NOT_STARTED), at_once=True)

    async def _call(self, token: Hashable, call: AsyncCall, on_done: Callable[[list[Outcome]], None]) -> None:
        try:
            outcome = (token, await call(), None)
        except asyncio.CancelledError as exc:
            self.running -= 1
            self._end(on_done, (token, None, exc), at_once=True)
            raise
        except BaseException as exc:  # whatever the call raised is its outcome
            outcome = (token, None, exc)
        self.running -= 1
        error = outcome[2]
        stops = error is not None and self.stops_waiting is not None and self.stops_waiting(error)
        if stops:
            # The handing thread decides again, with this failure in hand, what may start.
            self._waiting_accepted = False
            self._hand_back_unstarted()
        self._end(on_done, outcome, at_once=stops)
        self._start_waiting()

    def _end(self, on_done: Callable[[list[Outcome]], None], outcome: Outcome, *, at_once: bool = False) -> None:
        self._ended.append((on_done, outcome))
        if self._hand_back_scheduled and not at_once:
            return
        self._hand_back_scheduled = True
        if at_once or not self.hand_back_delay:
            # After the callbacks already due in this turn of the loop: the calls that end
            # together are handed back together.
            self.loop.call_soon(self._hand_back)
        else:
            self.loop.call_later(self.hand_back_delay, self._hand_back)

    def _hand_back(self) -> None:
        self._hand_back_scheduled = False
        if not self._ended:
            return
        ended, self._ended = self._ended, []
        by_receiver: dict[Callable[[list[Outcome]], None], list[Outcome]] = {}
        for on_done, outcome in ended:
            by_receiver.setdefault(on_done, []).append(outcome)
        for on_done, outcomes in by_receiver.items():
            try:
                on_done(outcomes)
            except Exception:
                logger.exception("%s: handing back %d outcome(s) failed", self.name, len(outcomes))

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, *, before: Callable[[], Awaitable[None]] | None = None, timeout: float = 5.0) -> None:
        """Cancel the calls still running, await `before` (closing what lives on the loop, such
        as a client's connections), stop the loop and wait up to `timeout` for its thread."""
        if not self.alive():
            return
        finished = asyncio.run_coroutine_threadsafe(self._wind_down(before), self.loop)
        try:
            finished.result(timeout)
        except Exception as exc:  # stopping regardless
            logger.warning("%s: winding down: %s: %s", self.name, type(exc).__name__, exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    async def _wind_down(self, before: Callable[[], Awaitable[None]] | None) -> None:
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if before is not None:
            await before()
