"""An external platform on 127.0.0.1 that behaves like a real one: it keeps what it received,
deduplicates by Idempotency-Key (a repeat gets 409, as the contract allows), and can be told to
fail, to be slow, or to trickle its answers. Fault-injection tests count at it that every order
arrived once and none is missing.

HTTP/1.1 with keep-alive on one asyncio event loop: in a daemon thread for tests
(`PlatformServer`), or as a process of its own for benchmarks, where one event loop answers
thousands of calls a second with little CPU:

    python -m tests.support.platform_stub --port 0 --delay 0.02 --port-file /tmp/platform.port

serves until SIGTERM and answers `GET /_stats` with its counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import selectors
import signal
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

# Longer than any test waits, one byte per `trickle` seconds.
TRICKLE_BODY_LENGTH = 1_000_000
# A request head larger than this is refused: nothing the client sends comes near it.
MAX_HEAD = 64 * 1024
STATS_PATH = "/_stats"


@dataclass
class Call:
    order_id: int | None
    key: str | None
    status: int
    # When it was answered (time.monotonic(), this process's clock).
    at: float = field(default_factory=time.monotonic)


@dataclass
class Request:
    """A request as it arrived, header names in lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class _Release(threading.Event):
    """A threading.Event that also tells the event loop when it is set, so that calls waiting
    out `delay` are let go at once instead of each polling it."""

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def set(self) -> None:
        super().set()
        for listener in list(self._listeners):
            listener()


@dataclass
class PlatformStub:
    url: str = ""
    # Each call fails with 503 with this probability (seeded, so a run can be repeated).
    failure_rate: float = 0.0
    # While set, every call is answered with this status (e.g. 503: the platform is down), with
    # `down_body` and `down_headers` (e.g. a Location for a 3xx).
    down_status: int | None = None
    down_body: bytes = b""
    down_headers: dict[str, str] = field(default_factory=dict)
    # The Retry-After value sent with every 429 and 503.
    retry_after: str | None = None
    # Seconds every call takes before answering; calls wait concurrently.
    delay: float = 0.0
    # Set: the answer's body is sent one byte every `trickle` seconds, for longer than any
    # client waits.
    trickle: float | None = None
    seed: int = 20261124
    calls: list[Call] = field(default_factory=list)
    # key -> order id of each call that was taken (2xx), in arrival order
    accepted: dict[str, int] = field(default_factory=dict)
    # Every request as it arrived; off in the benchmark process, where it would only grow.
    requests: list[Request] = field(default_factory=list)
    keep_requests: bool = True
    # Set when a call arrives: lets a test act while a slow call is in flight.
    call_arrived: threading.Event = field(default_factory=threading.Event)
    # Set: calls waiting out `delay` (or trickling) end without an answer, their connection closed.
    release: _Release = field(default_factory=_Release)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Counters the event loop keeps; `in_flight` and `max_in_flight` change under `lock`, so a
    # test may reset `max_in_flight` under it too.
    connections: int = 0
    open_connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    duplicates: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def answer(self, order_id: int | None, key: str | None) -> int:
        with self.lock:
            if self.down_status is not None:
                status = self.down_status
            elif self.failure_rate and self._random.random() < self.failure_rate:
                status = 503
            elif key in self.accepted:
                status = 409
                self.duplicates += 1
            else:
                self.accepted[key] = order_id
                status = 201
            self.calls.append(Call(order_id, key, status))
            return status

    # --- what tests read --------------------------------------------------------------------

    def exported_order_ids(self) -> list[int]:
        """One entry per accepted Idempotency-Key: an order here twice was exported twice."""
        with self.lock:
            return list(self.accepted.values())

    def keys_by_order(self) -> dict[int, set[str]]:
        with self.lock:
            keys: dict[int, set[str]] = defaultdict(set)
            for call in self.calls:
                if call.order_id is not None and call.key is not None:
                    keys[call.order_id].add(call.key)
            return dict(keys)

    def call_count(self) -> int:
        with self.lock:
            return len(self.calls)

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "calls": len(self.calls),
                "accepted": len(self.accepted),
                "duplicates": self.duplicates,
                "connections": self.connections,
                "max_in_flight": self.max_in_flight,
            }


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


_STATUS_LINES: dict[int, bytes] = {}


class _PlatformProtocol(asyncio.Protocol):
    """One client connection: requests are answered one after the other, as HTTP/1.1 wants;
    bytes of the next request wait in the buffer meanwhile."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.stub = hub.stub
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        # A call is being answered: waiting out `delay`, or trickling.
        self.busy = False
        self.trickling = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stub.connections += 1
        self.stub.open_connections += 1
        self.hub.protocols.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stub.open_connections -= 1
        if self.trickling:
            self._cancel_timer()
        # A call still waiting out its delay is taken all the same when the delay is over: a
        # platform that got the whole request processes it, whether or not the client still
        # waits for the answer.
        if self.timer is None:
            self._done()

    # --- requests ---------------------------------------------------------------------------

    def _next_request(self) -> None:
        while not self.busy and not self.closed:
            buffer = self.buffer
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buffer) > MAX_HEAD:
                    self._reply_and_close(431)
                return
            lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._reply_and_close(400)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "transfer-encoding" in headers:
                self._reply_and_close(411)
                return
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                self._reply_and_close(400)
                return
            end = head_end + 4 + length
            if len(buffer) < end:
                return
            body = bytes(buffer[head_end + 4 : end])
            del buffer[:end]
            connection = headers.get("connection", "").lower()
            close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            self._request(method, target, headers, body, close)

    def _request(self, method: str, target: str, headers: dict[str, str], body: bytes, close: bool) -> None:
        stub = self.stub
        if method == "GET" and target == STATS_PATH:
            self._write(200, json.dumps(stub.stats()).encode(), {"Content-Type": "application/json"}, close)
            return
        if method != "POST":
            self._write(405, b"", {"Allow": "POST"}, close)
            return
        try:
            order_id = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            order_id = None
        key = headers.get("idempotency-key")
        if stub.keep_requests:
            with stub.lock:
                stub.requests.append(Request(method, target, headers, body))
        if not stub.call_arrived.is_set():
            stub.call_arrived.set()
        self.busy = True
        with stub.lock:
            stub.in_flight += 1
            if stub.in_flight > stub.max_in_flight:
                stub.max_in_flight = stub.in_flight
        if not stub.delay:
            self._answer(order_id, key, close)
        elif stub.release.is_set():
            self._abandon()
        else:
            self.timer = self.hub.loop.call_later(stub.delay, self._answer, order_id, key, close)

    def _answer(self, order_id: int | None, key: str | None, close: bool) -> None:
        self.timer = None
        stub = self.stub
        status = stub.answer(order_id, key)
        if self.closed:
            self._done()
            return
        body, headers = b"", {}
        if status == stub.down_status:
            body, headers = stub.down_body, dict(stub.down_headers)
        if stub.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = stub.retry_after
        if headers.get("Connection", "").lower() == "close":
            close = True
        if stub.trickle is not None:
            self._start_trickle(status, headers)
            return
        self._write(status, body, headers, close)
        self._done()
        if not close:
            self._next_request()

    def _done(self) -> None:
        self.trickling = False
        if self.busy:
            self.busy = False
            with self.stub.lock:
                self.stub.in_flight -= 1
        if self.closed:
            self.hub.protocols.discard(self)

    def _abandon(self) -> None:
        """End the call without an answer, as a platform that stopped would."""
        self._cancel_timer()
        self._done()
        if self.transport is not None:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # --- writing ----------------------------------------------------------------------------

    def _write(self, status: int, body: bytes, headers: dict[str, str], close: bool) -> None:
        status_line = _STATUS_LINES.get(status)
        if status_line is None:
            status_line = _STATUS_LINES[status] = _status_line(status)
        head = [status_line, b"Content-Length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if close:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + body)
        if close:
            self.closed = True
            self.transport.close()

    def _reply_and_close(self, status: int) -> None:
        self._write(status, b"", {}, close=True)

    def _start_trickle(self, status: int, headers: dict[str, str]) -> None:
        self.trickling = True
        head = [_status_line(status), f"Content-Length: {TRICKLE_BODY_LENGTH}\r\n".encode()]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        self.transport.write(b"".join(head) + b"\r\n")
        self._trickle_byte(TRICKLE_BODY_LENGTH)

    def _trickle_byte(self, left: int) -> None:
        self.timer = None
        if self.closed or left == 0:
            return
        self.transport.write(b"x")
        self.timer = self.hub.loop.call_later(self.stub.trickle, self._trickle_byte, left - 1)


class _Hub:
    """The state one event loop keeps for a stub: its connections and its listening server."""

    def __init__(self, stub: PlatformStub, loop: asyncio.AbstractEventLoop) -> None:
        self.stub = stub
        self.loop = loop
        self.protocols: set[_PlatformProtocol] = set()
        self.server: asyncio.base_events.Server | None = None
        stub.release.add_listener(self._release_soon)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await self.loop.create_server(
            lambda: _PlatformProtocol(self), host, port, backlog=1024, reuse_address=True, ssl=ssl_context
        )
        return self.server.sockets[0].getsockname()[1]

    def _release_soon(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._release)
        except RuntimeError:
            pass  # the loop is closed: nothing waits any more

    def _release(self) -> None:
        for protocol in list(self.protocols):
            if protocol.busy:
                protocol._abandon()

    async def drop_idle(self) -> None:
        for protocol in list(self.protocols):
            if not protocol.busy and not protocol.closed:
                protocol.transport.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.transport.abort()
        # Let the transports' connection_lost callbacks run before the loop stops.
        await asyncio.sleep(0)
        if self.server is not None:
            await self.server.wait_closed()


class PlatformServer:
    """Serves `stub` on 127.0.0.1 from an event loop in a daemon thread; sets `stub.url`
    (https when given an `ssl_context`)."""

    def __init__(
        self, stub: PlatformStub, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ):
        self.stub = stub
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="platform-stub", daemon=True)
        self.thread.start()
        self._hub = _Hub(stub, self.loop)
        started = self._hub.start(host, port, ssl_context)
        self.port = asyncio.run_coroutine_threadsafe(started, self.loop).result(timeout=10)
        scheme = "https" if ssl_context is not None else "http"
        stub.url = f"{scheme}://{host}:{self.port}/orders"

    def drop_idle_connections(self) -> None:
        """Close the connections not answering a call, as a platform's idle timeout would."""
        asyncio.run_coroutine_threadsafe(self._hub.drop_idle(), self.loop).result(timeout=5)

    def close(self) -> None:
        self.stub.release.set()
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._hub.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


# --- a process of its own ---------------------------------------------------------------------


async def _serve(stub: PlatformStub, host: str, port: int, port_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    hub = _Hub(stub, loop)
    port = await hub.start(host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if port_file:
        # Written whole, then renamed: a reader polling for the file never sees half a port.
        partial = f"{port_file}.partial"
        with open(partial, "w") as file:
            file.write(f"{port}\n")
        os.replace(partial, port_file)
    print(f"platform stub listening on http://{host}:{port}/orders", flush=True)
    await stop.wait()
    stub.release.set()
    await hub.stop()


class _PreciseEpollSelector(selectors.EpollSelector):
    """epoll_wait counts its timeout in whole milliseconds, rounded up, so a 20 ms delay would
    end up to a millisecond late: enough to cost a benchmark 5% of its calls. select() waits
    for the epoll descriptor itself to the microsecond; epoll then only collects."""

    def select(self, timeout: float | None = None):
        if timeout is not None and timeout > 0:
            select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.platform_stub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each call takes")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of calls answered 503")
    parser.add_argument("--port-file", help="write the port here once listening")
    args = parser.parse_args(argv)
    stub = PlatformStub(delay=args.delay, failure_rate=args.failure_rate, keep_requests=False)
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(_PreciseEpollSelector())) as runner:
        runner.run(_serve(stub, args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
