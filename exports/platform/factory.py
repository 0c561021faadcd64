"""The platform client the settings choose: the HTTP client of EXPORT_PLATFORM_URL (one per URL,
timeout and pool size in the process, so its connections are reused), or the fake platform,
which development and the test settings may ask for and production may not."""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from exports.platform.client import ExternalPlatformClient, FakeExternalPlatformClient
from exports.platform.http import HttpExternalPlatformClient

_http_clients: dict[tuple[str, float, int], HttpExternalPlatformClient] = {}
_http_clients_lock = threading.Lock()


def platform_kind() -> str:
    """ "http" when EXPORT_PLATFORM_URL is set; "fake" when the EXPORT_PLATFORM setting asks for it (the test settings), or
    in development (DJANGO_DEBUG=true). Otherwise raises ImproperlyConfigured: a production
    consumer on the fake would mark every order exported and send none to the platform."""
    if settings.EXPORT_PLATFORM_URL:
        return "http"
    if settings.EXPORT_PLATFORM == "fake" or settings.DEBUG:
        return "fake"
    raise ImproperlyConfigured(
        "EXPORT_PLATFORM_URL is not set: set it to the platform's URL (the fake platform, which marks "
        "orders exported and sends them nowhere, runs with DJANGO_DEBUG=true only)"
    )


def platform_client(*, pool_size: int | None = None) -> ExternalPlatformClient:
    """The client `platform_kind` chooses: the HTTP client of EXPORT_PLATFORM_URL, or the fake.
    Raises ImproperlyConfigured as `platform_kind` does."""
    if platform_kind() == "fake":
        return FakeExternalPlatformClient()
    url = settings.EXPORT_PLATFORM_URL
    pool_size = pool_size or settings.EXPORT_CONCURRENCY
    key = (url, settings.EXPORT_PLATFORM_TIMEOUT, pool_size)
    with _http_clients_lock:
        if key not in _http_clients:
            _http_clients[key] = HttpExternalPlatformClient(
                url=url, timeout=settings.EXPORT_PLATFORM_TIMEOUT, pool_size=pool_size
            )
        return _http_clients[key]
