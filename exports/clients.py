"""Clients of the external platform: the `ExternalPlatformClient` interface and its errors, and
the fake one for development and tests. The HTTP one, used when EXPORT_PLATFORM_URL is set, is
`exports.http_client.HttpExternalPlatformClient`, built on this module; which of the two the
settings choose is `exports.processor.platform_client`."""

from __future__ import annotations

import abc
import threading
from collections import deque
from typing import Any

from kafka_bridge.consumer import NonRetryableError, RetryableError

__all__ = [
    "ExportError",
    "ExternalPlatformClient",
    "FakeExternalPlatformClient",
    "PermanentExportError",
    "TransientExportError",
    "fake_platform_client",
]


class ExportError(Exception):
    """The platform did not take the order."""


class TransientExportError(ExportError, RetryableError):
    """Worth retrying: timeout, connection error, 408, 429, 5xx. `retry_after`: the seconds the
    platform asked to wait (Retry-After on a 429 or 503), or None."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class PermanentExportError(ExportError, NonRetryableError):
    """Retrying will not help: any other 4xx (or an unexpected status)."""


class ExternalPlatformClient(abc.ABC):
    @abc.abstractmethod
    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        """Deliver `order`. Returns when the platform has it (2xx, or 409: it had it already);
        raises `TransientExportError` or `PermanentExportError` otherwise."""


class FakeExternalPlatformClient(ExternalPlatformClient):
    """Takes every order and sends it nowhere, so that every order it is given ends up marked
    exported: for development and tests, and never chosen in production unless
    EXPORT_PLATFORM=fake says so (see `exports.processor.platform_kind`).

    It remembers the last `max_received` calls (100,000 by default, about 20 MB), in arrival
    order, for tests and the benchmarks to read; older ones are forgotten, so that a consumer
    left running on it does not grow without bound."""

    MAX_RECEIVED = 100_000

    def __init__(self, *, max_received: int = MAX_RECEIVED) -> None:
        self._lock = threading.Lock()
        self._received: deque[tuple[int, str]] = deque(maxlen=max_received)

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        with self._lock:
            self._received.append((order["id"], idempotency_key))

    def received_order_ids(self) -> list[int]:
        """Order ids in the order they arrived, repeats included (the last `max_received`)."""
        with self._lock:
            return [order_id for order_id, _ in self._received]

    def received(self) -> list[tuple[int, str]]:
        """(order id, Idempotency-Key) pairs in the order they arrived (the last `max_received`)."""
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


_fake_client = FakeExternalPlatformClient()


def fake_platform_client() -> FakeExternalPlatformClient:
    """The process-wide fake that `exports.processor.platform_client` gives when the settings
    choose no platform URL."""
    return _fake_client
