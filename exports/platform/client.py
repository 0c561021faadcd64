"""Clients of the external platform: the `ExternalPlatformClient` interface (a blocking `send`,
each call on a worker thread of its own) and `AsyncExternalPlatformClient` (a coroutine
`send_async`, hundreds of calls in flight on the consumer's event loop), their errors, and the
fake one for development and tests. The HTTP one, used when EXPORT_PLATFORM_URL is set, is
`exports.platform.http.HttpExternalPlatformClient`, built on this module; which of the two the
settings choose is `exports.platform.factory.platform_client`."""

from __future__ import annotations

import abc
import threading
from typing import Any

from kafka_bridge.consumer import NonRetryableError, RetryableError
from kafka_bridge.consumer.event_loop import EventLoopThread

__all__ = [
    "AsyncExternalPlatformClient",
    "ExportError",
    "ExternalPlatformClient",
    "FakeExternalPlatformClient",
    "PermanentExportError",
    "TransientExportError",
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


class AsyncExternalPlatformClient(ExternalPlatformClient):
    """A client whose calls are coroutines: the export consumer awaits `send_async` on its event
    loop thread, so that hundreds of calls in flight cost no thread each. `send` makes the same
    call from code that is not a coroutine (a shell, a script, a test), on an event loop thread
    the process shares for that."""

    @abc.abstractmethod
    async def send_async(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        """As `send`, on the running event loop."""

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        return blocking_calls_loop().run(lambda: self.send_async(order=order, idempotency_key=idempotency_key))

    async def aclose(self) -> None:
        """Close what the client holds on the running event loop (its connections): called on
        the consumer's event loop before it stops."""


_blocking_loop: EventLoopThread | None = None
_blocking_loop_lock = threading.Lock()


def blocking_calls_loop() -> EventLoopThread:
    """The event loop on which `AsyncExternalPlatformClient.send` runs its calls: one per
    process, started at the first such call, living as long as the process."""
    global _blocking_loop
    with _blocking_loop_lock:
        if _blocking_loop is None or not _blocking_loop.alive():
            _blocking_loop = EventLoopThread(name="platform-blocking-calls")
            _blocking_loop.start()
        return _blocking_loop


class FakeExternalPlatformClient(AsyncExternalPlatformClient):
    """Takes every order and sends it nowhere, so that every order it is given ends up marked
    exported: for development (DJANGO_DEBUG=true) and the test settings, never chosen in
    production (see `exports.platform.factory.platform_kind`). It keeps nothing: what was
    exported is in the database (`OrderExport`, and each call as an `ExportAttempt`).

    Its calls take the same path as the HTTP client's (the consumer's event loop); a subclass
    may override `send` alone, which `send_async` calls and which must then not block."""

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        return None

    async def send_async(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        return self.send(order=order, idempotency_key=idempotency_key)
