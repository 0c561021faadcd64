"""The platform stub speaks HTTP/1.1 the way the fault tests and benchmarks rely on: keep-alive,
"Connection: close" honoured, a call taken even when its client left during the delay, and a
process of its own that reports its counters and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from config.env import BASE_DIR
from tests.support.helpers import wait_until
from tests.support.platform_stub import PlatformServer, PlatformStub


@pytest.fixture
def stub() -> Iterator[PlatformStub]:
    server = PlatformServer(PlatformStub())
    yield server.stub
    server.close()


def post(key: str, order_id: int = 1, *, extra: str = "") -> bytes:
    body = json.dumps({"id": order_id}).encode()
    head = f"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def connect(url: str) -> socket.socket:
    host, port = url.split("//")[1].split("/")[0].split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_requests_sent_together_on_one_connection_are_answered_in_order(stub):
    with connect(stub.url) as sock:
        sock.sendall(post("a") + post("a") + post("b", extra="Connection: close\r\n"))
        answers = read_until_closed(sock)

    status_lines = [line for line in answers.split(b"\r\n") if line.startswith(b"HTTP/1.1")]
    assert status_lines == [b"HTTP/1.1 201 Created", b"HTTP/1.1 409 Conflict", b"HTTP/1.1 201 Created"]
    assert answers.endswith(b"Connection: close\r\n\r\n")
    assert stub.connections == 1
    assert stub.duplicates == 1


def test_a_call_whose_client_left_during_the_delay_is_taken_all_the_same(stub):
    stub.delay = 0.3
    with connect(stub.url) as sock:
        sock.sendall(post("gone", order_id=7))
        wait_until(stub.call_arrived.is_set, timeout=5)

    wait_until(lambda: stub.exported_order_ids() == [7], timeout=5, message="the call was not taken")
    assert stub.in_flight == 0


def test_a_released_call_ends_without_an_answer_and_is_not_taken(stub):
    stub.delay = 30
    with connect(stub.url) as sock:
        sock.sendall(post("held"))
        wait_until(lambda: stub.in_flight == 1, timeout=5)
        stub.release.set()

        assert read_until_closed(sock) == b""
    assert stub.call_count() == 0
    assert stub.in_flight == 0


def test_retry_after_goes_with_429_and_503_only(stub):
    stub.retry_after = "5"
    answers = {}
    for status in (429, 503, 500):
        stub.down_status = status
        with connect(stub.url) as sock:
            sock.sendall(post(str(status), extra="Connection: close\r\n"))
            answers[status] = read_until_closed(sock)

    assert b"\r\nRetry-After: 5\r\n" in answers[429]
    assert b"\r\nRetry-After: 5\r\n" in answers[503]
    assert b"Retry-After" not in answers[500]


def test_the_process_writes_its_port_counts_and_stops_on_sigterm(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.platform_stub", "--port", "0", "--port-file", str(port_file)],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(port_file.exists, timeout=20, message="the stub wrote no port file")
        url = f"http://127.0.0.1:{int(port_file.read_text())}/orders"
        with connect(url) as sock:
            sock.sendall(post("a") + post("a") + b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answers = read_until_closed(sock)

        stats = json.loads(answers.rpartition(b"\r\n\r\n")[2])
        assert stats == {"calls": 2, "accepted": 1, "duplicates": 1, "connections": 1, "max_in_flight": 1}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
