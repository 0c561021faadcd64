"""The external platform's HTTP client, used when EXPORT_PLATFORM_URL is set: HTTP/1.1 of its own
on asyncio (an `asyncio.Protocol` per connection, answers parsed by httptools, llhttp's C
parser), on the running event loop with a pool of keep-alive connections per loop, a deadline
per call, Retry-After read, and no credential or query string of the URL in any error text.

It speaks only what the platform's contract needs: one POST of a JSON body, a status, a
Retry-After header and at most 64 KiB of body back (chunked or not); no redirect, cookie,
compression or proxy."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from exports.platform.client import AsyncExternalPlatformClient, PermanentExportError, TransientExportError
from exports.platform.connections import BODY_LIMIT, ConnectionPool
from kafka_bridge.tracing import http_client_span, http_client_span_end

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = {408, 429}
# Statuses whose Retry-After is read: "slow down" and "down for a while".
RETRY_AFTER_STATUSES = {429, 503}
RETRY_AFTER_MAX = 3600.0
# How long close() waits for another thread's loop to close a pool.
CLOSE_TIMEOUT = 5.0
_DELTA_SECONDS = re.compile(r"[0-9]+")
# The order as compact JSON: json.dumps(order, separators=...) would build this encoder anew
# on every call.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


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


class HttpExternalPlatformClient(AsyncExternalPlatformClient):
    """POSTs the order as JSON with `Idempotency-Key: <event_id>`, as the contract says, over a
    pool of at most `pool_size` keep-alive connections. Each `send_async()` ends within `timeout`
    seconds of its start, whatever the platform does. One client may serve several event loops
    (the consumer's, and the one `send()` runs its calls on): each loop gets a pool of its own,
    made by its first call, since a connection belongs to the loop it was opened on."""

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
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"the platform URL's host is not a valid host name: {exc}") from None
        port = parts.port
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self._host = host
        https = parts.scheme == "https"
        self._port = port or (443 if https else 80)
        self._ssl_context = (ssl_context or ssl.create_default_context()) if https else None
        authorization = None
        if parts.username is not None:
            # Credentials in the URL go out as Basic auth and nowhere else: no error or repr
            # shows more of the URL than scheme, host, port and path.
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
        # The request's head, but for its Idempotency-Key and Content-Length: path and query go
        # out as written, the credentials as the Authorization header only.
        netloc = f"[{host}]" if ":" in host else host
        if port is not None and port != (443 if https else 80):
            netloc += f":{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head_start = (
            f"POST {target} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\nIdempotency-Key: "
        ).encode()
        self._head_end = (f"Authorization: {authorization}\r\n\r\n" if authorization else "\r\n").encode("utf-8")
        self._safe_url = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
        self._url_secrets = _url_secrets(url, authorization=authorization)
        # Nothing bound to an event loop is made here: pools are made by the first call on
        # each loop, so that a client can be built (and its URL checked) outside any loop.
        self._pools: dict[asyncio.AbstractEventLoop, ConnectionPool] = {}
        self._pools_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HttpExternalPlatformClient {self._safe_url} timeout={self.timeout:g}s pool_size={self.pool_size}>"

    async def send_async(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        body = _encode_json(order).encode("utf-8")
        if not idempotency_key.isprintable():
            # A line break would end the header and start another one of the caller's choice.
            raise ValueError("the Idempotency-Key must be printable (no line break or control character)")
        # The CLIENT span of the call (when spans are made) and the trace context it passes on:
        # the record's, through its process span (kafka_bridge.tracing).
        span, trace_lines = http_client_span(
            method="POST", url=self._safe_url, host=self._host, port=self._port, idempotency_key=idempotency_key
        )
        # One write of the whole request: head and body in one piece.
        request = b"%s%s\r\nContent-Length: %d\r\n%s%s%s" % (
            self._head_start,
            idempotency_key.encode("utf-8"),
            len(body),
            trace_lines,
            self._head_end,
            body,
        )
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop) or self._new_pool(loop)
        try:
            # The deadline covers the whole call: the wait for a connection, connecting, the
            # retry below and reading the answer. On expiry the call is cancelled where it is
            # and its connection dropped.
            async with asyncio.timeout(self.timeout):
                status, retry_after_value, body = await pool.exchange(request)
        except TimeoutError:
            error = TransientExportError(f"timeout after {self.timeout:g} s")
            http_client_span_end(span, error=error)
            raise error from None
        except (OSError, httptools.HttpParserError) as exc:
            error = TransientExportError(self._connection_error(exc))
            http_client_span_end(span, error=error)
            raise error from None
        except BaseException as exc:  # cancelled: the span ends with the call
            http_client_span_end(span, error=exc)
            raise
        http_client_span_end(span, status=status)
        if 200 <= status < 300 or status == 409:
            return
        text = body[:BODY_LIMIT].decode("utf-8", "replace")
        # A platform may echo the request (its target, query string included) in an error page.
        detail = f"HTTP {status} from the platform: {self._redact(text.strip())[:200]}".strip().rstrip(":")
        if status in TRANSIENT_STATUSES or status >= 500:
            retry_after = None
            if status in RETRY_AFTER_STATUSES and retry_after_value is not None:
                retry_after = _retry_after(retry_after_value.decode("latin-1"))
            raise TransientExportError(detail, retry_after=retry_after)
        raise PermanentExportError(detail)

    async def aclose(self) -> None:
        """Close the running loop's pool (its connections); a later call opens a new one."""
        with self._pools_lock:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()

    def close(self) -> None:
        """Close every loop's pool, each on its own loop (calls still in flight on them end with
        a connection error); a later call opens a new one."""
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, pool in pools.items():
            # A closed loop took its transports with it: nothing is left to close.
            if loop.is_closed():
                continue
            try:
                if loop is current:
                    # Cannot wait for the loop this thread is running: closed once it runs on.
                    _closing.add(task := loop.create_task(pool.aclose()))
                    task.add_done_callback(_closing.discard)
                elif loop.is_running():
                    asyncio.run_coroutine_threadsafe(pool.aclose(), loop).result(CLOSE_TIMEOUT)
                else:
                    loop.run_until_complete(pool.aclose())
            except Exception as exc:  # the other pools are closed regardless
                logger.warning("closing the platform client's connections on %r: %s: %s", loop, type(exc).__name__, exc)

    # --- a pool per event loop ----------------------------------------------------------------

    def _new_pool(self, loop: asyncio.AbstractEventLoop) -> ConnectionPool:
        with self._pools_lock:
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = ConnectionPool(
                    loop, self._host, self._port, ssl_context=self._ssl_context, limit=self.pool_size
                )
        return pool

    # --- errors -------------------------------------------------------------------------------

    def _connection_error(self, exc: BaseException) -> str:
        # Errors name hosts at most, but a credential or a token in the URL must never reach a
        # log line whatever an error says.
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"connection error: {self._redact(text)}"[:300]

    def _redact(self, text: str) -> str:
        """`text` without the URL's credentials and query string: error texts end up in the
        order's `export.last_error`, the DLT's `dlt.error` header and the logs."""
        for secret in self._url_secrets:
            text = text.replace(secret, "***")
        return text


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


# Pools closing on the loop of the thread that called close(): kept until closed, since the loop
# holds its tasks only weakly.
_closing: set[asyncio.Task] = set()
