"""Clients of the external platform: the `ExternalPlatformClient` interface, the HTTP one used
when EXPORT_PLATFORM_URL is set, and the fake one for development and tests (`platform_kind`
says which one the settings choose)."""

from __future__ import annotations

import abc
import base64
import heapq
import http.client
import itertools
import json
import os
import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kafka_bridge.consumer import NonRetryableError, RetryableError


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


TRANSIENT_STATUSES = {408, 429}
# Statuses whose Retry-After is read: "slow down" and "down for a while".
RETRY_AFTER_STATUSES = {429, 503}
RETRY_AFTER_MAX = 3600.0
# Enough of an error body for the message; a platform answering megabytes is not read further
# (and its connection is dropped, since the rest of the body is still on the wire).
BODY_LIMIT = 64 * 1024
_DELTA_SECONDS = re.compile(r"[0-9]+")


class _DeadlinePassed(Exception):
    """The call's deadline passed; it ends as a timeout whatever it was doing."""


class _Call:
    """One `send()`: its deadline, and the socket the deadline thread shuts down if the call is
    still busy with it by then. The lock makes "finished" and "shut down" exclusive, so that a
    socket already back in the pool (or closed, its descriptor reused) is never touched."""

    __slots__ = ("deadline", "_lock", "_sock", "finished", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.finished = False
        self.expired = False

    def time_left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise _DeadlinePassed
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                raise _DeadlinePassed
            self._sock = sock

    def unwatch(self) -> None:
        with self._lock:
            self._sock = None

    def finish(self) -> bool:
        """Ends the watch; True when the deadline thread got to the call first."""
        with self._lock:
            self.finished = True
            self._sock = None
            return self.expired

    def expire(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.expired = True
            if self._sock is not None:
                try:
                    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop
                    # the TLS state under the reading thread's feet. Shutting the descriptor
                    # down makes the blocked read (or connect) return at once.
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass


class _DeadlineWatcher:
    """One daemon thread for the process that ends the calls still busy at their deadline.

    Socket timeouts bound each read, not the call: a platform sending a byte a second keeps
    every read short and the call going for ever. Abandoning the call to a thread would let its
    POST leave after the record gave up; shutting its socket down ends it where it is."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A child process has none of the parent's threads, and its locks may be held by them.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Call]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, call: _Call) -> None:
        with self._cond:
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="platform-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is call:
                self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                # Finished calls leave the heap only when they reach its top, so the thread
                # sleeps until the oldest unfinished deadline rather than waking for each call.
                while heap and heap[0][2].finished:
                    heapq.heappop(heap)
                if not heap:
                    self._cond.wait()
                    continue
                deadline, _, call = heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(heap)
                call.expire()


_deadlines = _DeadlineWatcher()


def _open_socket(host: str, port: int, call: _Call) -> socket.socket:
    """socket.create_connection with the call's time left, each socket watched while it
    connects. Name resolution is the one step only the system resolver bounds."""
    error: OSError | None = None
    for family, type_, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        try:
            call.watch(sock)
            sock.settimeout(call.time_left())
            sock.connect(address)
            return sock
        except OSError as exc:
            call.unwatch()
            sock.close()
            if call.expired:
                raise _DeadlinePassed from exc
            error = exc
        except BaseException:
            call.unwatch()
            sock.close()
            raise
    raise error or OSError(f"no address found for {host}")


class _DeadlineConnectionMixin:
    """What both connection classes share: connect within the call's deadline (`call` is set
    by the client for each use), and write the request in one piece."""

    call: _Call | None = None
    # The last answer read on this connection.
    response: http.client.HTTPResponse | None = None

    def connect(self) -> None:
        self.sock = _open_socket(self.host, self.port, self.call)
        # Requests are written in one piece and answers awaited: Nagle would only delay them.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body=None, encode_chunked=False) -> None:
        # http.client writes the headers and the body separately; one write means the deadline
        # check just before it covers every byte of the request, and one segment per request.
        self._buffer.extend((b"", message_body or b""))
        data = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.call.time_left()
        self.send(data)


class _Connection(_DeadlineConnectionMixin, http.client.HTTPConnection):
    pass


class _TLSConnection(_DeadlineConnectionMixin, http.client.HTTPSConnection):
    def connect(self) -> None:
        _DeadlineConnectionMixin.connect(self)
        # The handshake after wrapping, so the deadline thread can end a stalled one too.
        sock = self._context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock = sock
        self.call.watch(sock)
        sock.settimeout(self.call.time_left())
        sock.do_handshake()


def _is_dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed by the platform (or holds bytes
    nobody asked for): either way it cannot carry the next request."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (0 to RETRY_AFTER_MAX), from delta-seconds or an HTTP-date;
    None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            # "-0000" and obsolete forms parse without a zone; HTTP-dates are GMT.
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class HttpExternalPlatformClient(ExternalPlatformClient):
    """POSTs the order as JSON with `Idempotency-Key: <event_id>`, as the contract says, over a
    pool of keep-alive connections. Each `send()` ends within `timeout` seconds of its start,
    whatever the platform does; safe to call from up to `pool_size` threads at once (more wait
    for a connection, within their own deadline)."""

    def __init__(
        self, *, url: str, timeout: float, pool_size: int = 32, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the platform URL must be an http:// or https:// URL with a host")
        try:
            parts.hostname.encode("idna")
        except UnicodeError as exc:
            raise ValueError(f"the platform URL's host is not a valid host name: {exc}") from None
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self._host = parts.hostname
        self._port = parts.port
        self._tls_context = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._authorization = None
        if parts.username is not None:
            # Credentials in the URL go out as Basic auth and nowhere else: no error or repr
            # shows more of the URL than scheme, host, port and path.
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        self._safe_url = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
        self._url_secrets = _url_secrets(url, authorization=self._authorization)
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<HttpExternalPlatformClient {self._safe_url} timeout={self.timeout:g}s pool_size={self.pool_size}>"

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        call = _Call(time.monotonic() + self.timeout)
        body = json.dumps(order, separators=(",", ":")).encode("utf-8")
        try:
            status, retry_after, text = self._post(call, body, idempotency_key)
        except _DeadlinePassed:
            raise TransientExportError(f"timeout after {self.timeout:g} s") from None
        if 200 <= status < 300 or status == 409:
            return
        # A platform may echo the request (its target, query string included) in an error page.
        detail = f"HTTP {status} from the platform: {self._redact(text.strip())[:200]}".strip().rstrip(":")
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientExportError(detail, retry_after=retry_after)
        raise PermanentExportError(detail)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their call ends."""
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _discard(conn)

    # --- one call ---------------------------------------------------------------------------

    def _post(self, call: _Call, body: bytes, key: str) -> tuple[int, float | None, str]:
        _deadlines.watch(call)
        try:
            if not self._slots.acquire(timeout=call.time_left()):
                raise _DeadlinePassed
            try:
                return self._post_on_a_connection(call, body, key)
            finally:
                self._slots.release()
        finally:
            call.finish()

    def _post_on_a_connection(self, call: _Call, body: bytes, key: str) -> tuple[int, float | None, str]:
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._new_connection()
            conn.call = call
            try:
                status, retry_after, text, keep = self._exchange(conn, call, body, key)
            except BaseException as exc:
                # Unwatched before it is closed: the deadline thread must never shut down a
                # descriptor that may already belong to another socket.
                call.unwatch()
                _discard(conn)
                if not isinstance(exc, (_DeadlinePassed, OSError, http.client.HTTPException)):
                    raise
                # Socket timeouts are set to the time left: one firing means the deadline.
                if call.expired or isinstance(exc, (_DeadlinePassed, TimeoutError)):
                    raise _DeadlinePassed from None
                # The platform may close an idle connection just as it is taken, and the
                # request then never reached it: once more on a new connection. Should it have
                # arrived after all, the Idempotency-Key makes the repeat harmless.
                if reused and isinstance(exc, _STALE_CONNECTION_ERRORS):
                    reused, conn = False, None
                    continue
                raise TransientExportError(self._connection_error(exc)) from None
            # Finished before the connection goes back to the pool, where another call may take
            # it; expired meanwhile, the socket may have been shut down under the last read.
            if call.finish():
                _discard(conn)
                raise _DeadlinePassed
            if keep:
                self._give_back(conn)
            else:
                _discard(conn)
            return status, retry_after, text

    def _exchange(
        self, conn: http.client.HTTPConnection, call: _Call, body: bytes, key: str
    ) -> tuple[int, float | None, str, bool]:
        if conn.sock is None:
            conn.connect()
        else:
            call.watch(conn.sock)
        conn.sock.settimeout(call.time_left())
        conn.putrequest("POST", self._target, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Idempotency-Key", key)
        conn.putheader("Content-Length", str(len(body)))
        if self._authorization:
            conn.putheader("Authorization", self._authorization)
        conn.endheaders(body)
        conn.sock.settimeout(call.time_left())
        response = conn.response = conn.getresponse()
        data = response.read(BODY_LIMIT + 1)
        # Reusable only when the whole answer was read and the platform keeps the connection.
        keep = len(data) <= BODY_LIMIT and response.isclosed() and not response.will_close
        retry_after = None
        if response.status in RETRY_AFTER_STATUSES:
            retry_after = _retry_after(response.getheader("Retry-After"))
        return response.status, retry_after, data[:BODY_LIMIT].decode("utf-8", "replace"), keep

    def _connection_error(self, exc: BaseException) -> str:
        # Errors name hosts at most, but a credential or a token in the URL must never reach a
        # log line whatever an error says.
        return f"connection error: {self._redact(str(exc) or type(exc).__name__)}"[:300]

    def _redact(self, text: str) -> str:
        """`text` without the URL's credentials and query string: error texts end up in the
        order's `export.last_error`, the DLT's `dlt.error` header and the logs."""
        for secret in self._url_secrets:
            text = text.replace(secret, "***")
        return text

    # --- the pool ---------------------------------------------------------------------------

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._tls_context is not None:
            return _TLSConnection(self._host, self._port, context=self._tls_context)
        return _Connection(self._host, self._port)

    def _take_idle(self) -> http.client.HTTPConnection | None:
        while True:
            with self._idle_lock:
                if not self._idle:
                    return None
                # Last in, first out: the most recently used connection is the likeliest to be
                # alive, and the ones at the bottom age out on the platform's side.
                conn = self._idle.pop()
            if conn.sock is not None and not _is_dropped(conn.sock):
                return conn
            _discard(conn)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        _discard(conn)


def _url_secrets(url: str, *, authorization: str | None) -> list[str]:
    """What of `url` no error text may show: its userinfo, its password (as written and
    decoded), its query string, and the Basic credentials made of them; longest first, so that
    no shorter secret breaks up a longer one before it is replaced."""
    parts = urlsplit(url)
    found = [parts.query, unquote(parts.query)]
    if "@" in parts.netloc:
        found.append(parts.netloc.rpartition("@")[0])
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    if authorization:
        found.append(authorization.removeprefix("Basic "))
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _discard(conn: http.client.HTTPConnection) -> None:
    conn.close()
    # An answer that said "Connection: close" took the socket over from the connection.
    response = getattr(conn, "response", None)
    if response is not None:
        conn.response = None
        response.close()


_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)

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
