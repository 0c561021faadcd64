"""Clients of the external platform: the `ExternalPlatformClient` interface and its errors, the
fake one for development and tests, and `platform_client()`, which gives the one the settings
choose (`platform_kind` says which). The HTTP one, used when EXPORT_PLATFORM_URL is set, is
`exports.http_client.HttpExternalPlatformClient`."""

from __future__ import annotations

import abc
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kafka_bridge.consumer import NonRetryableError, RetryableError

if TYPE_CHECKING:
    from exports.http_client import HttpExternalPlatformClient

__all__ = [
    "ExportError",
    "ExternalPlatformClient",
    "FakeExternalPlatformClient",
    "PermanentExportError",
    "TransientExportError",
    "fake_platform_client",
    "platform_client",
    "platform_kind",
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
    EXPORT_PLATFORM=fake says so (see `platform_kind`).

    It remembers the last `max_received` calls (100,000 by default, about 20 MB), in arrival
    order, for tests and the benchmarks to read; older ones are forgotten, so that a consumer
    left running on it does not grow without bound."""

    # Its calls never wait on anything: the consumer makes them on its loop thread.
    in_process = True
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
_http_clients: dict[tuple[str, float, int], HttpExternalPlatformClient] = {}
_http_clients_lock = threading.Lock()


def platform_kind() -> str:
    """ "http" when EXPORT_PLATFORM_URL is set; "fake" when EXPORT_PLATFORM=fake asks for it, or
    in development (DJANGO_DEBUG=true). Otherwise raises ImproperlyConfigured: a production
    consumer on the fake would mark every order exported and send none to the platform."""
    if settings.EXPORT_PLATFORM_URL:
        return "http"
    if settings.EXPORT_PLATFORM == "fake" or settings.DEBUG:
        return "fake"
    raise ImproperlyConfigured(
        "EXPORT_PLATFORM_URL is not set: set it to the platform's URL, or set EXPORT_PLATFORM=fake "
        "for the fake platform, which marks orders exported and sends them nowhere"
    )


def platform_client() -> ExternalPlatformClient:
    """The client `platform_kind` chooses: the HTTP client of EXPORT_PLATFORM_URL, or the
    process-wide fake (so tests and the admin can read what it received). Raises
    ImproperlyConfigured as `platform_kind` does."""
    if platform_kind() == "fake":
        return _fake_client
    # Imported here: the HTTP client's module builds on this one's interface and errors.
    from exports.http_client import HttpExternalPlatformClient

    url = settings.EXPORT_PLATFORM_URL
    pool_size = getattr(settings, "EXPORT_CONCURRENCY", 32)
    key = (url, settings.EXPORT_PLATFORM_TIMEOUT, pool_size)
    with _http_clients_lock:
        if key not in _http_clients:
            _http_clients[key] = HttpExternalPlatformClient(
                url=url, timeout=settings.EXPORT_PLATFORM_TIMEOUT, pool_size=pool_size
            )
        return _http_clients[key]


def fake_platform_client() -> FakeExternalPlatformClient:
    return _fake_client
