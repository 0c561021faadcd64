"""Which records may be worked on now: one at a time per key, in arrival order, and a key whose
record is waiting to be retried holds back the records behind it, and nothing else.

The consumer gives every record a key (its partition and its Kafka key) and takes what is ready
up to the number of free workers. A key is idle, taken (its first record is being worked on)
or waiting (its first record failed and is retried at a moment of its own).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

_READY, _TAKEN, _WAITING = "ready", "taken", "waiting"


class KeyScheduler(Generic[T]):
    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[T]] = {}
        self._state: dict[Hashable, str] = {}
        # Keys whose first item may be taken, oldest first, so no key starves another.
        self._ready: deque[Hashable] = deque()
        self._timers: list[tuple[float, int, Hashable]] = []
        # The timer in force per waiting key: a key dropped and added again ignores older ones.
        self._timer_of: dict[Hashable, int] = {}
        self._sequence = itertools.count()
        self._taken = 0
        self._waiting = 0
        self._queued = 0

    def add(self, key: Hashable, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque([item])
            self._state[key] = _READY
            self._ready.append(key)
        else:
            queue.append(item)
        self._queued += 1

    def take(self, *, limit: int, now: float) -> list[tuple[Hashable, T]]:
        """Up to `limit` items, each the first of an idle key; their keys are taken until
        `finished()` or `retry_at()`."""
        self._wake(now)
        taken = []
        while self._ready and len(taken) < limit:
            key = self._ready.popleft()
            self._state[key] = _TAKEN
            self._taken += 1
            self._queued -= 1
            taken.append((key, self._queues[key][0]))
        return taken

    def finished(self, key: Hashable) -> None:
        """The key's first item is done with: the next one, if any, becomes ready."""
        if self._state.get(key) != _TAKEN:
            return
        self._taken -= 1
        queue = self._queues[key]
        queue.popleft()
        if queue:
            self._state[key] = _READY
            self._ready.append(key)
        else:
            del self._queues[key], self._state[key]

    def retry_at(self, key: Hashable, due: float) -> None:
        """The key's first item is to be taken again, not before `due`; the items behind it wait."""
        if self._state.get(key) != _TAKEN:
            return
        self._taken -= 1
        self._queued += 1
        self._waiting += 1
        self._state[key] = _WAITING
        sequence = next(self._sequence)
        self._timer_of[key] = sequence
        heapq.heappush(self._timers, (due, sequence, key))

    def retry_now(self, key: Hashable) -> None:
        """The key's first item goes back to the ready queue at once (nothing was tried)."""
        if self._state.get(key) != _TAKEN:
            return
        self._taken -= 1
        self._queued += 1
        self._state[key] = _READY
        self._ready.appendleft(key)

    def next_due(self) -> float | None:
        """When the earliest waiting key becomes ready again."""
        while self._timers and self._timer_of.get(self._timers[0][2]) != self._timers[0][1]:
            heapq.heappop(self._timers)  # the key was dropped meanwhile
        return self._timers[0][0] if self._timers else None

    def has_ready(self, now: float) -> bool:
        self._wake(now)
        return bool(self._ready)

    def drop(self, predicate: Callable[[Hashable], bool], *, on_drop: Callable[[T], None] | None = None) -> int:
        """Forget every key for which `predicate(key)` holds, and their items (a revoked
        partition); returns how many items went. Taken keys must be finished first. `on_drop`
        is called with each item that was not taken (a taken one is its caller's to let go)."""
        dropped = 0
        for key in [key for key in self._queues if predicate(key)]:
            state = self._state.pop(key)
            queue = self._queues.pop(key)
            items = len(queue)
            dropped += items
            if on_drop is not None:
                for item in list(queue)[1 if state == _TAKEN else 0 :]:
                    on_drop(item)
            if state == _TAKEN:
                self._taken -= 1
                self._queued -= items - 1
            else:
                self._queued -= items
                if state == _WAITING:
                    self._waiting -= 1
                    del self._timer_of[key]
        if dropped:
            self._ready = deque(key for key in self._ready if key in self._state)
        return dropped

    def _wake(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, sequence, key = heapq.heappop(self._timers)
            if self._timer_of.get(key) == sequence:
                del self._timer_of[key]
                self._state[key] = _READY
                self._waiting -= 1
                self._ready.append(key)

    @property
    def taken(self) -> int:
        """Keys whose first item is being worked on."""
        return self._taken

    @property
    def waiting(self) -> int:
        """Keys whose first item waits for its retry."""
        return self._waiting

    @property
    def queued(self) -> int:
        """Items not being worked on (waiting for their key, or for a retry)."""
        return self._queued

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())
