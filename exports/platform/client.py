"""Clients of the external platform: the `ExternalPlatformClient` interface and its errors, and
the fake one for development and tests. The HTTP one, used when EXPORT_PLATFORM_URL is set, is
`exports.platform.http.HttpExternalPlatformClient`, built on this module; which of the two the
settings choose is `exports.platform.factory.platform_client`."""

from __future__ import annotations

import abc
from typing import Any

from kafka_bridge.consumer import NonRetryableError, RetryableError

__all__ = [
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


class FakeExternalPlatformClient(ExternalPlatformClient):
    """Takes every order and sends it nowhere, so that every order it is given ends up marked
    exported: for development (DJANGO_DEBUG=true) and the test settings, never chosen in
    production (see `exports.platform.factory.platform_kind`). It keeps nothing: what was
    exported is in the database (`OrderExport`, and each call as an `ExportAttempt`)."""

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        return None
