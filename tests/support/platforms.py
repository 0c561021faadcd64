"""A platform client for tests that reads what the consumer sent: the fake platform, noting each
call it took. The project's own fake keeps nothing (a consumer left running on it must not grow);
a test's consumer runs for seconds, so this one keeps every call."""

from __future__ import annotations

import threading
from typing import Any

from exports.platform.client import FakeExternalPlatformClient


class RecordingPlatform(FakeExternalPlatformClient):
    """Takes every order, like the fake, and notes (order id, Idempotency-Key) in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[tuple[int, str]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        super().send(order=order, idempotency_key=idempotency_key)
        with self._lock:
            self._received.append((order["id"], idempotency_key))

    def received_order_ids(self) -> list[int]:
        """Order ids in the order they arrived, repeats included."""
        with self._lock:
            return [order_id for order_id, _ in self._received]

    def received(self) -> list[tuple[int, str]]:
        """(order id, Idempotency-Key) pairs in the order they arrived."""
        with self._lock:
            return list(self._received)
