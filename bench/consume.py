"""The consume path: exports per second of `run_export_consumer`'s loop (built as the command
builds it: the real ConsumerLoop, the export processor, the fake platform the settings choose,
its calls on the consumer's event loop as the HTTP client's) draining a pre-produced backlog,
against raw kafka-python reading the same backlog in another group; then 1, 2 and 3 consumer
processes, and one consumer again with its line per export (DEBUG, on in development).

The backlog is real: orders confirmed in the bench database with the outbox on, their events
sent by the project's publisher. Between runs the exports are reset, so that every run exports
every order (none is a cheap "duplicate"). A rate runs from the first export to the last, as the
attempt log the consumer writes anyway has them (`ExportAttempt`: when each call started, how
long it took); nothing in the consumer is replaced or timed from inside.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from bench.harness import BenchError
from bench.plan import DatabaseRun
from bench.stats import cpu_figures, runs_figure
from bench.tracing import TRACED, otlp_receiver_running

READY_TIMEOUT = 120.0
DRAIN_TIMEOUT = 900.0
# How often a consumer process samples its CPU and its count of exports (seconds).
CPU_SAMPLE = 0.01

# --- worker side ----------------------------------------------------------------------------


def backlog_prepare(*, orders: int) -> dict:
    """Confirm `orders` new orders (outbox rows, no on-commit send) and publish their events."""
    from django.conf import settings

    from bench.payloads import orders_create
    from kafka_bridge.models import OutboxEvent
    from kafka_bridge.outbox.publisher import OutboxPublisher
    from orders.services import order_confirm

    if settings.KAFKA_PUBLISH_ON_COMMIT:
        raise RuntimeError("backlog_prepare needs KAFKA_PUBLISH_ON_COMMIT=false")
    for order_id in orders_create(orders):
        order_confirm(order_id=order_id)
    rows = list(OutboxEvent.objects.filter(topic=settings.ORDER_EXPORT_TOPIC, sent_at__isnull=True).order_by("id"))
    publisher = OutboxPublisher(timeout=60)
    sent = 0
    for start in range(0, len(rows), 500):
        sent += publisher.publish(rows[start : start + 500]).sent
    publisher.close()
    return {
        "orders": orders,
        "sent": sent,
        "event_bytes": round(sum(len(row.payload.encode()) for row in rows) / max(1, len(rows))),
    }


def exports_reset() -> dict:
    """Forget every export, so that the backlog exports again in full, into empty tables: on
    PostgreSQL truncated, as a DELETE leaves the rows' dead versions and index entries for the
    next run to step over until autovacuum comes by."""
    from django.db import connection

    from exports.models import ExportAttempt, OrderExport, ProcessedEvent

    tables = {"processed": ProcessedEvent, "exports": OrderExport, "attempts": ExportAttempt}
    counts = {name: model.objects.count() for name, model in tables.items()}
    if connection.vendor == "postgresql":
        names = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in tables.values())
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {names}")
    else:
        for model in tables.values():
            model.objects.all().delete()
    return counts


def export_consumer_run(
    *,
    concurrency: int | None = None,
    ready_path: str | None = None,
    go_path: str | None = None,
    assigned_path: str | None = None,
    stamp_received: bool = False,
) -> dict:
    """`run_export_consumer`'s loop exactly as `run_export_consumer --concurrency` builds it from
    the settings (the HTTP client of EXPORT_PLATFORM_URL; without it the fake platform, which the
    production settings leave to development, so the bench hands it over itself), until SIGTERM. `ready_path` is touched
    once the loop is built, and the loop starts when `go_path` exists (so that several consumers
    join the group together); `assigned_path` is touched once the group gave it partitions. What
    it exported is read afterwards from the database (`deliveries`), not noted here. With
    `stamp_received`, it notes when each record reached the processor (wall clock, by key): the
    end-to-end figure's split at the consumer."""
    import os
    import threading

    from django.conf import settings

    from exports.consumer import export_consumer
    from exports.platform.client import FakeExternalPlatformClient
    from kafka_bridge.runner import StopFlag, garbage_collector_settle

    stop = StopFlag()
    stop.install_signal_handlers()
    client = None if settings.EXPORT_PLATFORM_URL else FakeExternalPlatformClient()
    loop = export_consumer(stop=stop, client=client, concurrency=concurrency)
    received = _stamp_received(loop.processor) if stamp_received else None
    garbage_collector_settle()
    if ready_path:
        Path(ready_path).touch()
    if go_path:
        deadline = time.monotonic() + READY_TIMEOUT
        while not Path(go_path).exists() and not stop.is_set() and time.monotonic() < deadline:
            stop.wait(0.005)
    if assigned_path:

        def watch() -> None:
            while not stop.is_set() and not loop.assignments:
                stop.wait(0.02)
            Path(assigned_path).touch()

        threading.Thread(target=watch, daemon=True).start()
    # The process's CPU (user + system, every thread's; os.times() counts in clock ticks): while
    # its loop runs (the group join, the drain, the idle polls until SIGTERM), and over the
    # window of its rate, from its first export to its last, sampled every CPU_SAMPLE seconds.
    window: list[float] = []

    def sample() -> None:
        seen, previous = 0, time.process_time()
        while not stop.is_set():
            now, processed = time.process_time(), loop.processed_total
            if processed != seen:
                if not window:
                    window.append(previous)  # the last sample before the first export
                window[1:] = [now]
                seen = processed
            previous = now
            stop.wait(CPU_SAMPLE)

    threading.Thread(target=sample, daemon=True, name="bench-cpu").start()
    before = time.process_time()
    loop.run()
    cpu_loop = time.process_time() - before
    return {
        "pid": os.getpid(),
        "cpu_seconds": round(window[-1] - window[0], 4) if len(window) == 2 else 0.0,
        "cpu_seconds_loop": round(cpu_loop, 4),
        "processed": loop.processed_total,
        "dead_lettered": loop.dead_lettered_total,
        "assignments": loop.assignments,
        "max_in_flight": loop.max_in_flight_seen,
        **({"received": received} if received is not None else {}),
    }


def _stamp_received(processor) -> dict[str, float]:
    """Wrap `processor.prepare` so that it notes, by record key, when a record first reached it
    (time.time()): after the poll that fetched it and before the batch's database read."""
    received: dict[str, float] = {}
    prepare = processor.prepare

    def stamped(records):
        now = time.time()
        for record in records:
            if record.key is not None:
                received.setdefault(record.key.decode(errors="replace"), now)
        return prepare(records)

    processor.prepare = stamped
    return received


def deliveries(*, topic: str) -> dict:
    """Every platform call of `topic`'s records that exported its order, from the attempt log
    the consumer writes anyway (`ExportAttempt`): [order id, consumer, call started, call
    answered], times as time.time() (the wall clock, comparable with other processes')."""
    from exports.models import ExportAttempt

    rows = ExportAttempt.objects.filter(topic=topic, outcome=ExportAttempt.Outcome.EXPORTED).values_list(
        "order_id", "consumer", "started_at", "duration_ms"
    )
    return {
        "calls": [
            [order_id, consumer, started.timestamp(), started.timestamp() + duration_ms / 1000]
            for order_id, consumer, started, duration_ms in rows
        ]
    }


# --- orchestrator side ----------------------------------------------------------------------


def wait_for_files(paths: list[Path], *, timeout: float, workers) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        dead = [w for w in workers if not w.alive()]
        if dead:
            dead[0].wait(1)  # raises with its log
        if time.monotonic() > deadline:
            raise BenchError(
                f"{sum(p.exists() for p in paths)} of {len(paths)} consumers were ready within {timeout:g} s"
            )
        time.sleep(0.02)


def run_export_consumers(
    run: DatabaseRun, env: dict[str, str], *, count: int, records: int, concurrency: int | None = None
) -> dict:
    """Start `count` consumer processes together, wait until their group committed the whole backlog, stop them, and
    measure the exports per second from the first to the last platform answer, as the attempt
    log has them."""
    harness = run.context.harness
    group = harness.group("consume-export")
    env = {**env, "ORDER_EXPORT_CONSUMER_GROUP": group}
    go = harness.path("go")
    ready = [harness.path(f"ready-{i}") for i in range(count)]
    workers = [
        harness.spawn(
            "consume.export-consumer",
            {"ready_path": str(r), "go_path": str(go), "concurrency": concurrency},
            env=env,
        )
        for r in ready
    ]
    try:
        wait_for_files(ready, timeout=READY_TIMEOUT, workers=workers)
        go.touch()
        harness.wait_group_caught_up(
            group, target=records, timeout=DRAIN_TIMEOUT, alive=lambda: all(w.alive() for w in workers)
        )
    finally:
        results = [
            w.stop() if w.alive() else {"pid": None, "processed": 0, "assignments": 0, "dead_lettered": 0}
            for w in workers
        ]
    calls = harness.run("consume.deliveries", {"topic": env["ORDER_EXPORT_TOPIC"]}, env=env)["calls"]
    answered = [at for _, _, _, at in calls]
    exported = len({order_id for order_id, _, _, _ in calls})
    seconds = max(answered) - min(answered) if answered else 0.0
    cpu = [result.get("cpu_seconds") for result in results]
    cpu_seconds = None if any(c is None for c in cpu) else round(sum(cpu), 4)
    cpu_loop = [result.get("cpu_seconds_loop") for result in results]
    return {
        "consumers": count,
        "exports": exported,
        "platform_calls": len(calls),
        "seconds": seconds,
        "rate": exported / seconds if seconds else None,
        "per_consumer": [
            sum(1 for _, consumer, _, _ in calls if consumer.endswith(f":{result['pid']}")) for result in results
        ],
        "assignments": [result["assignments"] for result in results],
        "dead_lettered": sum(result["dead_lettered"] for result in results),
        "max_in_flight": [result.get("max_in_flight") for result in results],
        # The consumer processes' CPU from each one's first export to its last, in all and per
        # export; and each one's while its loop ran (group join and idle polls included).
        "cpu_seconds": cpu_seconds,
        "cpu_per_consumer": cpu,
        "cpu_seconds_loop": cpu_loop,
        "cpu_ms_per_export": round(cpu_seconds * 1000 / exported, 4) if cpu_seconds is not None and exported else None,
    }


def steps(repeats: int, consumers: tuple[int, ...]) -> int:
    return 1 + repeats * (3 + len(consumers))


def measure(run: DatabaseRun) -> list[dict]:
    context = run.context
    sizes, harness, progress = context.sizes, context.harness, context.progress
    topic = harness.topic("consume", dlt=True)
    env = run.env(ORDER_EXPORT_TOPIC=topic, ORDER_EXPORT_DLT_TOPIC=f"{topic}.DLT", KAFKA_PUBLISH_ON_COMMIT="false")
    records = sizes.backlog
    progress.next(f"consume: pre-producing a backlog of {records} events ({run.vendor})")
    prepared = harness.run("consume.backlog-prepare", {"orders": records}, env=env, timeout=1200)
    if prepared["sent"] != records:
        raise BenchError(f"the backlog has {prepared['sent']} of {records} events")
    results: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(1, sizes.repeats + 1):
        suffix = f"({run.vendor}), run {repeat}/{sizes.repeats}"
        progress.next(f"consume: raw kafka-python {suffix}")
        results["raw"].append(
            harness.run(
                "ceilings.kafka-python-consume",
                {"topic": topic, "group": harness.group("consume-raw"), "records": records},
                env=env,
            )
        )
        for count in sizes.consumers:
            label = f"{count} export consumer{'s' if count > 1 else ''}"
            progress.next(f"consume: {label} {suffix}")
            harness.run("consume.exports-reset", {}, env=env)
            result = run_export_consumers(run, env, count=count, records=records)
            if result["exports"] != records:
                context.note(f"{run.vendor}: {label} exported {result['exports']} of {records} orders")
            results[f"export-{count}"].append(result)
        # The same single consumer with its line per export (DEBUG): what that line costs.
        progress.next(f"consume: 1 export consumer, a line per export {suffix}")
        harness.run("consume.exports-reset", {}, env=env)
        lines = run_export_consumers(run, {**env, "LOG_LEVELS": "exports.consumer=DEBUG"}, count=1, records=records)
        results["export-1-lines"].append(lines)
        # The same single consumer exporting a span per record over OTLP/HTTP (the backlog's
        # records carry no traceparent: each is a trace of its own): what tracing costs.
        progress.next(f"consume: 1 export consumer, {TRACED} {suffix}")
        harness.run("consume.exports-reset", {}, env=env)
        with otlp_receiver_running(harness) as tracing_env:
            traced = run_export_consumers(run, {**env, **tracing_env}, count=1, records=records)
        results["export-1-traced"].append(traced)
    note = f"backlog of {records} events of {prepared['event_bytes']} bytes, 3 partitions"

    def exports(key: str, name: str, label: str) -> list[dict]:
        """The rate, and beside it the CPU its consumer processes used."""
        runs = results[name]
        measured = runs_figure(key, label=label, unit="exports/s", db=run.vendor, runs=runs, note=note)
        cpu = cpu_figures(key, label=label, db=run.vendor, runs=runs, note=note)
        for found in cpu:
            measured[found["key"].rpartition(".")[2]] = found["median"]
        return [measured, *cpu]

    return [
        runs_figure(
            "consume.raw",
            label="raw kafka-python consume, same backlog",
            unit="records/s",
            db=run.vendor,
            runs=results["raw"],
            note=note,
        ),
        *(
            found
            for count in sizes.consumers
            for found in exports(
                f"consume.export.{count}", f"export-{count}", f"export consumer x{count} (fake platform)"
            )
        ),
        *exports(
            "consume.export.1.lines",
            "export-1-lines",
            "export consumer x1, a line per export (LOG_LEVELS=exports.consumer=DEBUG)",
        ),
        *exports("consume.export.1.traced", "export-1-traced", f"export consumer x1, {TRACED}"),
    ]
