"""HTTP clients for many calls in flight: calls/s and CPU per call of each candidate against the
platform stub (tests/support/platform_stub.py, a process of its own with a fixed delay).

Each run keeps N calls in flight, one unique Idempotency-Key per call (a repeat would be a 409),
a JSON order of ~500 bytes each, keep-alive, a hard deadline per call. The thread-based client
(urllib3) is driven as the consumer drives its worker threads (kafka_bridge/consumer/dispatch.py):
a ThreadPoolExecutor of N, each future's done-callback puts it on a queue the driving thread reads.
The asyncio clients, the project's own among them, run on one event loop thread: N coroutines
inside the loop (`loop`), every call handed in from the driving thread with
run_coroutine_threadsafe and its result back through the same queue (`handoff`), or the calls
handed in and their results back in batches (`batch`). CPU is the whole client process's
user+sys (os.times()) over the run.

    .venv/bin/python -m bench.http_clients                     # every candidate, both scenarios, 2 repeats
    .venv/bin/python -m bench.http_clients --candidates aiohttp,project --scenarios 512x100
    .venv/bin/python -m bench.http_clients --check-deadlines   # does each call end at its deadline?
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

MOMENT = "2026-12-06T12:00:00.123456Z"
LINES = [{"sku": f"SKU-{n}00{n}", "quantity": n, "unit_price": "12.50"} for n in (1, 2, 3)]
_RUN = uuid.uuid4().hex
_counter = itertools.count()  # its next() is atomic under the GIL, so threads may share it


def new_key() -> str:
    """A unique Idempotency-Key: the stub answers a repeated one with 409."""
    return f"{_RUN}-{next(_counter)}"


def order(order_id: int) -> dict:
    """An order of ~500 bytes of JSON."""
    return {
        "id": order_id,
        "customer_id": f"bench-customer-{order_id}",
        "status": "confirmed",
        "total_amount": "62.50",
        "lines": LINES,
        "shipping_address": {"name": "Bench Customer", "street": "1 Benchmark Road", "city": "Testville"},
        "notes": "x" * 60,
        "created_at": MOMENT,
        "confirmed_at": MOMENT,
    }


def order_body(order_id: int) -> bytes:
    """The order as the platform receives it: compact JSON, serialised on each call by every
    candidate (the project's client does it in send_async())."""
    return json.dumps(order(order_id), separators=(",", ":")).encode()


# --- the candidates -------------------------------------------------------------------------------
# Each has open(url, n, deadline) and call(order_id) -> status (a coroutine for the asyncio ones).


class ProjectClient:
    """exports.platform.http.HttpExternalPlatformClient(pool_size=N), its send_async awaited on
    the loop (its own HTTP/1.1 on an asyncio.Protocol and httptools, with the project's deadline,
    retry and error handling)."""

    is_async = True

    async def open(self, url: str, n: int, deadline: float) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
        import django

        django.setup()
        from exports.platform.http import HttpExternalPlatformClient

        self.client = HttpExternalPlatformClient(url=url, timeout=deadline, pool_size=n)

    async def call(self, order_id: int) -> int:
        # send_async serialises the order itself; a 409 would pass as success (the stub counts those).
        await self.client.send_async(order=order(order_id), idempotency_key=new_key())
        return 201

    async def close(self) -> None:
        await self.client.aclose()


class Urllib3Client:
    """urllib3.HTTPConnectionPool(maxsize=N, block=True), Timeout(total=deadline)."""

    is_async = False

    def open(self, url: str, n: int, deadline: float) -> None:
        import urllib3

        self.pool = urllib3.connection_from_url(url, maxsize=n, block=True, retries=False)
        self.timeout = urllib3.Timeout(total=deadline)
        self.path = urllib.parse.urlsplit(url).path

    def call(self, order_id: int) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        response = self.pool.urlopen(
            "POST", self.path, body=order_body(order_id), headers=headers, timeout=self.timeout, preload_content=True
        )
        return response.status

    def close(self) -> None:
        self.pool.close()


class AiohttpClient:
    """aiohttp.ClientSession, TCPConnector(limit=N), ClientTimeout(total=deadline) per call."""

    is_async = True

    async def open(self, url: str, n: int, deadline: float) -> None:
        import aiohttp

        self.url = url
        connector = aiohttp.TCPConnector(limit=n, limit_per_host=n)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=deadline))

    async def call(self, order_id: int) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        async with self.session.post(self.url, data=order_body(order_id), headers=headers) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.session.close()


class HttpxClient:
    """httpx.AsyncClient, Limits(max_connections=N); its timeouts bound each read and write, so the
    call's deadline is asyncio.timeout() around it."""

    is_async = True

    async def open(self, url: str, n: int, deadline: float) -> None:
        import httpx

        # httpx logs every request at INFO: with the project's logging set up (the `project`
        # candidates call django.setup()), that line would be most of what is measured.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.url, self.deadline = url, deadline
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(deadline))

    async def call(self, order_id: int) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        async with asyncio.timeout(self.deadline):
            response = await self.client.post(self.url, content=order_body(order_id), headers=headers)
        return response.status_code

    async def close(self) -> None:
        await self.client.aclose()


class HttpxNoHardDeadline(HttpxClient):
    """httpx with its own Timeout only (for --check-deadlines)."""

    async def call(self, order_id: int) -> int:
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        response = await self.client.post(self.url, content=order_body(order_id), headers=headers)
        return response.status_code


class _RawConnection(asyncio.Protocol):
    """One keep-alive connection that reads exactly one answer (status, Content-Length) per request."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].partition(b"\r\n")[0]) if at > 0 else 0
        if len(self.buffer) >= head_end + 4 + length:
            del self.buffer[: head_end + 4 + length]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed by the platform"))


class RawAsyncioClient:
    """The floor: an asyncio.Protocol per connection, the request bytes written by hand, a pool of
    idle connections, asyncio.timeout() as the deadline (the connection is closed when it fires)."""

    is_async = True

    async def open(self, url: str, n: int, deadline: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.deadline = parts.hostname, parts.port, deadline
        self.head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        self.idle: list[_RawConnection] = []

    async def call(self, order_id: int) -> int:
        body = order_body(order_id)
        request = f"{self.head}Idempotency-Key: {new_key()}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        conn = None
        try:
            async with asyncio.timeout(self.deadline):
                if self.idle:
                    conn = self.idle.pop()
                else:
                    _, conn = await asyncio.get_running_loop().create_connection(_RawConnection, self.host, self.port)
                conn.waiter = asyncio.get_running_loop().create_future()
                conn.transport.write(request)
                status = await conn.waiter
        except BaseException:
            if conn is not None:
                conn.transport.close()
            raise
        self.idle.append(conn)
        return status

    async def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()


class NoopCoroutine:
    """No HTTP at all: what handing a call into the loop and its result back costs by itself."""

    is_async = True

    async def open(self, url: str, n: int, deadline: float) -> None:
        pass

    async def call(self, order_id: int) -> int:
        return 201

    async def close(self) -> None:
        pass


# name -> (client class, how it is driven)
CANDIDATES: dict[str, tuple[type, str]] = {
    "project": (ProjectClient, "loop"),
    "project-batch": (ProjectClient, "batch"),
    "urllib3": (Urllib3Client, "threads"),
    "aiohttp": (AiohttpClient, "loop"),
    "aiohttp-handoff": (AiohttpClient, "handoff"),
    "httpx": (HttpxClient, "loop"),
    "httpx-handoff": (HttpxClient, "handoff"),
    "raw-asyncio": (RawAsyncioClient, "loop"),
    "raw-asyncio-handoff": (RawAsyncioClient, "handoff"),
    "noop-handoff": (NoopCoroutine, "handoff"),
    "aiohttp-batch": (AiohttpClient, "batch"),
    "raw-asyncio-batch": (RawAsyncioClient, "batch"),
    "noop-batch": (NoopCoroutine, "batch"),
}


# --- how the calls are driven ---------------------------------------------------------------------


def drive(submit: Callable[[int], Future], n: int, order_ids: Iterable[int]) -> Counter:
    """Keeps `n` calls in flight from this thread, as the consumer's dispatcher does: each finished
    future comes back through a queue.Queue from its done-callback."""
    finished: queue.Queue[Future] = queue.Queue()
    outcomes: Counter = Counter()
    in_flight = 0
    order_ids = iter(order_ids)
    more = True
    while more or in_flight:
        while more and in_flight < n:
            order_id = next(order_ids, None)
            if order_id is None:
                more = False
                break
            submit(order_id).add_done_callback(finished.put)
            in_flight += 1
        if not in_flight:
            break
        done = [finished.get()]
        try:
            while True:
                done.append(finished.get_nowait())
        except queue.Empty:
            pass
        for future in done:
            in_flight -= 1
            error = future.exception()
            outcomes[type(error).__name__ if error else future.result()] += 1
    return outcomes


async def drive_in_loop(call: Callable, n: int, order_ids: Iterable[int]) -> Counter:
    """`n` coroutines inside the loop, each taking the next call as soon as its last one ended."""
    outcomes: Counter = Counter()
    order_ids = iter(order_ids)

    async def worker() -> None:
        for order_id in order_ids:
            try:
                outcomes[await call(order_id)] += 1
            except Exception as exc:
                outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(worker() for _ in range(n)))
    return outcomes


def drive_batched(loop: asyncio.AbstractEventLoop, call: Callable, n: int, order_ids: Iterable[int]) -> Counter:
    """Like `drive`, but the calls go into the loop in batches (one call_soon_threadsafe for all
    the calls a free slot allows) and their outcomes come back in batches (one queue item per
    turn of the loop in which calls ended): one wake-up each way per batch, not per call."""
    finished: queue.Queue[list] = queue.Queue()
    ended: list = []

    def flush() -> None:
        finished.put(ended[:])
        ended.clear()

    def done(task: asyncio.Task) -> None:
        if not ended:
            loop.call_soon(flush)
        error = None if task.cancelled() else task.exception()
        ended.append(type(error).__name__ if error else task.result())

    def start(batch: list[int]) -> None:
        for order_id in batch:
            loop.create_task(call(order_id)).add_done_callback(done)

    outcomes: Counter = Counter()
    order_ids = iter(order_ids)
    in_flight = 0
    while True:
        batch = list(itertools.islice(order_ids, n - in_flight))
        if batch:
            loop.call_soon_threadsafe(start, batch)
            in_flight += len(batch)
        if not in_flight:
            return outcomes
        results = finished.get()
        try:
            while True:
                results += finished.get_nowait()
        except queue.Empty:
            pass
        in_flight -= len(results)
        outcomes.update(results)


class Driver:
    """One candidate, opened against `url` with its N threads or its event loop thread."""

    def __init__(self, name: str, url: str, n: int, deadline: float) -> None:
        client_class, self.mode = CANDIDATES[name]
        self.client, self.n = client_class(), n
        if client_class.is_async:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
            self.thread.start()
            self._in_loop(self.client.open(url, n, deadline))
        else:
            self.client.open(url, n, deadline)
            self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="bench-call")

    def _in_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def run(self, order_ids: range) -> Counter:
        if self.mode == "threads":
            return drive(lambda i: self.pool.submit(self.client.call, i), self.n, order_ids)
        if self.mode == "handoff":
            return drive(lambda i: asyncio.run_coroutine_threadsafe(self.client.call(i), self.loop), self.n, order_ids)
        if self.mode == "batch":
            return drive_batched(self.loop, self.client.call, self.n, order_ids)
        return self._in_loop(drive_in_loop(self.client.call, self.n, order_ids))

    def close(self) -> None:
        if self.mode == "threads":
            self.pool.shutdown()
            self.client.close()
            return
        self._in_loop(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


# --- the platform stub ----------------------------------------------------------------------------


class Stub:
    """`python -m tests.support.platform_stub` in a process of its own; its CPU read from /proc."""

    def __init__(self, delay: float) -> None:
        self.port_file = os.path.join(tempfile.mkdtemp(prefix="bench-stub-"), "port")
        command = [sys.executable, "-m", "tests.support.platform_stub", "--delay", str(delay)]
        self.process = subprocess.Popen([*command, "--port-file", self.port_file], stdout=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.port_file):
                break
            time.sleep(0.05)
        with open(self.port_file) as file:
            self.port = int(file.read())
        self.url = f"http://127.0.0.1:{self.port}/orders"

    def cpu(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stats", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(name: str, stub: Stub, n: int, calls: int, deadline: float) -> dict:
    driver = Driver(name, stub.url, n, deadline)
    try:
        driver.run(range(2 * n))  # warm-up: the connections, the threads
        duplicates = stub.stats()["duplicates"]
        cpu, stub_cpu, start = client_cpu(), stub.cpu(), time.perf_counter()
        outcomes = driver.run(range(calls))
        wall = time.perf_counter() - start
        cpu, stub_cpu = client_cpu() - cpu, stub.cpu() - stub_cpu
        duplicates = stub.stats()["duplicates"] - duplicates
    finally:
        driver.close()
    return {
        "candidate": name,
        "calls_per_s": calls / wall,
        "seconds": wall,
        "cpu_us_per_call": cpu / calls * 1e6,
        "client_cpu_share": cpu / wall,
        "stub_cpu_share": stub_cpu / wall,
        "stub_cpu_us_per_call": stub_cpu / calls * 1e6,
        "outcomes": dict(outcomes),
        "duplicates": duplicates,
    }


def parse_scenario(text: str) -> tuple[int, float]:
    in_flight, _, ms = text.partition("x")
    return int(in_flight), float(ms) / 1000


def benchmark(args: argparse.Namespace) -> None:
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Python {sys.version.split()[0]}")
    for scenario in args.scenarios.split(","):
        n, delay = parse_scenario(scenario)
        ceiling = n / delay
        calls = args.calls or int(ceiling * args.seconds)
        stub = Stub(delay)
        print(
            f"\n## {n} in flight, platform {delay * 1000:g} ms: ceiling {ceiling:,.0f} calls/s, {calls:,} calls a run"
        )
        print("| candidate | run | calls/s | % of ceiling | µs CPU/call | client CPU | stub CPU (µs/call) | outcomes |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        try:
            for repeat in range(1, args.repeats + 1):
                for name in args.candidates.split(","):
                    r = measure(name, stub, n, calls, args.deadline)
                    outcomes = ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items())
                    if r["duplicates"]:
                        outcomes += f", {r['duplicates']} repeated keys"
                    print(
                        f"| {name} | {repeat} | {r['calls_per_s']:,.0f} | {100 * r['calls_per_s'] / ceiling:.0f}% "
                        f"| {r['cpu_us_per_call']:.0f} | {100 * r['client_cpu_share']:.0f}% "
                        f"| {100 * r['stub_cpu_share']:.0f}% ({r['stub_cpu_us_per_call']:.0f}) | {outcomes} |",
                        flush=True,
                    )
        finally:
            stub.stop()


def check_deadlines(args: argparse.Namespace) -> None:
    """One call per candidate against a platform that trickles its answer, a byte every 50 ms
    (every read returns in time): a hard deadline ends it at `--deadline`, a read timeout never."""
    from tests.support.platform_stub import PlatformServer, PlatformStub

    stub = PlatformStub(trickle=0.05, keep_requests=False)
    server = PlatformServer(stub)
    deadline, guard = 0.5, 5.0
    try:
        for name in [*args.candidates.split(","), "httpx-no-hard-deadline"]:
            if name == "httpx-no-hard-deadline":
                CANDIDATES[name] = (HttpxNoHardDeadline, "loop")
            if name.startswith("noop"):
                continue
            driver = Driver(name, stub.url, 1, deadline)
            start = time.perf_counter()
            if driver.mode == "threads":
                future = driver.pool.submit(driver.client.call, 1)
            else:
                future = asyncio.run_coroutine_threadsafe(driver.client.call(1), driver.loop)
            wait([future], timeout=guard)
            if not future.done():
                outcome = f"still running after {guard:g} s"
            elif future.exception() is None:
                outcome = "answered"
            else:
                outcome = f"{type(future.exception()).__name__} after {time.perf_counter() - start:.2f} s"
            print(f"{name}: deadline {deadline} s, {outcome}", flush=True)
            if driver.mode == "threads":
                stub.release.set()  # the stuck call's read ends; the next candidate gets a fresh stub
                driver.close()
                stub.release.clear()
            else:
                driver.close()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"of: {', '.join(CANDIDATES)}")
    parser.add_argument("--scenarios", default="32x20,512x100", help="calls in flight x platform ms, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="calls a run: this many seconds at the ceiling")
    parser.add_argument("--calls", type=int, default=0, help="calls a run (instead of --seconds)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=5.0, help="each call's hard deadline, seconds")
    parser.add_argument("--check-deadlines", action="store_true", help="only check each candidate's deadline")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through the finally clauses, which stop the stub process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.check_deadlines:
        check_deadlines(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
