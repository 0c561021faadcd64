"""The external platform's HTTP client, used when EXPORT_PLATFORM_URL is set: a pool of
keep-alive connections, a deadline per call (exports.platform.deadlines), Retry-After read, and
no credential or query string of the URL in any error text."""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from exports.platform.client import ExternalPlatformClient, PermanentExportError, TransientExportError
from exports.platform.deadlines import (
    DeadlineConnection,
    DeadlinePassed,
    DeadlineTLSConnection,
    HttpCall,
    deadline_watcher,
    socket_is_dropped,
)

TRANSIENT_STATUSES = {408, 429}
# Statuses whose Retry-After is read: "slow down" and "down for a while".
RETRY_AFTER_STATUSES = {429, 503}
RETRY_AFTER_MAX = 3600.0
# Enough of an error body for the message; a platform answering megabytes is not read further
# (and its connection is dropped, since the rest of the body is still on the wire).
BODY_LIMIT = 64 * 1024
_DELTA_SECONDS = re.compile(r"[0-9]+")


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
        call = HttpCall(time.monotonic() + self.timeout)
        body = json.dumps(order, separators=(",", ":")).encode("utf-8")
        try:
            status, retry_after, text = self._post(call, body, idempotency_key)
        except DeadlinePassed:
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

    def _post(self, call: HttpCall, body: bytes, key: str) -> tuple[int, float | None, str]:
        deadline_watcher.watch(call)
        try:
            if not self._slots.acquire(timeout=call.time_left()):
                raise DeadlinePassed
            try:
                return self._post_on_a_connection(call, body, key)
            finally:
                self._slots.release()
        finally:
            call.finish()

    def _post_on_a_connection(self, call: HttpCall, body: bytes, key: str) -> tuple[int, float | None, str]:
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
                if not isinstance(exc, (DeadlinePassed, OSError, http.client.HTTPException)):
                    raise
                # Socket timeouts are set to the time left: one firing means the deadline.
                if call.expired or isinstance(exc, (DeadlinePassed, TimeoutError)):
                    raise DeadlinePassed from None
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
                raise DeadlinePassed
            if keep:
                self._give_back(conn)
            else:
                _discard(conn)
            return status, retry_after, text

    def _exchange(
        self, conn: http.client.HTTPConnection, call: HttpCall, body: bytes, key: str
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
            return DeadlineTLSConnection(self._host, self._port, context=self._tls_context)
        return DeadlineConnection(self._host, self._port)

    def _take_idle(self) -> http.client.HTTPConnection | None:
        while True:
            with self._idle_lock:
                if not self._idle:
                    return None
                # Last in, first out: the most recently used connection is the likeliest to be
                # alive, and the ones at the bottom age out on the platform's side.
                conn = self._idle.pop()
            if conn.sock is not None and not socket_is_dropped(conn.sock):
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
