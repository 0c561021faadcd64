"""How fast the platform stub's benchmark process is: drives `python -m tests.platform_stub` with
HttpExternalPlatformClient from many threads for a few seconds, and prints the requests per
second and the stub's CPU seconds per 1,000 requests (read from /proc, so Linux only).

    .venv/bin/python -m tests.platform_stub_measure [--threads 64] [--delay 0.02] [--seconds 5]

`--driver raw` sends the same requests over plain keep-alive sockets instead: the client's own
Python work then no longer limits the rate, and what is left is the stub's.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/_stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_for_port(port_file: Path, stub: subprocess.Popen, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if stub.poll() is not None:
            raise SystemExit(f"the stub exited with {stub.returncode} before listening")
        if time.monotonic() > deadline:
            raise SystemExit("the stub did not write its port within 10 s")
        time.sleep(0.02)
    return int(port_file.read_text())


class RawClient:
    """Keep-alive HTTP/1.1 over one socket per thread, with no more parsing than finding the end
    of an answer that has no body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def send(self, *, order: dict, idempotency_key: str) -> None:
        sock = getattr(self.local, "sock", None)
        if sock is None:
            sock = self.local.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps(order, separators=(",", ":")).encode()
        sock.sendall(
            b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s" % (idempotency_key.encode(), len(body), body)
        )
        answer = b""
        while not answer.endswith(b"\r\n\r\n"):
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("the stub closed the connection")
            answer += data
        if not answer.startswith((b"HTTP/1.1 2", b"HTTP/1.1 409")):
            raise RuntimeError(answer.split(b"\r\n", 1)[0].decode())

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--driver", choices=("client", "raw"), default="client")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from exports.clients import HttpExternalPlatformClient

    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        stub = subprocess.Popen(
            [sys.executable, "-m", "tests.platform_stub", "--port", "0", "--delay", str(args.delay),
             "--port-file", str(port_file)],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        try:
            port = wait_for_port(port_file, stub)
            if args.driver == "raw":
                client = RawClient(port)
            else:
                client = HttpExternalPlatformClient(
                    url=f"http://127.0.0.1:{port}/orders", timeout=5.0, pool_size=args.threads
                )
            keys = itertools.count()
            stop = threading.Event()
            done = [0] * args.threads
            errors: list[BaseException] = []

            def drive(slot: int) -> None:
                while not stop.is_set():
                    n = next(keys)
                    try:
                        client.send(order={"id": n, "lines": [{"sku": "SKU-1", "quantity": 1}]}, idempotency_key=f"k-{n}")
                    except Exception as exc:  # noqa: BLE001 - counted and reported below
                        errors.append(exc)
                    done[slot] += 1

            threads = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(args.threads)]
            for thread in threads:
                thread.start()
            time.sleep(args.warmup)
            count_before, stub_cpu_before, own_cpu_before = sum(done), cpu_seconds(stub.pid), time.process_time()
            started = time.monotonic()
            time.sleep(args.seconds)
            count_after, stub_cpu_after, own_cpu_after = sum(done), cpu_seconds(stub.pid), time.process_time()
            elapsed = time.monotonic() - started
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            client.close()

            requests = count_after - count_before
            driver = "HttpExternalPlatformClient" if args.driver == "client" else "raw sockets"
            print(f"{driver}, {args.threads} threads, {args.delay * 1000:g} ms delay, {elapsed:.1f} s measured")
            ceiling = f"  (ceiling threads/delay: {args.threads / args.delay:,.0f})" if args.delay else ""
            print(f"  requests/s:                 {requests / elapsed:,.0f}{ceiling}")
            print(f"  stub CPU s per 1,000 req:   {(stub_cpu_after - stub_cpu_before) / requests * 1000:.3f}")
            print(f"  stub CPU use:               {(stub_cpu_after - stub_cpu_before) / elapsed:.0%} of a core")
            print(f"  driver CPU s per 1,000 req: {(own_cpu_after - own_cpu_before) / requests * 1000:.3f}")
            # The machine may be busy with more than this measurement: say how busy.
            print(f"  load average (1 min):       {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
            print(f"  errors:                     {len(errors)}" + (f" (first: {errors[0]!r})" if errors else ""))
            print(f"  stub /_stats:               {json.dumps(stats(port))}")
        finally:
            stub.terminate()
            stub.wait(timeout=10)


if __name__ == "__main__":
    main()
