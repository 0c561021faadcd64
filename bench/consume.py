"""The consume path: exports per second of `run_export_consumer`'s loop (the real ConsumerLoop
with the export handler and the fake platform) draining a pre-produced backlog, against raw
kafka-python reading the same backlog in another group; then 1, 2 and 3 consumer processes, and
one consumer again without its per-record log line.

The backlog is real: orders confirmed in the bench database with the outbox on, their events
sent by the project's publisher. Between runs the exports are reset, so that every run exports
every order (none is a cheap "duplicate"). A rate runs from the first export to the last.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from bench.harness import BenchError
from bench.plan import DatabaseRun
from bench.stats import runs_figure

READY_TIMEOUT = 120.0
DRAIN_TIMEOUT = 900.0

# --- worker side ----------------------------------------------------------------------------


def backlog_prepare(*, orders: int) -> dict:
    """Confirm `orders` new orders (outbox rows, no on-commit send) and publish their events."""
    from django.conf import settings

    from bench.payloads import orders_create
    from kafka_bridge.models import OutboxEvent
    from kafka_bridge.producer import OutboxPublisher
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
    ready_path: str | None = None,
    go_path: str | None = None,
    assigned_path: str | None = None,
    stamps: bool = False,
    http: bool = False,
    attempt_log: bool = True,
) -> dict:
    """`run_export_consumer`'s loop with a fake platform that notes when each order arrived,
    until SIGTERM; with `http`, the client the settings choose (EXPORT_PLATFORM_URL), noting
    when each call returned. `ready_path` is touched once the loop is built, and the loop starts
    when `go_path` exists (so that several consumers join the group together); `assigned_path`
    is touched once the group gave it partitions. With `stamps`, each record's producer timestamp
    and the moment its batch reached the handler are noted too, to split the latency. Without
    `attempt_log`, the platform calls are not written as `ExportAttempt` rows (what they cost)."""
    import threading

    from django.conf import settings

    from bench.fake_platform import TimingClient, TimingPlatformClient
    from exports.processor import export_consumer, platform_client
    from kafka_bridge.runner import StopFlag

    stop = StopFlag()
    stop.install_signal_handlers()
    if http:
        if not settings.EXPORT_PLATFORM_URL:
            raise RuntimeError("export_consumer_run(http=True) needs EXPORT_PLATFORM_URL")
        client = TimingClient(platform_client())
    else:
        client = TimingPlatformClient()
    loop = export_consumer(stop=stop, client=client)
    import exports.processor

    record = exports.processor.order_exports_record
    recording = {"seconds": 0.0, "batches": 0}

    def timed_record(**outcomes):
        # What recording the outcomes takes (the attempt log's writes are part of it).
        if not attempt_log:
            outcomes["calls"] = ()
        started = time.perf_counter()
        try:
            return record(**outcomes)
        finally:
            recording["seconds"] += time.perf_counter() - started
            recording["batches"] += 1

    exports.processor.order_exports_record = timed_record
    import exports.services

    attempts_record = exports.services.attempts_record
    recording["attempt_log_seconds"] = 0.0

    def timed_attempts(**kwargs):
        # Within recording: what writing the attempt log takes, measured in the same run.
        started = time.perf_counter()
        try:
            return attempts_record(**kwargs)
        finally:
            recording["attempt_log_seconds"] += time.perf_counter() - started

    exports.services.attempts_record = timed_attempts
    handed: list[tuple[str, float, float]] = []  # (key, the record's CreateTime, handed to the handler)
    if stamps:
        prepare = loop.processor.prepare

        def stamped(records):
            now = time.time()
            handed.extend((r.key.decode() if r.key else "", r.timestamp / 1000, now) for r in records)
            return prepare(records)

        loop.processor.prepare = stamped
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
    loop.run()
    return {
        "receipts": client.receipts,
        "handed": handed,
        "processed": loop.processed_total,
        "dead_lettered": loop.dead_lettered_total,
        "assignments": loop.assignments,
        "max_in_flight": loop.max_in_flight_seen,
        "record_seconds": round(recording["seconds"], 4),
        "record_batches": recording["batches"],
        "attempt_log_seconds": round(recording["attempt_log_seconds"], 4),
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
    run: DatabaseRun, env: dict[str, str], *, count: int, records: int, consumer_args: dict | None = None
) -> dict:
    """Start `count` consumer processes together (`consumer_args`: more arguments of
    `export_consumer_run`), wait until their group committed the whole backlog, stop them, and
    measure the exports per second from the first to the last."""
    harness = run.context.harness
    group = harness.group("consume-export")
    env = {**env, "ORDER_EXPORT_CONSUMER_GROUP": group}
    go = harness.path("go")
    ready = [harness.path(f"ready-{i}") for i in range(count)]
    workers = [
        harness.spawn(
            "consume.export-consumer", {**(consumer_args or {}), "ready_path": str(r), "go_path": str(go)}, env=env
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
            w.stop() if w.alive() else {"receipts": [], "processed": 0, "assignments": 0, "dead_lettered": 0}
            for w in workers
        ]
    receipts = [t for result in results for t, _ in result["receipts"]]
    exported = len({order_id for result in results for _, order_id in result["receipts"]})
    seconds = max(receipts) - min(receipts) if receipts else 0.0
    return {
        "consumers": count,
        "exports": exported,
        "platform_calls": len(receipts),
        "seconds": seconds,
        "rate": exported / seconds if seconds else None,
        "per_consumer": [len(result["receipts"]) for result in results],
        "assignments": [result["assignments"] for result in results],
        "dead_lettered": sum(result["dead_lettered"] for result in results),
        "max_in_flight": [result.get("max_in_flight") for result in results],
        # Each consumer's seconds spent recording outcomes (order_exports_record), and batches.
        "record_seconds": [result.get("record_seconds") for result in results],
        "record_batches": [result.get("record_batches") for result in results],
        "attempt_log_seconds": [result.get("attempt_log_seconds") for result in results],
        # The attempt log's share of the consumers' time from first to last export, in percent.
        "attempt_log_percent": (
            round(100 * sum(result.get("attempt_log_seconds") or 0 for result in results) / (seconds * count), 2)
            if seconds
            else None
        ),
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
            variants = [(f"export-{count}", f"{count} export consumer{'s' if count > 1 else ''}", {})]
            if count == 1:
                # Next to it, the same without the attempt log: what writing the attempts costs.
                # Which of the two goes first alternates run by run, so that neither always
                # meets the machine (caches, autovacuum) as the other left it.
                variants.append(("export-1-no-attempts", "1 export consumer, attempt log off", {"attempt_log": False}))
                if repeat % 2 == 0:
                    variants.reverse()
            for name, label, consumer_args in variants:
                progress.next(f"consume: {label} {suffix}")
                harness.run("consume.exports-reset", {}, env=env)
                result = run_export_consumers(run, env, count=count, records=records, consumer_args=consumer_args)
                if result["exports"] != records:
                    context.note(f"{run.vendor}: {label} exported {result['exports']} of {records} orders")
                results[name].append(result)
        # The same single consumer without its per-record INFO line: what that line costs.
        progress.next(f"consume: 1 export consumer, outcome lines off {suffix}")
        harness.run("consume.exports-reset", {}, env=env)
        quiet = run_export_consumers(run, {**env, "LOG_LEVELS": "exports.processor=WARNING"}, count=1, records=records)
        results["export-1-quiet"].append(quiet)
    note = f"backlog of {records} events of {prepared['event_bytes']} bytes, 3 partitions"

    def exports(key: str, name: str, label: str) -> dict:
        return runs_figure(key, label=label, unit="exports/s", db=run.vendor, runs=results[name], note=note)

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
            exports(f"consume.export.{count}", f"export-{count}", f"export consumer x{count} (fake platform)")
            for count in sizes.consumers
        ),
        runs_figure(
            "consume.export.1.attempt-log-time",
            label="export consumer x1: time writing the attempt log, same runs",
            unit="% of the time",
            db=run.vendor,
            runs=results["export-1"],
            field="attempt_log_percent",
            note=note,
            with_details=False,
        ),
        exports(
            "consume.export.1.no-attempt-log",
            "export-1-no-attempts",
            "export consumer x1, platform calls not written as ExportAttempt rows",
        ),
        exports(
            "consume.export.1.quiet",
            "export-1-quiet",
            "export consumer x1, outcome lines off (LOG_LEVELS=exports.processor=WARNING)",
        ),
    ]
