"""A small closed-loop HTTP load generator: `concurrency` keep-alive connections, each sending
the next confirm as soon as the previous one answered, a fixed number of requests in all.

Bounded in count and in time, and only ever aimed at the gunicorn the benchmark started on
127.0.0.1.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Sequence

from bench.stats import latency_summary


def confirm_load(*, port: int, token: str, order_ids: Sequence[int], concurrency: int, timeout: float = 300.0) -> dict:
    """POST /api/orders/<id>/confirm/ once per id; returns the rate, statuses and latencies."""
    ids = list(order_ids)
    lock = threading.Lock()
    position = 0
    statuses: Counter = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Token {token}", "Content-Length": "0", "Connection": "keep-alive"}

    def next_id() -> int | None:
        nonlocal position
        with lock:
            if position >= len(ids) or time.monotonic() > deadline:
                return None
            position += 1
            return ids[position - 1]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (order_id := next_id()) is not None:
            started = time.perf_counter()
            try:
                connection.request("POST", f"/api/orders/{order_id}/confirm/", headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                latencies.append(elapsed)
        connection.close()

    threads = [threading.Thread(target=client, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": elapsed,
        "rate": ok / elapsed if elapsed else None,
        **latency_summary(latencies),
    }


def wait_listening(port: int, *, timeout: float, alive=lambda: True) -> None:
    """Until anything answers HTTP on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/health/")
            connection.getresponse().read()
            connection.close()
            return
        except (OSError, http.client.HTTPException):
            if not alive():
                raise RuntimeError("the server exited before it answered") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered on 127.0.0.1:{port} within {timeout:g} s") from None
            time.sleep(0.2)
