"""The platform over HTTP: `run_export_consumer`'s loop with the HTTP client
(EXPORT_PLATFORM_URL) against the platform stub in a process of its own
(`python -m tests.support.platform_stub`), which answers each call after a fixed delay.

With calls of a fixed latency the loop's ceiling is known: `concurrency x processes / latency`
exports per second. Every figure is given as a ratio to that limit, and the stub is measured
alone first (many threads, no Kafka, no database) to show the limit is the consumer's and not
the stub's. The variants: 20 ms one call at a time, at the default concurrency by one process
and by several, and 100 ms at the default concurrency and with 512 calls in flight. Beside each
rate, the CPU its consumer processes used (user + system, measured inside each around its loop).

The backlog is real, as in the consume measurement: orders confirmed with the outbox, their
events published by the project's publisher, in topics of this group's own. Every backlog run
resets the exports and uses a group of its own; every run has a stub process of its own (the
stub answers a repeated Idempotency-Key with 409, so a stub that saw a backlog once would turn
the next run into duplicates), and the exports counted are checked against the stub's own count
of accepted calls. A rate runs from the first export to the last, each timed where the client
returned.

Last, the end-to-end latency of the e2e measurement's paced load (200 confirms/s, the on-commit
fast path, one consumer) with the consumer calling a 20 ms stub over HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.consume import run_export_consumers
from bench.e2e import WARMUP, pipeline_run
from bench.harness import PYTHON, BenchError, Harness, Worker, log_tail
from bench.plan import DatabaseRun, Sizes
from bench.stats import cpu_figures, figure, latency_figures, median, runs_figure
from bench.tracing import TRACED, otlp_receiver_running

DELAY = 0.02
SLOW_DELAY = 0.1
# Calls in flight of the widest variant (`run_export_consumer --concurrency 512`), against the
# 100 ms platform: a limit of 5,120 exports/s for one process.
WIDE_CONCURRENCY = 512
STUB_TIMEOUT = 30.0
# The stub alone: far above any answer's time, so a call that times out is an error of the
# measurement, reported as such, never a slow call that counts.
CLIENT_TIMEOUT = 5.0

# --- worker side ----------------------------------------------------------------------------


def stub_drive(*, url: str, threads: int, calls: int) -> dict:
    """`threads` threads each making `calls` calls with `HttpExternalPlatformClient` (one pool
    of `threads` connections, as the consumer's is sized to its concurrency), after one untimed
    call each to open its connection; calls per second from the common start to the last
    answer."""
    from django.utils import timezone

    from bench.payloads import bench_snapshot
    from exports.platform.http import HttpExternalPlatformClient

    client = HttpExternalPlatformClient(url=url, timeout=CLIENT_TIMEOUT, pool_size=threads)
    now = timezone.now()
    start = threading.Barrier(threads + 1)
    finished = [0.0] * threads
    errors: list[str] = []

    def drive(slot: int) -> None:
        client.send(order=bench_snapshot(slot, now), idempotency_key=f"warmup-{slot}")
        start.wait()
        for n in range(calls):
            order_id = slot * calls + n
            try:
                client.send(order=bench_snapshot(order_id, now), idempotency_key=f"call-{order_id}")
            except Exception as exc:
                errors.append(repr(exc))
        finished[slot] = time.perf_counter()

    workers = [threading.Thread(target=drive, args=(slot,), name=f"drive-{slot}") for slot in range(threads)]
    for worker in workers:
        worker.start()
    start.wait(timeout=60)
    began, cpu_before = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - cpu_before
    client.close()
    seconds = max(finished) - began
    total = threads * calls
    return {
        "threads": threads,
        "calls": total,
        "seconds": round(seconds, 3),
        "rate": total / seconds if seconds > 0 else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "client_cpu_ms_per_call": round(cpu / total * 1000, 4),
    }


# --- orchestrator side ----------------------------------------------------------------------


@dataclass
class Stub:
    """A `python -m tests.support.platform_stub` process."""

    worker: Worker
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/orders"

    def stats(self) -> dict:
        """The stub's counters: calls, accepted, duplicates, connections, max_in_flight."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/_stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def cpu_seconds(self) -> float | None:
        """User plus system CPU seconds of the stub so far (Linux), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.worker.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        # utime and stime are fields 14 and 15 of proc(5); the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def stub_running(harness: Harness, *, delay: float) -> Iterator[Stub]:
    """A stub process answering every call after `delay` seconds, stopped on leaving."""
    port_file = harness.path("platform-port")
    worker = harness.command(
        [
            PYTHON,
            "-m",
            "tests.support.platform_stub",
            "--port",
            "0",
            "--delay",
            f"{delay:g}",
            "--port-file",
            str(port_file),
        ],
        env=harness.env(),
        name="platform-stub",
    )
    try:
        deadline = time.monotonic() + STUB_TIMEOUT
        while not port_file.exists():
            if not worker.alive():
                raise BenchError(
                    f"the platform stub exited with {worker.process.returncode}\n{log_tail(worker.log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the platform stub did not listen within {STUB_TIMEOUT:g} s\n{log_tail(worker.log_path)}"
                )
            time.sleep(0.02)
        yield Stub(worker, int(port_file.read_text()))
    finally:
        worker.terminate(timeout=10)


@dataclass(frozen=True)
class Variant:
    """One configuration of the consumer against the stub."""

    key: str
    delay: float
    concurrency: int
    processes: int
    serial_backlog: bool = False
    # Spans exported over OTLP/HTTP (bench.tracing): a process span and a call span per record.
    traced: bool = False

    @property
    def limit(self) -> float:
        """Exports/s if every call took exactly `delay` and nothing else took any time."""
        return self.concurrency * self.processes / self.delay

    @property
    def short(self) -> str:
        calls = "1 call at a time" if self.concurrency == 1 else f"{self.concurrency} in flight"
        return (
            f"{self.delay * 1000:g} ms platform\n{self.processes} process{'es' if self.processes > 1 else ''}\n{calls}"
            + ("\ntraced" if self.traced else "")
        )

    @property
    def label(self) -> str:
        calls = "1 call at a time" if self.concurrency == 1 else f"{self.concurrency} calls in flight"
        processes = f"{self.processes} processes" if self.processes > 1 else "1 process"
        traced = f", {TRACED}" if self.traced else ""
        return f"export consumer over HTTP, {self.delay * 1000:g} ms platform, {processes}, {calls}{traced}"


def variants(sizes: Sizes, concurrency: int) -> list[Variant]:
    return [
        Variant("platform.export.20ms.serial", DELAY, 1, 1, serial_backlog=True),
        Variant("platform.export.20ms", DELAY, concurrency, 1),
        Variant("platform.export.20ms.traced", DELAY, concurrency, 1, traced=True),
        Variant(f"platform.export.20ms.x{sizes.platform_processes}", DELAY, concurrency, sizes.platform_processes),
        Variant("platform.export.100ms", SLOW_DELAY, concurrency, 1),
        Variant("platform.export.100ms.c512", SLOW_DELAY, WIDE_CONCURRENCY, 1),
    ]


def _load() -> list[float]:
    """The machine's load average: these figures are only as good as the CPU left to them."""
    return [round(x, 2) for x in os.getloadavg()]


def _stub_alone(run: DatabaseRun, *, concurrency: int) -> dict:
    harness, sizes = run.context.harness, run.context.sizes
    load = _load()
    with stub_running(harness, delay=DELAY) as stub:
        cpu_before = stub.cpu_seconds()
        result = harness.run(
            "platform.stub-drive",
            {"url": stub.url, "threads": sizes.platform_threads, "calls": sizes.platform_calls},
            env=run.env(),
            timeout=600,
        )
        cpu_after = stub.cpu_seconds()
        stats = stub.stats()
    result["stub"], result["load_average"] = stats, [load, _load()]
    if cpu_before is not None and cpu_after is not None and result["seconds"]:
        result["stub_cpu_share"] = round((cpu_after - cpu_before) / result["seconds"], 3)
    expected = sizes.platform_threads * (sizes.platform_calls + 1)
    if result["errors"] or stats["accepted"] != expected:
        run.context.note(
            f"{run.vendor}: the stub alone accepted {stats['accepted']} of {expected} calls, "
            f"{result['errors']} error(s) {result['first_error']}".rstrip()
        )
    consumer_limit = concurrency / DELAY
    if result["rate"] is not None and result["rate"] < consumer_limit:
        run.context.note(
            f"{run.vendor}: the stub alone answered {result['rate']:,.0f} calls/s, below one consumer's limit of "
            f"{consumer_limit:,.0f}/s: the machine, not the consumer, bounds the figures of this run"
        )
    return result


def _export(run: DatabaseRun, env: dict[str, str], variant: Variant, *, records: int) -> dict:
    harness, context = run.context.harness, run.context
    harness.run("consume.exports-reset", {}, env=env)
    load = _load()
    with stub_running(harness, delay=variant.delay) as stub:
        env = {**env, "EXPORT_PLATFORM_URL": stub.url}
        cpu_before = stub.cpu_seconds()
        result = run_export_consumers(
            run, env, count=variant.processes, records=records, concurrency=variant.concurrency
        )
        cpu_after = stub.cpu_seconds()
        stats = stub.stats()
    result["stub"], result["load_average"] = stats, [load, _load()]
    if cpu_before is not None and cpu_after is not None:
        result["stub_cpu_seconds"] = round(cpu_after - cpu_before, 3)
    result["limit"] = variant.limit
    if result["exports"] != records or stats["accepted"] != records:
        context.note(
            f"{run.vendor} {variant.key}: {result['exports']} exports timed, the stub accepted "
            f"{stats['accepted']}, of {records} orders"
        )
    if stats["duplicates"]:
        context.note(f"{run.vendor} {variant.key}: the stub saw {stats['duplicates']} repeated call(s)")
    return result


def _e2e(run: DatabaseRun, suffix: str, concurrency: int) -> dict:
    harness, sizes = run.context.harness, run.context.sizes
    load = _load()
    with stub_running(harness, delay=DELAY) as stub:
        outcomes = pipeline_run(
            run,
            label="platform e2e",
            suffix=suffix,
            saturation=False,
            env_overrides={"EXPORT_PLATFORM_URL": stub.url},
            concurrency=concurrency,
        )
        stats = stub.stats()
    paced = outcomes["paced"]
    paced["stub"], paced["load_average"] = stats, [load, _load()]
    # The warm-up confirms of every generator are exported too.
    expected = int(sizes.e2e_rate * sizes.e2e_seconds) + sizes.e2e_processes * WARMUP
    if stats["accepted"] != expected:
        run.context.note(f"{run.vendor} platform e2e: the stub accepted {stats['accepted']} of {expected} orders")
    if paced["rate"] is not None and paced["rate"] < 0.9 * sizes.e2e_rate:
        run.context.note(
            f"{run.vendor} platform e2e: the generators confirmed {paced['rate']:.0f}/s of the {sizes.e2e_rate:g}/s "
            "offered: the latency is that of a lower load"
        )
    return paced


def steps(repeats: int) -> int:
    return 2 + repeats * 8


def measure(run: DatabaseRun) -> list[dict]:
    from django.conf import settings

    context = run.context
    sizes, harness, progress = context.sizes, context.harness, context.progress
    concurrency = settings.EXPORT_CONCURRENCY
    envs: dict[bool, dict[str, str]] = {}
    prepared: dict[bool, dict] = {}
    for serial, records in ((True, sizes.platform_serial_backlog), (False, sizes.platform_backlog)):
        topic = harness.topic("platform-serial" if serial else "platform", dlt=True)
        envs[serial] = run.env(
            ORDER_EXPORT_TOPIC=topic, ORDER_EXPORT_DLT_TOPIC=f"{topic}.DLT", KAFKA_PUBLISH_ON_COMMIT="false"
        )
        progress.next(f"platform: pre-producing a backlog of {records} events ({run.vendor})")
        prepared[serial] = harness.run("consume.backlog-prepare", {"orders": records}, env=envs[serial], timeout=1200)
        if prepared[serial]["sent"] != records:
            raise BenchError(f"the backlog has {prepared[serial]['sent']} of {records} events")
    chosen = variants(sizes, concurrency)
    results: dict[str, list[dict]] = defaultdict(list)
    pooled: list[float] = []
    for repeat in range(1, sizes.repeats + 1):
        suffix = f"({run.vendor}), run {repeat}/{sizes.repeats}"
        progress.next(
            f"platform: the stub alone, {sizes.platform_threads} threads x {sizes.platform_calls} calls {suffix}"
        )
        results["stub"].append(_stub_alone(run, concurrency=concurrency))
        for variant in chosen:
            progress.next(f"platform: {variant.label} {suffix}")
            records = sizes.platform_serial_backlog if variant.serial_backlog else sizes.platform_backlog
            with contextlib.ExitStack() as stack:
                env = envs[variant.serial_backlog]
                if variant.traced:
                    env = {**env, **stack.enter_context(otlp_receiver_running(harness))}
                results[variant.key].append(_export(run, env, variant, records=records))
        paced = _e2e(run, suffix, concurrency)
        pooled.extend(paced.pop("latencies"))
        results["e2e"].append(paced)
    return _figures(run, chosen, results, pooled, prepared)


def _figures(
    run: DatabaseRun, chosen: list[Variant], results: dict[str, list[dict]], pooled: list[float], prepared
) -> list[dict]:
    sizes, db = run.context.sizes, run.vendor

    def with_ratio(
        key: str, *, label: str, short: str, unit: str, runs: list[dict], limit: float, limit_text: str, note: str
    ) -> list[dict]:
        rates = [r["rate"] for r in runs]
        measured = runs_figure(key, label=label, unit=unit, db=db, runs=runs, note=note)
        # What the report's platform table and plot draw the figure against.
        measured["limit"], measured["short"] = limit, short
        ratios = [None if rate is None else round(rate / limit, 4) for rate in rates]
        ratio = figure(
            f"{key}.vs_limit", label=f"{label} ÷ limit {limit_text}", unit="x limit", db=db, runs=ratios, note=note
        )
        # Three digits, not figure()'s two decimals: 0.031 of the limit is not 0.03.
        ratio["runs"], ratio["median"] = ratios, median(ratios)
        return [measured, ratio]

    threads, stub_limit = sizes.platform_threads, sizes.platform_threads / DELAY
    found = with_ratio(
        "platform.stub",
        label=f"platform stub alone, {threads} threads calling HttpExternalPlatformClient, {DELAY * 1000:g} ms",
        short=f"stub alone\n{threads} threads\n{DELAY * 1000:g} ms",
        unit="requests/s",
        runs=results["stub"],
        limit=stub_limit,
        limit_text=f"({threads} ÷ {DELAY * 1000:g} ms = {stub_limit:,.0f}/s)",
        note=f"{threads} threads x {sizes.platform_calls} calls, one keep-alive pool of {threads} connections",
    )
    for variant in chosen:
        records = sizes.platform_serial_backlog if variant.serial_backlog else sizes.platform_backlog
        event_bytes = prepared[variant.serial_backlog]["event_bytes"]
        note = f"backlog of {records} events of {event_bytes} bytes, 3 partitions; stub process over HTTP"
        rate, ratio = with_ratio(
            variant.key,
            label=variant.label,
            short=variant.short,
            unit="exports/s",
            runs=results[variant.key],
            limit=variant.limit,
            limit_text=f"({variant.concurrency} x {variant.processes} ÷ {variant.delay * 1000:g} ms = {variant.limit:,.0f}/s)",
            note=note,
        )
        # Beside the rate, the CPU of its consumer processes (their loops' user + system time).
        cpu = cpu_figures(variant.key, label=variant.label, db=db, runs=results[variant.key], note=note)
        for measured in cpu:
            rate[measured["key"].rpartition(".")[2]] = measured["median"]
        found += [rate, ratio, *cpu]
    paced_runs = results["e2e"]
    rate = sizes.e2e_rate
    note = (
        f"{rate:g}/s offered for {sizes.e2e_seconds:g} s by {sizes.e2e_processes} processes x {sizes.e2e_threads} threads; "
        f"one consumer, default concurrency, HTTP to a {DELAY * 1000:g} ms stub; latency to the client's return"
    )
    label = f"end-to-end {{}} at {rate:g}/s, {DELAY * 1000:g} ms platform over HTTP"
    found += latency_figures("e2e.platform20", label=label, db=db, runs=paced_runs, pooled=pooled, note=note)
    found.append(
        runs_figure(
            "e2e.platform20.offered",
            label=f"confirms/s achieved at the offered load ({DELAY * 1000:g} ms platform run)",
            unit="confirms/s",
            db=db,
            runs=paced_runs,
            note=note,
            with_details=False,
        )
    )
    return found
