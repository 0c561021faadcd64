"""HttpExternalPlatformClient against a real HTTP server on 127.0.0.1 (the platform stub, or a
bare socket where the test needs a platform that never answers), and the choice of client the
settings make."""

from __future__ import annotations

import base64
import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from exports.platform.client import FakeExternalPlatformClient, PermanentExportError, TransientExportError
from exports.platform.factory import platform_client, platform_kind
from exports.platform.http import HttpExternalPlatformClient
from tests.support.helpers import wait_until
from tests.support.platform_stub import PlatformServer, PlatformStub

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


@pytest.fixture
def platform() -> Iterator[PlatformServer]:
    server = PlatformServer(PlatformStub())
    yield server
    server.close()


@pytest.fixture
def stub(platform: PlatformServer) -> PlatformStub:
    return platform.stub


@pytest.fixture
def make_client(stub: PlatformStub) -> Iterator[Callable[..., HttpExternalPlatformClient]]:
    """`make_client(timeout=..., pool_size=..., url=...)`: a client of the stub unless told
    otherwise, closed after the test."""
    made: list[HttpExternalPlatformClient] = []

    def make(
        *, url: str | None = None, timeout: float = 5.0, pool_size: int = 4, **kwargs
    ) -> HttpExternalPlatformClient:
        client = HttpExternalPlatformClient(url=url or stub.url, timeout=timeout, pool_size=pool_size, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def send_in_threads(client: HttpExternalPlatformClient, count: int) -> list[BaseException | None]:
    """`count` calls at once, one per thread, each with a key of its own; their outcomes."""
    outcomes: list[BaseException | None] = [None] * count

    def call(i: int) -> None:
        try:
            client.send(order={**ORDER, "id": i}, idempotency_key=f"key-{i}")
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a call did not end"
    return outcomes


# --- what goes out ----------------------------------------------------------------------------


def test_send_posts_the_order_as_compact_json_with_the_idempotency_key(stub, make_client):
    make_client().send(order=ORDER, idempotency_key=KEY)

    [request] = stub.received()
    assert (request.method, request.target) == ("POST", "/orders")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == KEY
    assert request.body == json.dumps(ORDER, separators=(",", ":")).encode("utf-8")
    assert request.headers["content-length"] == str(len(request.body))
    assert json.loads(request.body) == ORDER


def test_send_keeps_the_query_and_sends_the_urls_credentials_as_basic_auth(stub, make_client):
    url = stub.url.replace("http://", "http://alice:s3cr%40t@") + "?tenant=7"

    make_client(url=url).send(order=ORDER, idempotency_key=KEY)

    [request] = stub.received()
    assert request.target == "/orders?tenant=7"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()


# --- what comes back --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_send_counts_2xx_as_exported(stub, make_client, status):
    stub.down_status = status

    assert make_client().send(order=ORDER, idempotency_key=KEY) is None
    assert [call.status for call in stub.calls] == [status]


def test_send_counts_a_409_for_a_key_the_platform_has_as_exported(stub, make_client):
    client = make_client()

    client.send(order=ORDER, idempotency_key=KEY)
    assert client.send(order=ORDER, idempotency_key=KEY) is None

    assert [call.status for call in stub.calls] == [201, 409]
    assert stub.exported_order_ids() == [ORDER["id"]]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_send_raises_transient_for_408_429_and_5xx(stub, make_client, status):
    stub.down_status = status

    with pytest.raises(TransientExportError, match=str(status)):
        make_client().send(order=ORDER, idempotency_key=KEY)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_send_raises_permanent_naming_the_status_for_other_4xx(stub, make_client, status):
    stub.down_status = status
    stub.down_body = b'{"detail": "no"}'

    with pytest.raises(PermanentExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert not isinstance(excinfo.value, TransientExportError)
    assert str(excinfo.value) == f'HTTP {status} from the platform: {{"detail": "no"}}'


def test_the_error_carries_the_first_200_characters_of_the_stripped_body(stub, make_client):
    stub.down_status = 503
    stub.down_body = b"  \n" + b"x" * 300 + b"\n  "

    with pytest.raises(TransientExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert str(excinfo.value) == "HTTP 503 from the platform: " + "x" * 200


def test_the_error_names_only_the_status_when_the_body_is_empty(stub, make_client):
    stub.down_status = 500

    with pytest.raises(TransientExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert str(excinfo.value) == "HTTP 500 from the platform"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_send_does_not_follow_a_redirect_and_raises_permanent(stub, make_client, status):
    stub.down_status = status
    stub.down_headers = {"Location": stub.url.replace("/orders", "/elsewhere")}

    with pytest.raises(PermanentExportError, match=f"HTTP {status}"):
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert [(r.method, r.target) for r in stub.received()] == [("POST", "/orders")]


# --- Retry-After ------------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("7", 7.0, 7.0),
        ("0", 0.0, 0.0),
        (" 12 ", 12.0, 12.0),
        ("86400", 3600.0, 3600.0),
        # HTTP dates as seconds from the moment the test runs (not from collection time).
        (120, 110.0, 120.0),
        (-600, 0.0, 0.0),
        (7200, 3600.0, 3600.0),
    ],
    ids=["seconds", "zero", "spaces", "capped", "date", "past-date", "capped-date"],
)
def test_retry_after_of_a_429_or_503_is_passed_on_in_seconds(stub, make_client, status, value, low, high):
    stub.down_status = status
    stub.retry_after = http_date(value) if isinstance(value, int) else value

    with pytest.raises(TransientExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert low <= excinfo.value.retry_after <= high


@pytest.mark.parametrize("value", [None, "soon", "-5", "1.5", "Tue, 99 Foo 2025 25:00:00 GMT"])
def test_retry_after_is_none_when_absent_or_unreadable(stub, make_client, value):
    stub.down_status = 503
    stub.retry_after = value

    with pytest.raises(TransientExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert excinfo.value.retry_after is None


def test_retry_after_is_read_only_from_a_429_or_503(stub, make_client):
    stub.down_status = 502
    stub.down_headers = {"Retry-After": "30"}

    with pytest.raises(TransientExportError) as excinfo:
        make_client().send(order=ORDER, idempotency_key=KEY)

    assert excinfo.value.retry_after is None


def test_a_transient_error_raised_by_hand_has_no_retry_after():
    assert TransientExportError("HTTP 503").retry_after is None
    assert TransientExportError("HTTP 429", retry_after=2.0).retry_after == 2.0


# --- connections ------------------------------------------------------------------------------


def test_sequential_calls_share_one_keep_alive_connection(stub, make_client):
    client = make_client()

    for i in range(50):
        client.send(order={**ORDER, "id": i}, idempotency_key=f"key-{i}")

    assert len(stub.exported_order_ids()) == 50
    assert stub.connections == 1


def test_pool_size_calls_are_in_flight_together_on_at_most_pool_size_connections(stub, make_client):
    pool_size = 8
    stub.delay = 0.3
    client = make_client(pool_size=pool_size)

    started = time.monotonic()
    assert send_in_threads(client, pool_size) == [None] * pool_size
    elapsed = time.monotonic() - started

    assert stub.max_in_flight == pool_size
    assert stub.connections == pool_size
    assert elapsed < 0.3 * 3, "the calls did not run in parallel"

    # Twice as many callers as connections: the others wait for one, none opens another.
    assert send_in_threads(client, 2 * pool_size) == [None] * (2 * pool_size)
    assert stub.max_in_flight == pool_size
    assert stub.connections == pool_size


def test_an_answer_that_says_close_is_not_reused(stub, make_client):
    stub.down_status = 200
    stub.down_headers = {"Connection": "close"}
    client = make_client()

    client.send(order=ORDER, idempotency_key="a")
    client.send(order=ORDER, idempotency_key="b")

    assert stub.connections == 2


def test_a_body_longer_than_64_kib_costs_the_connection_and_a_shorter_one_does_not(stub, make_client):
    stub.down_status = 503
    client = make_client()

    stub.down_body = b"y" * 1024
    for key in ("a", "b"):
        with pytest.raises(TransientExportError, match="y" * 200):
            client.send(order=ORDER, idempotency_key=key)
    assert stub.connections == 1

    stub.down_body = b"z" * (100 * 1024)
    for key in ("c", "d"):
        with pytest.raises(TransientExportError, match="z" * 200):
            client.send(order=ORDER, idempotency_key=key)
    # "c" took the pooled connection and dropped it; "d" opened one and dropped it too.
    assert stub.connections == 2
    stub.down_body = b""
    with pytest.raises(TransientExportError):
        client.send(order=ORDER, idempotency_key="e")
    assert stub.connections == 3


def test_a_connection_the_platform_closed_while_idle_is_replaced(platform, stub, make_client):
    client = make_client()
    client.send(order=ORDER, idempotency_key="a")

    platform.drop_idle_connections()
    wait_until(lambda: stub.open_connections == 0, timeout=5, message="the stub kept its idle connection")
    client.send(order=ORDER, idempotency_key="b")

    assert stub.exported_order_ids() == [ORDER["id"], ORDER["id"]]
    assert stub.connections == 2


def test_a_reused_connection_that_ends_without_an_answer_is_retried_once_on_a_new_one(stub, make_client):
    client = make_client()
    client.send(order=ORDER, idempotency_key="a")
    # From now on every call's connection is closed before the answer.
    stub.delay = 5
    stub.release.set()

    with pytest.raises(TransientExportError, match="^connection error: "):
        client.send(order=ORDER, idempotency_key="b")

    assert [r.headers["idempotency-key"] for r in stub.received()] == ["a", "b", "b"]
    assert stub.connections == 2

    # On a connection of its own the same failure is not tried again.
    with pytest.raises(TransientExportError, match="^connection error: "):
        client.send(order=ORDER, idempotency_key="c")
    assert [r.headers["idempotency-key"] for r in stub.received()][3:] == ["c"]


def test_close_closes_the_idle_connections(stub, make_client):
    client = make_client()
    client.send(order=ORDER, idempotency_key="a")
    assert stub.open_connections == 1

    client.close()

    wait_until(lambda: stub.open_connections == 0, timeout=5, message="the client's connection is still open")


# --- answers the stub does not give: a platform that replays canned bytes -------------------


class CannedPlatform:
    """A platform on 127.0.0.1 that answers each request it reads (a head and a Content-Length
    body) with the next of `answers`, as bytes, whole; after an answer that has `close` in its
    head it closes the connection. Counts connections."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/orders"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                buffer = rest[length:]
                with self.lock:
                    answer = self.answers.pop(0)
                conn.sendall(answer)
                if b"close" in answer.partition(b"\r\n\r\n")[0].lower():
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def canned() -> Iterator[Callable[[list[bytes]], CannedPlatform]]:
    made: list[CannedPlatform] = []

    def make(answers: list[bytes]) -> CannedPlatform:
        made.append(platform := CannedPlatform(answers))
        return platform

    yield make
    for platform in made:
        platform.close()


def chunked(status: str, body: bytes, chunk: int = 1000) -> bytes:
    pieces = [body[at : at + chunk] for at in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + encoded + b"0\r\n\r\n"


def test_a_chunked_answer_is_read_and_its_connection_kept(canned, make_client):
    platform = canned([chunked("503 Busy", b"slow " * 100), chunked("201 Created", b'{"ok": true}')])
    client = make_client(url=platform.url)

    with pytest.raises(TransientExportError) as excinfo:
        client.send(order=ORDER, idempotency_key="a")
    client.send(order=ORDER, idempotency_key="b")

    assert str(excinfo.value) == "HTTP 503 from the platform: " + ("slow " * 40).strip()
    assert platform.connections == 1


def test_a_chunked_body_longer_than_64_kib_costs_the_connection(canned, make_client):
    platform = canned([chunked("500 Oops", b"z" * (100 * 1024), chunk=4096), chunked("201 Created", b"")])
    client = make_client(url=platform.url)

    with pytest.raises(TransientExportError, match="z" * 200):
        client.send(order=ORDER, idempotency_key="a")
    client.send(order=ORDER, idempotency_key="b")

    assert platform.connections == 2


def test_an_answer_without_length_ends_with_the_connection(canned, make_client):
    platform = canned(
        [
            b"HTTP/1.1 429 Slow Down\r\nRetry-After: 3\r\nConnection: close\r\n\r\nnot now",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        ]
    )
    client = make_client(url=platform.url)

    with pytest.raises(TransientExportError) as excinfo:
        client.send(order=ORDER, idempotency_key="a")
    client.send(order=ORDER, idempotency_key="b")

    assert str(excinfo.value) == "HTTP 429 from the platform: not now"
    assert excinfo.value.retry_after == 3.0
    assert platform.connections == 2


def test_an_interim_answer_is_passed_over_for_the_final_one(canned, make_client):
    platform = canned(
        [b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\nno"]
    )

    assert make_client(url=platform.url).send(order=ORDER, idempotency_key="a") is None


def test_an_answer_that_is_not_http_is_a_connection_error_and_costs_the_connection(canned, make_client):
    platform = canned([b"SMTP ready\r\n\r\n", b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    client = make_client(url=platform.url)

    with pytest.raises(TransientExportError, match="^connection error: "):
        client.send(order=ORDER, idempotency_key="a")
    client.send(order=ORDER, idempotency_key="b")

    assert platform.connections == 2


def test_the_wait_for_a_free_connection_counts_against_the_deadline(stub, make_client):
    stub.delay = 0.4
    client = make_client(pool_size=1, timeout=0.6)

    started = time.monotonic()
    outcomes = send_in_threads(client, 2)

    # One call took the connection for 0.4 s; the other waited for it, then ran out of time.
    assert sorted(map(repr, outcomes)) == ["None", repr(TransientExportError("timeout after 0.6 s"))]
    assert time.monotonic() - started < 1.0
    assert stub.connections == 1


# --- the deadline -----------------------------------------------------------------------------


def test_send_raises_transient_naming_the_timeout_when_the_platform_is_slower_than_it(stub, make_client):
    stub.delay = 1.0

    started = time.monotonic()
    with pytest.raises(TransientExportError, match=r"^timeout after 0\.2 s$"):
        make_client(timeout=0.2).send(order=ORDER, idempotency_key=KEY)

    assert time.monotonic() - started < 0.7
    assert len(stub.received()) == 1


# A client that misses its deadline would trickle for hours: fail in seconds instead.
@pytest.mark.timeout(30)
def test_a_trickled_answer_ends_at_the_deadline_and_leaves_no_thread_behind(stub, make_client):
    client = make_client(timeout=1.0)
    # The first call starts the event loop thread that send() runs its calls on: it is no
    # thread left behind.
    client.send(order=ORDER, idempotency_key="warm-up")
    threads_before = threading.active_count()
    # A byte every 50 ms: no socket read ever waits long, yet the answer never ends.
    stub.trickle = 0.05

    started = time.monotonic()
    with pytest.raises(TransientExportError, match="timeout after 1 s"):
        client.send(order=ORDER, idempotency_key=KEY)
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 2.0
    wait_until(
        lambda: threading.active_count() == threads_before,
        timeout=5,
        message=lambda: f"{threading.active_count() - threads_before} thread(s) more than before the call",
    )
    # The client dropped the connection: the stub stops trickling.
    wait_until(lambda: stub.in_flight == 0, timeout=5, message="the trickled answer is still being sent")


@pytest.mark.timeout(30)
def test_parallel_trickled_answers_all_end_at_their_deadline(stub, make_client):
    stub.trickle = 0.05
    client = make_client(timeout=0.5, pool_size=6)

    started = time.monotonic()
    outcomes = send_in_threads(client, 6)

    assert all(isinstance(outcome, TransientExportError) and "timeout" in str(outcome) for outcome in outcomes)
    assert time.monotonic() - started < 1.5


@pytest.fixture
def full_listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listening socket whose accept queue is full (backlog 0, one connection waiting), so
    that a further connect hangs; and the connection that fills it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=2)
    yield listener, filler
    filler.close()
    listener.close()


@pytest.mark.timeout(30)
def test_no_byte_of_the_post_leaves_once_the_deadline_has_passed(full_listener, make_client):
    listener, filler = full_listener
    host, port = listener.getsockname()
    client = make_client(url=f"http://{host}:{port}/orders", timeout=0.5)

    started = time.monotonic()
    with pytest.raises(TransientExportError, match="timeout after 0.5 s"):
        client.send(order=ORDER, idempotency_key=KEY)
    assert time.monotonic() - started < 1.0

    # Make room at once: a connect still retrying in the background (its SYN is resent after
    # a second) would now get through, and a POST written after the deadline would arrive.
    listener.setblocking(False)
    open_sockets = [listener.accept()[0]]
    connections_after_the_deadline = 0
    received = b""
    observe_until = time.monotonic() + 1.5
    while (left := observe_until - time.monotonic()) > 0:
        readable, _, _ = select.select([listener, *open_sockets], [], [], left)
        for sock in readable:
            if sock is listener:
                open_sockets.append(listener.accept()[0])
                connections_after_the_deadline += 1
            elif data := sock.recv(65536):
                received += data
            else:
                open_sockets.remove(sock)
                sock.close()
    for sock in open_sockets:
        sock.close()

    assert received == b""
    assert connections_after_the_deadline == 0


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on a local port that is bound but not listening, so connecting is refused; held
    for the test so no other process can take the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/orders"
    sock.close()


def test_send_raises_transient_when_the_connection_is_refused(refused_url, make_client):
    client = make_client(url=refused_url, timeout=2.0)

    with pytest.raises(TransientExportError, match="^connection error: "):
        client.send(order=ORDER, idempotency_key=KEY)


# --- what errors say --------------------------------------------------------------------------

SECRETS = ("alice", "pa55word", "t0ken-x9")


def secret_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://alice:pa55word@{rest}?token=t0ken-x9"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {text!r}"


def test_errors_never_show_the_urls_credentials_or_query(stub, make_client, refused_url):
    stub.down_status = 503
    stub.down_body = b"busy"
    texts = []

    for url, timeout in ((secret_url(stub.url), 5.0), (secret_url(refused_url), 2.0)):
        with pytest.raises(TransientExportError) as excinfo:
            make_client(url=url, timeout=timeout).send(order=ORDER, idempotency_key=KEY)
        texts += [str(excinfo.value), repr(excinfo.value)]
    stub.down_status, stub.delay = None, 2.0
    client = make_client(url=secret_url(stub.url), timeout=0.2)
    with pytest.raises(TransientExportError) as excinfo:
        client.send(order=ORDER, idempotency_key="slow")
    texts += [str(excinfo.value), repr(client)]

    assert texts[0] == "HTTP 503 from the platform: busy"
    assert texts[2].startswith("connection error: ")
    for text in texts:
        assert_no_secret(text)


# A platform that echoes the request in its error page, as many web servers' 404 pages do.
ECHOING_BODY = b"no route for POST /orders?token=t0ken-x9 (alice:pa55word)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure", ["refused", "unknown host", "timeout", "HTTP 404", "HTTP 500", "TLS"])
def test_no_failure_shows_the_urls_credentials_or_query(request, failure, stub, make_client, refused_url):
    base, timeout = stub.url, 5.0
    if failure == "refused":
        base = refused_url
    elif failure == "unknown host":
        base, timeout = "http://platform.invalid/orders", 2.0
    elif failure == "timeout":
        stub.delay, timeout = 2.0, 0.3
    elif failure.startswith("HTTP"):
        stub.down_status, stub.down_body = int(failure.removeprefix("HTTP ")), ECHOING_BODY
    elif failure == "TLS":
        base = request.getfixturevalue("tls_stub").url
    client = make_client(url=secret_url(base), timeout=timeout)

    with pytest.raises((TransientExportError, PermanentExportError)) as excinfo:
        client.send(order=ORDER, idempotency_key=KEY)

    # str() is what reaches export.last_error and dlt.error; repr() and the args, tracebacks.
    for text in (str(excinfo.value), repr(excinfo.value), *map(str, excinfo.value.args), repr(client)):
        assert_no_secret(text)
    if failure.startswith("HTTP"):
        assert str(excinfo.value) == f"{failure} from the platform: no route for POST /orders?*** (***)"


def test_an_unknown_host_is_a_connection_error(make_client):
    client = make_client(url="http://platform.invalid/orders", timeout=2.0)

    with pytest.raises(TransientExportError, match="^connection error: "):
        client.send(order=ORDER, idempotency_key=KEY)


@pytest.mark.parametrize(
    "url",
    ["ftp://platform.example/orders", "http:///orders", "platform.example/orders", f"http://{'x' * 64}.example/"],
)
def test_a_url_that_is_not_http_with_a_host_is_refused_at_once(url):
    with pytest.raises(ValueError):
        HttpExternalPlatformClient(url=url, timeout=1.0)


# --- https ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_stub(certificate) -> Iterator[PlatformStub]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = PlatformServer(PlatformStub(), ssl_context=context)
    yield server.stub
    server.close()


@pytest.mark.timeout(30)
def test_https_keeps_its_connection_and_ends_a_trickled_answer_at_the_deadline(tls_stub, certificate, make_client):
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    client = make_client(url=tls_stub.url, timeout=1.0, ssl_context=trusting)

    for i in range(3):
        client.send(order={**ORDER, "id": i}, idempotency_key=f"key-{i}")
    assert tls_stub.connections == 1
    assert tls_stub.url.startswith("https://")

    tls_stub.trickle = 0.05
    started = time.monotonic()
    with pytest.raises(TransientExportError, match="timeout after 1 s"):
        client.send(order=ORDER, idempotency_key=KEY)
    assert time.monotonic() - started < 2.0


def test_https_verifies_the_platforms_certificate_by_default(tls_stub, make_client):
    with pytest.raises(TransientExportError, match="CERTIFICATE_VERIFY_FAILED"):
        make_client(url=tls_stub.url).send(order=ORDER, idempotency_key=KEY)

    assert tls_stub.received() == []


# --- the client the settings choose -----------------------------------------------------------


def test_platform_client_is_the_fake_when_no_platform_url_is_set(settings):
    settings.EXPORT_PLATFORM_URL = None
    settings.EXPORT_PLATFORM = "fake"

    client = platform_client()

    assert isinstance(client, FakeExternalPlatformClient)


def test_platform_client_is_the_http_client_with_the_configured_url_timeout_and_pool(settings):
    settings.EXPORT_PLATFORM_URL = "http://platform.invalid/orders"
    settings.EXPORT_PLATFORM_TIMEOUT = 2.5
    settings.EXPORT_CONCURRENCY = 7

    client = platform_client()

    assert isinstance(client, HttpExternalPlatformClient)
    assert client.url == "http://platform.invalid/orders"
    assert client.timeout == 2.5
    assert client.pool_size == 7
    assert platform_client() is client

    settings.EXPORT_CONCURRENCY = 9
    assert platform_client() is not client
    assert platform_client().pool_size == 9


@pytest.mark.parametrize(
    ("debug", "platform", "url", "kind"),
    [
        (False, None, "http://platform.invalid/orders", "http"),
        (False, "http", "http://platform.invalid/orders", "http"),
        (False, "fake", None, "fake"),
        (True, None, None, "fake"),
    ],
)
def test_platform_kind_is_http_with_a_url_and_the_fake_when_asked_for_or_in_development(
    settings, debug, platform, url, kind
):
    settings.DEBUG, settings.EXPORT_PLATFORM, settings.EXPORT_PLATFORM_URL = debug, platform, url

    assert platform_kind() == kind


def test_without_a_url_in_production_no_client_is_chosen_and_the_error_says_what_to_set(settings):
    settings.DEBUG, settings.EXPORT_PLATFORM, settings.EXPORT_PLATFORM_URL = False, None, None

    with pytest.raises(ImproperlyConfigured) as excinfo:
        platform_client()

    assert "EXPORT_PLATFORM_URL" in str(excinfo.value)
    assert "DJANGO_DEBUG=true" in str(excinfo.value)


def test_the_fake_takes_every_order_and_keeps_nothing():
    fake = FakeExternalPlatformClient()

    for order_id in range(5):
        assert fake.send(order={**ORDER, "id": order_id}, idempotency_key=f"key-{order_id}") is None

    assert vars(fake) == {}
