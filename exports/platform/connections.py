"""The HTTP client's connections to the platform (`exports.platform.http`): a pool per event loop
(`ConnectionPool`) of keep-alive connections, each an `asyncio.Protocol` whose answers httptools
(llhttp's C parser) reads (`HttpConnection`), and the errors they end a call with."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import httptools

# Enough of an error body for the message; a platform answering megabytes is not read further
# (and its connection is dropped, since the rest of the body may still be on the wire).
BODY_LIMIT = 64 * 1024


class ServerDisconnectedError(ConnectionError):
    """The platform closed the connection before the end of its answer."""


class ClientClosedError(ConnectionError):
    """The client was closed (`close`, `aclose`) while the call waited for its answer."""


# What a connection that the platform closed while it was idle gives when it is used: the
# request did not reach the platform, and one more try on a new connection is safe.
STALE_ERRORS = (ServerDisconnectedError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class ConnectionPool:
    """At most `limit` connections to the platform on one event loop: idle ones reused last in,
    first out (the most recently used is the likeliest to be still open); when all are busy,
    callers wait first come, first served, each handed the next connection to come free (or
    the room to open one)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int,
    ) -> None:
        self.loop = loop
        self.host, self.port, self.ssl_context, self.limit = host, port, ssl_context, limit
        self.idle: list[HttpConnection] = []
        # Every connection open or being opened counts, idle or busy: at most `limit`.
        self.count = 0
        self.connections: set[HttpConnection] = set()
        # Callers waiting for a connection: each future's result is a connection to use, or None
        # for the room to open one.
        self.waiters: deque[asyncio.Future[HttpConnection | None]] = deque()
        self.closed = False

    async def exchange(self, request: bytes) -> tuple[int, bytes | None, bytes]:
        """Writes `request` on a connection and reads the answer: status, the Retry-After
        header's raw value (or None) and the body (at most BODY_LIMIT + 1 bytes)."""
        retried = False
        while True:
            connection = await self.acquire()
            reused = connection.used
            try:
                await connection.start(request)
            except BaseException as exc:
                self.drop(connection)
                # The platform may close an idle connection just as it is taken, and the request
                # then never reached it: once more, on a new connection. Should it have arrived
                # after all, the Idempotency-Key makes the repeat harmless.
                if reused and not retried and not connection.answered and isinstance(exc, STALE_ERRORS):
                    retried = True
                    continue
                raise
            answer = connection.status, connection.retry_after, connection.body()
            # A longer answer costs its connection (the rest may still be on the wire); a shorter
            # one's goes back to the pool, unless the answer said "Connection: close".
            if connection.reusable():
                self.release(connection)
            else:
                self.drop(connection)
            return answer

    async def acquire(self) -> HttpConnection:
        if self.closed:
            raise ClientClosedError("the client was closed")
        if self.idle:
            connection = self.idle.pop()
            if not connection.lost:
                return connection
            # The platform closed it while it was idle: its room is this call's, to open another.
            self.connections.discard(connection)
        elif self.count < self.limit:
            self.count += 1
        else:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                connection = await waiter
            except BaseException:
                # Cancelled (the deadline) just as a connection or room was handed to it: handed
                # on to the next caller.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    if (handed := waiter.result()) is None:
                        self._free_room()
                    else:
                        self.release(handed)
                raise
            if connection is not None:
                if not connection.lost:
                    return connection
                self.connections.discard(connection)
        try:
            connection = await self._connect()
        except BaseException:
            self._free_room()
            raise
        if self.closed:
            connection.fail(ClientClosedError("the client was closed"))
            raise ClientClosedError("the client was closed")
        self.connections.add(connection)
        return connection

    async def _connect(self) -> HttpConnection:
        ssl_context = self.ssl_context
        _, connection = await self.loop.create_connection(
            lambda: HttpConnection(self.loop),
            self.host,
            self.port,
            ssl=ssl_context,
            server_hostname=self.host if ssl_context is not None else None,
        )
        return connection

    def release(self, connection: HttpConnection) -> None:
        """`connection` is free and reusable: to the first waiting caller, or the idle ones."""
        connection.idle()
        if self.closed:
            self.drop(connection)
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    def drop(self, connection: HttpConnection) -> None:
        """Closes `connection` (unread bytes and all) and frees its room in the pool."""
        connection.transport.abort()
        if connection in self.connections:
            self.connections.discard(connection)
            self._free_room()

    def _free_room(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.count -= 1

    async def aclose(self) -> None:
        """Closes every connection; calls waiting for one or for an answer end with
        ClientClosedError, later ones too."""
        self.closed = True
        error = ClientClosedError("the client was closed")
        while self.waiters:
            if not (waiter := self.waiters.popleft()).done():
                waiter.set_exception(error)
        connections, self.connections, self.idle = self.connections, set(), []
        for connection in connections:
            connection.fail(error)
        # connection_lost runs on a later turn of the loop (over TLS, two): the sockets are
        # closed when this returns.
        for _ in range(10):
            if all(connection.lost for connection in connections):
                break
            await asyncio.sleep(0)


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection to the platform, carrying one exchange at a time: `start`
    writes a request, and the answer is parsed by httptools as it arrives."""

    __slots__ = (
        "create_future", "transport", "parser", "waiter", "used", "lost", "status", "retry_after",
        "chunks", "size", "answered", "head_read", "complete", "framed", "keep_alive",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.create_future = loop.create_future
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)
        # The waiting call's future while an exchange is under way, None while idle.
        self.waiter: asyncio.Future[None] | None = None
        # Whether it carried an exchange before this one (so may have been closed while idle).
        self.used = False
        # connection_lost was called: never used again.
        self.lost = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.retry_after: bytes | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        # Whether any byte of the answer arrived, its head was read, the message ended.
        self.answered = False
        self.head_read = False
        self.complete = False
        # Content-Length or Transfer-Encoding: without either, the body ends with the connection.
        self.framed = False
        self.keep_alive = False

    # --- the exchange -------------------------------------------------------------------------

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Writes `request`; the future's result is set once the answer is in."""
        if self.lost:
            raise ServerDisconnectedError("the platform closed the connection")
        self.waiter = waiter = self.create_future()
        self.transport.write(request)
        return waiter

    def body(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def reusable(self) -> bool:
        return self.keep_alive and self.complete and not self.lost and self.size <= BODY_LIMIT

    def idle(self) -> None:
        self.waiter = None
        self.used = True
        self._reset()

    def fail(self, error: BaseException) -> None:
        """Ends the exchange under way, if any, with `error`, and closes the connection."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.transport.abort()

    # --- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes no request asked for (or past the answer): the connection cannot carry
            # another exchange.
            self.keep_alive = False
            if waiter is None:
                self.lost = True
                self.transport.abort()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A 101 (or CONNECT) answer: what follows is no HTTP, and the connection is spent.
            self.complete, self.keep_alive = True, False
        except httptools.HttpParserError as exc:
            if not self.complete and self.size <= BODY_LIMIT:
                waiter.set_exception(exc)
                self.transport.abort()
                return
            self.keep_alive = False
        if self.complete or self.size > BODY_LIMIT:
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self.head_read and not self.framed:
            # An answer with neither Content-Length nor Transfer-Encoding ends with the connection.
            self.complete = True
            waiter.set_result(None)
        elif exc is None:
            middle = " in the middle of its answer" if self.answered else " before answering"
            waiter.set_exception(ServerDisconnectedError("the platform closed the connection" + middle))
        else:
            waiter.set_exception(exc)

    # --- httptools' callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only Retry-After is read; Content-Length and Transfer-Encoding say how the body ends.
        size = len(name)
        if size == 11:
            if self.retry_after is None and name.lower() == b"retry-after":
                self.retry_after = value
        elif size == 14 or size == 17:
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_read = True

    def on_body(self, body: bytes) -> None:
        if self.size <= BODY_LIMIT:
            self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An interim answer (103 Early Hints, say): the final one follows.
            self.retry_after, self.framed, self.head_read = None, False, False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
