"""The external platform's HTTP client, used when EXPORT_PLATFORM_URL is set: aiohttp on the
running event loop (one session, and its pool of keep-alive connections, per loop), a deadline
per call, Retry-After read, and no credential or query string of the URL in any error text."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import re
import ssl
import threading
import weakref
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from exports.platform.client import AsyncExternalPlatformClient, PermanentExportError, TransientExportError

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = {408, 429}
# Statuses whose Retry-After is read: "slow down" and "down for a while".
RETRY_AFTER_STATUSES = {429, 503}
RETRY_AFTER_MAX = 3600.0
# How long close() waits for another thread's loop to close a session.
CLOSE_TIMEOUT = 5.0
# Enough of an error body for the message; a platform answering megabytes is not read further
# (and its connection is dropped, since the rest of the body may still be on the wire).
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


class HttpExternalPlatformClient(AsyncExternalPlatformClient):
    """POSTs the order as JSON with `Idempotency-Key: <event_id>`, as the contract says, over a
    pool of at most `pool_size` keep-alive connections. Each `send_async()` ends within `timeout`
    seconds of its start, whatever the platform does. One client may serve several event loops
    (the consumer's, and the one `send()` runs its calls on): each loop gets a session of its
    own, made by its first call, since aiohttp's connections belong to the loop they were
    opened on."""

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
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else True
        # Path and query go out as written (encoded=True: yarl would otherwise re-quote them);
        # the credentials are left out of the URL and sent as the header below.
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        self._request_url = URL(parts._replace(netloc=netloc, fragment="").geturl(), encoded=True)
        self._headers = {"Content-Type": "application/json"}
        authorization = None
        if parts.username is not None:
            # Credentials in the URL go out as Basic auth and nowhere else: no error or repr
            # shows more of the URL than scheme, host, port and path.
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
            self._headers["Authorization"] = authorization
        self._safe_url = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
        self._url_secrets = _url_secrets(url, authorization=authorization)
        # Nothing bound to an event loop is made here: sessions are made by the first call on
        # each loop, so that a client can be built (and its URL checked) outside any loop.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HttpExternalPlatformClient {self._safe_url} timeout={self.timeout:g}s pool_size={self.pool_size}>"

    async def send_async(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        body = json.dumps(order, separators=(",", ":")).encode("utf-8")
        try:
            # The deadline covers the whole call: the wait for a connection, connecting, the
            # retry below and reading the answer. On expiry the call is cancelled where it is
            # and aiohttp closes its connection instead of pooling it.
            async with asyncio.timeout(self.timeout):
                status, retry_after, text = await self._post(body, idempotency_key)
        except TimeoutError:
            raise TransientExportError(f"timeout after {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientExportError(self._connection_error(exc)) from None
        if 200 <= status < 300 or status == 409:
            return
        # A platform may echo the request (its target, query string included) in an error page.
        detail = f"HTTP {status} from the platform: {self._redact(text.strip())[:200]}".strip().rstrip(":")
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientExportError(detail, retry_after=retry_after)
        raise PermanentExportError(detail)

    async def aclose(self) -> None:
        """Close the running loop's session (its connections); a later call opens a new one."""
        with self._sessions_lock:
            session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def close(self) -> None:
        """Close every loop's session, each on its own loop (calls still in flight on them end
        with a connection error); a later call opens a new one."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, {}
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, session in sessions.items():
            # A closed loop took its transports with it: nothing is left to close.
            if loop.is_closed():
                continue
            try:
                if loop is current:
                    # Cannot wait for the loop this thread is running: closed once it runs on.
                    _closing.add(task := loop.create_task(session.close()))
                    task.add_done_callback(_closing.discard)
                elif loop.is_running():
                    asyncio.run_coroutine_threadsafe(session.close(), loop).result(CLOSE_TIMEOUT)
                else:
                    loop.run_until_complete(session.close())
            except Exception as exc:  # the other sessions are closed regardless
                logger.warning("closing the platform client's session on %r: %s: %s", loop, type(exc).__name__, exc)

    # --- a session per event loop -----------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            with self._sessions_lock:
                session = self._sessions.get(loop)
                if session is None:
                    session = self._sessions[loop] = self._new_session()
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=_Connector(limit=self.pool_size, limit_per_host=self.pool_size, ssl=self._ssl),
            # No timeout of aiohttp's own: the call's deadline is the asyncio.timeout around it.
            timeout=aiohttp.ClientTimeout(),
            # The request's headers are ours alone, as before: no Accept, Accept-Encoding
            # (the body is read as the platform sends it) or User-Agent, and no cookies kept.
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            response_class=_Response,
        )

    # --- one call ---------------------------------------------------------------------------

    async def _post(self, body: bytes, key: str) -> tuple[int, float | None, str]:
        session = self._session()
        headers = {**self._headers, "Idempotency-Key": key}
        retried = False
        while True:
            _reused.set(False)
            try:
                response = await session.post(self._request_url, data=body, headers=headers, allow_redirects=False)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError, aiohttp.ClientOSError) as exc:
                # The platform may close an idle connection just as it is taken, and the request
                # then never reached it: once more, on a connection that is still open. Should it
                # have arrived after all, the Idempotency-Key makes the repeat harmless.
                if _reused.get() and not retried and _is_stale(exc):
                    retried = True
                    continue
                raise
            try:
                data = await _read_at_most(response, BODY_LIMIT + 1)
            except BaseException:
                response.close()
                raise
            # A longer answer costs its connection (the rest may still be on the wire); a shorter
            # one's goes back to the pool, unless the answer said "Connection: close".
            if len(data) > BODY_LIMIT:
                response.close()
            else:
                response.release()
            retry_after = None
            if response.status in RETRY_AFTER_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
            return response.status, retry_after, data[:BODY_LIMIT].decode("utf-8", "replace")

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


# Whether the call's connection came from the pool, as the connector tells the call that awaits
# it: only such a connection can have been closed by the platform before the request reached it.
_reused: ContextVar[bool] = ContextVar("reused", default=False)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, telling each call whether its connection is one used before
    (`_reused`). Cheaper than aiohttp's tracing, which costs every call a dozen signals."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._used: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        _reused.set(protocol in self._used)
        self._used.add(protocol)
        return connection


class _Response(aiohttp.ClientResponse):
    """aiohttp hands a connection back to the pool as soon as the whole answer has arrived, read
    or not, where another call may take it at once: the client hands it back itself once it
    has read the answer (`release`), or closes it (`close`), so that whether a long answer costs
    its connection does not depend on how fast it arrived."""

    def _response_eof(self) -> None:
        pass


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body up to `limit` bytes: all of it, or `limit` bytes and the rest unread."""
    chunks: list[bytes] = []
    left = limit
    while left > 0 and (chunk := await response.content.read(left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _is_stale(exc: BaseException) -> bool:
    """The error a reused connection that the platform closed gives before any answer."""
    if isinstance(exc, aiohttp.ClientOSError):
        return exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
    return True


# Sessions closing on the loop of the thread that called close(): kept until closed, since the
# loop holds its tasks only weakly.
_closing: set[asyncio.Task] = set()
