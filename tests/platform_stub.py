"""An external platform on 127.0.0.1 that behaves like a real one: it keeps what it received,
deduplicates by Idempotency-Key (a repeat gets 409, as the contract allows), and can be told to
fail. Fault-injection tests count at it that every order arrived once and none is missing."""
from __future__ import annotations

import json
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    order_id: int | None
    key: str | None
    status: int


@dataclass
class PlatformStub:
    url: str = ""
    # Each call fails with 503 with this probability (seeded, so a run can be repeated).
    failure_rate: float = 0.0
    # While set, every call fails with this status (e.g. 503: the platform is down).
    down_status: int | None = None
    # Seconds every call takes before answering.
    delay: float = 0.0
    seed: int = 20261124
    calls: list[Call] = field(default_factory=list)
    # key -> order id of each call that was taken (2xx), in arrival order
    accepted: dict[str, int] = field(default_factory=dict)
    # Set when a call arrives: lets a test act while a slow call is in flight.
    call_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

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


def _handler(stub: PlatformStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                order_id = json.loads(body)["id"]
            except (ValueError, KeyError, TypeError):
                order_id = None
            stub.call_arrived.set()
            if stub.delay and stub.release.wait(stub.delay):
                return
            status = stub.answer(order_id, self.headers.get("Idempotency-Key"))
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format, *args):  # noqa: A002
            pass

    return Handler


class PlatformServer:
    def __init__(self, stub: PlatformStub):
        self.stub = stub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
        host, port = self.server.server_address[:2]
        stub.url = f"http://{host}:{port}/orders"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="platform-stub", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stub.release.set()
        self.server.shutdown()
        self.server.server_close()
