"""Clients of the external platform: the `ExternalPlatformClient` interface, the fake one that
is the default, and the HTTP one used when EXPORT_PLATFORM_URL is set."""
from __future__ import annotations

import abc
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests
from django.conf import settings

from kafka_bridge.consumer import NonRetryableError, RetryableError


class ExportError(Exception):
    """The platform did not take the order."""


class TransientExportError(ExportError, RetryableError):
    """Worth retrying: timeout, connection error, 408, 429, 5xx."""


class PermanentExportError(ExportError, NonRetryableError):
    """Retrying will not help: any other 4xx (or an unexpected status)."""


class ExternalPlatformClient(abc.ABC):
    @abc.abstractmethod
    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        """Deliver `order`. Returns when the platform has it (2xx, or 409: it had it already);
        raises `TransientExportError` or `PermanentExportError` otherwise."""


class FakeExternalPlatformClient(ExternalPlatformClient):
    """Records what it receives, in memory: the default when no platform URL is configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[tuple[int, str]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
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

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


TRANSIENT_STATUSES = {408, 429}


class HttpExternalPlatformClient(ExternalPlatformClient):
    """POSTs the order as JSON with `Idempotency-Key: <event_id>`, as the contract says."""

    def __init__(self, *, url: str, timeout: float, session: requests.Session | None = None):
        self.url = url
        self.timeout = timeout
        self.session = session or requests.Session()

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        # requests' timeout bounds each socket read, not the call: a platform that trickles its
        # answer could hold the consumer far longer. The call runs in a worker thread and is
        # abandoned (its socket times out on its own) when the whole call overruns.
        future = _HTTP_WORKERS.submit(self._post, order, idempotency_key)
        try:
            response = future.result(timeout=self.timeout)
        except (requests.Timeout, FutureTimeout) as exc:
            raise TransientExportError(f"timeout after {self.timeout:g} s") from exc
        except requests.ConnectionError as exc:
            raise TransientExportError(f"connection error: {exc}"[:300]) from exc
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            return
        detail = f"HTTP {status} from the platform: {response.text.strip()[:200]}".strip().rstrip(":")
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientExportError(detail)
        raise PermanentExportError(detail)

    def _post(self, order: dict[str, Any], idempotency_key: str) -> requests.Response:
        return self.session.post(
            self.url,
            json=order,
            headers={"Idempotency-Key": idempotency_key},
            timeout=self.timeout,
            # A redirected POST may be replayed as a GET; treat it as the error it is.
            allow_redirects=False,
        )


_HTTP_WORKERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="platform-http")
_fake_client = FakeExternalPlatformClient()
_http_clients: dict[tuple[str, float], HttpExternalPlatformClient] = {}


def platform_client() -> ExternalPlatformClient:
    """The client the settings choose: HTTP when EXPORT_PLATFORM_URL is set, else the
    process-wide fake (so tests and the admin can read what it received)."""
    url = settings.EXPORT_PLATFORM_URL
    if not url:
        return _fake_client
    key = (url, settings.EXPORT_PLATFORM_TIMEOUT)
    if key not in _http_clients:
        _http_clients[key] = HttpExternalPlatformClient(url=url, timeout=settings.EXPORT_PLATFORM_TIMEOUT)
    return _http_clients[key]


def fake_platform_client() -> FakeExternalPlatformClient:
    return _fake_client
