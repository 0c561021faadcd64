"""HttpExternalPlatformClient against a real HTTP server on 127.0.0.1, and the choice of client
the settings make."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exports.clients import (
    FakeExternalPlatformClient,
    HttpExternalPlatformClient,
    PermanentExportError,
    TransientExportError,
    fake_platform_client,
    platform_client,
)

ORDER = {
    "id": 42,
    "customer_id": "c-1",
    "status": "confirmed",
    "total_amount": "20.00",
    "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}],
    "created_at": "2025-01-01T10:00:00Z",
    "confirmed_at": "2025-01-01T10:05:00Z",
}
KEY = "5f0c6a9e-3c1b-4d8e-9a57-2b1f0e6d4c3a"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StubPlatform:
    """A local HTTP server standing in for the platform: each test sets what it answers."""

    url: str
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Set: the answer is sent a byte at a time with this pause between bytes.
    trickle_pause: float | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    # Set at teardown, so a handler still delaying its answer returns at once.
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)


def _handler_for(stub: StubPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with stub.lock:
                stub.requests.append(
                    RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            if stub.delay and stub.release.wait(stub.delay):
                return  # the test is over; nobody waits for this answer
            try:
                if stub.trickle_pause is not None:
                    self._trickle()
                    return
                self.send_response(stub.status)
                for name, value in stub.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); expected

        def _trickle(self) -> None:
            """The whole answer, status line included, a byte at a time."""
            raw = f"HTTP/1.1 {stub.status} X\r\nContent-Length: {len(stub.body)}\r\n\r\n".encode() + stub.body
            for byte in raw:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if stub.release.wait(stub.trickle_pause):
                    return

        do_POST = do_GET = do_PUT = _answer

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

    return Handler


@pytest.fixture
def stub_platform() -> Iterator[StubPlatform]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    host, port = server.server_address[:2]
    stub = StubPlatform(url=f"http://{host}:{port}/orders")
    server.RequestHandlerClass = _handler_for(stub)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="stub-platform", daemon=True
    )
    thread.start()
    yield stub
    stub.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def http_client(stub: StubPlatform, *, timeout: float = 5.0) -> HttpExternalPlatformClient:
    return HttpExternalPlatformClient(url=stub.url, timeout=timeout)


def test_send_posts_the_order_as_json_with_the_idempotency_key(stub_platform):
    http_client(stub_platform).send(order=ORDER, idempotency_key=KEY)

    [request] = stub_platform.received()
    assert request.method == "POST"
    assert request.path == "/orders"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == KEY
    assert json.loads(request.body) == ORDER


@pytest.mark.parametrize("status", [200, 201, 204, 409])
def test_send_counts_2xx_and_409_as_exported(stub_platform, status):
    stub_platform.status = status

    assert http_client(stub_platform).send(order=ORDER, idempotency_key=KEY) is None
    assert len(stub_platform.received()) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_send_raises_transient_for_408_429_and_5xx(stub_platform, status):
    stub_platform.status = status

    with pytest.raises(TransientExportError, match=str(status)):
        http_client(stub_platform).send(order=ORDER, idempotency_key=KEY)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_send_raises_permanent_naming_the_status_for_other_4xx(stub_platform, status):
    stub_platform.status = status
    stub_platform.body = b'{"detail": "no"}'

    with pytest.raises(PermanentExportError) as excinfo:
        http_client(stub_platform).send(order=ORDER, idempotency_key=KEY)

    assert not isinstance(excinfo.value, TransientExportError)
    assert str(status) in str(excinfo.value)


def test_send_raises_transient_naming_the_timeout_when_the_platform_is_slower_than_it(stub_platform):
    stub_platform.delay = 1.0

    started = time.monotonic()
    with pytest.raises(TransientExportError, match="timeout"):
        http_client(stub_platform, timeout=0.2).send(order=ORDER, idempotency_key=KEY)

    assert time.monotonic() - started < 1.0
    assert len(stub_platform.received()) == 1


def test_send_raises_transient_when_a_trickled_answer_takes_longer_than_the_timeout(stub_platform):
    # Every pause is a tenth of the timeout; the status line alone takes longer than the timeout.
    stub_platform.trickle_pause = 0.05

    with pytest.raises(TransientExportError, match="timeout"):
        http_client(stub_platform, timeout=0.5).send(order=ORDER, idempotency_key=KEY)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on a local port that is bound but not listening, so connecting is refused; held
    for the test so no other process can take the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/orders"
    sock.close()


def test_send_raises_transient_when_the_connection_is_refused(refused_url):
    client = HttpExternalPlatformClient(url=refused_url, timeout=2.0)

    with pytest.raises(TransientExportError, match="connection"):
        client.send(order=ORDER, idempotency_key=KEY)


@pytest.mark.parametrize("status", [301, 302])
def test_send_does_not_follow_a_redirect_and_raises_permanent(stub_platform, status):
    stub_platform.status = status
    stub_platform.headers = {"Location": "/elsewhere"}

    with pytest.raises(PermanentExportError, match=str(status)):
        http_client(stub_platform).send(order=ORDER, idempotency_key=KEY)

    assert [(r.method, r.path) for r in stub_platform.received()] == [("POST", "/orders")]


def test_platform_client_is_the_fake_when_no_platform_url_is_set(settings):
    settings.EXPORT_PLATFORM_URL = None

    client = platform_client()

    assert isinstance(client, FakeExternalPlatformClient)
    assert client is fake_platform_client()


def test_platform_client_is_the_http_client_with_the_configured_url_and_timeout(settings):
    settings.EXPORT_PLATFORM_URL = "http://platform.invalid/orders"
    settings.EXPORT_PLATFORM_TIMEOUT = 2.5

    client = platform_client()

    assert isinstance(client, HttpExternalPlatformClient)
    assert client.url == "http://platform.invalid/orders"
    assert client.timeout == 2.5
