"""The HTTP client's sockets and connections, bound by each call's deadline: `HttpCall` (one
`send()` and the socket it is busy with), `deadline_watcher` (the thread that shuts a call's
socket down at its deadline), the connection classes that connect and write within it
(`DeadlineConnection`, `DeadlineTLSConnection`), `DeadlinePassed` (how a call learns its time is
up), and `socket_is_dropped` (is an idle keep-alive socket still usable). The client,
`exports.platform.http`, uses these names and nothing else of this module."""

from __future__ import annotations

import heapq
import http.client
import itertools
import os
import select
import socket
import threading
import time


class DeadlinePassed(Exception):
    """The call's deadline passed; it ends as a timeout whatever it was doing."""


class HttpCall:
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
            raise DeadlinePassed
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                raise DeadlinePassed
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
        self._heap: list[tuple[float, int, HttpCall]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, call: HttpCall) -> None:
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


# The process's one watcher: every call is handed to it (`watch`) when it starts.
deadline_watcher = _DeadlineWatcher()


def _open_socket(host: str, port: int, call: HttpCall) -> socket.socket:
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
                raise DeadlinePassed from exc
            error = exc
        except BaseException:
            call.unwatch()
            sock.close()
            raise
    raise error or OSError(f"no address found for {host}")


def _connect_within_deadline(connection: http.client.HTTPConnection, call: HttpCall) -> socket.socket:
    """The connection's socket, connected within the call's deadline."""
    sock = _open_socket(connection.host, connection.port, call)
    # Requests are written in one piece and answers awaited: Nagle would only delay them.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request_in_one_piece(buffer: list[bytes], message_body: bytes | None) -> bytes:
    # http.client writes the headers and the body separately; one write means the deadline
    # check just before it covers every byte of the request, and one segment per request.
    buffer.extend((b"", message_body or b""))
    data = b"\r\n".join(buffer)
    del buffer[:]
    return data


class DeadlineConnection(http.client.HTTPConnection):
    """A plain HTTP connection that connects and writes within its `call`'s deadline (`call` is
    set by the client for each use), the request in one piece."""

    call: HttpCall | None = None
    # The last answer read on this connection.
    response: http.client.HTTPResponse | None = None

    def connect(self) -> None:
        self.sock = _connect_within_deadline(self, self.call)

    def _send_output(self, message_body=None, encode_chunked=False) -> None:
        data = _request_in_one_piece(self._buffer, message_body)
        self.call.time_left()
        self.send(data)


class DeadlineTLSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that connects, shakes hands and writes within its `call`'s deadline,
    the request in one piece."""

    call: HttpCall | None = None
    # The last answer read on this connection.
    response: http.client.HTTPResponse | None = None

    def connect(self) -> None:
        self.sock = _connect_within_deadline(self, self.call)
        # The handshake after wrapping, so the deadline thread can end a stalled one too.
        sock = self._context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock = sock
        self.call.watch(sock)
        sock.settimeout(self.call.time_left())
        sock.do_handshake()

    def _send_output(self, message_body=None, encode_chunked=False) -> None:
        data = _request_in_one_piece(self._buffer, message_body)
        self.call.time_left()
        self.send(data)


def socket_is_dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed by the platform (or holds bytes
    nobody asked for): either way it cannot carry the next request."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
