"""End-to-end latency: from a confirm's commit to the platform receiving the order, at half the
saturation throughput. Each run first confirms flat out with everything running (the
saturation: orders/s delivered to the platform end to end), then offers half that rate, open
loop, and measures the latency of those orders.

The pipeline runs as in production: a process confirming orders through `order_confirm` (the
on-commit fast path publishes), `run_export_consumer`'s loop in a process of its own with the
platform the settings choose, and `manage.py run_outbox_relay` for what the fast path could not
send. The commit time is taken by an on-commit callback registered before the confirm's own
(callbacks run in order, right after the COMMIT); the producer's send is the record's
CreateTime, read back from the topic; when the platform call started and answered comes from
the attempt log the consumer writes (`ExportAttempt`). All are wall-clock times of the same
machine.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.consume import wait_for_files
from bench.harness import PYTHON, BenchError
from bench.plan import DatabaseRun
from bench.stats import figure, latency_figures, latency_summary, median, runs_figure

WARMUP = 5
# The key prefix of the latency figures at half the saturation throughput.
HALF_SATURATION = "e2e.half_saturation"

# --- worker side ----------------------------------------------------------------------------


def confirm_generate(
    *,
    orders: int,
    threads: int,
    rate: float | None = None,
    index: int = 0,
    processes: int = 1,
    ready_path: str,
    go_path: str,
    warmup: int = WARMUP,
) -> dict:
    """Confirm `orders` new orders, this process's share of a load that `processes` processes
    generate together: paced (open loop, `rate` per second in all, this process taking every
    `processes`-th slot from `index`; a slow confirm does not delay the next one, `threads`
    absorb them), or with no pacing (flat out) when `rate` is None.

    Touches `ready_path` once its orders exist and its producer is connected, and starts when
    `go_path` holds the common start time (time.time())."""
    from django.db import transaction

    from bench.payloads import orders_create
    from kafka_bridge.models import OutboxEvent
    from kafka_bridge.outbox.publisher import request_publisher
    from orders.services import order_confirm

    ids = orders_create(warmup + orders)
    for order_id in ids[:warmup]:
        order_confirm(order_id=order_id)  # connects the producer before the clock starts
    timed = ids[warmup:]
    commits: dict[int, float] = {}
    durations: list[float] = []

    def confirm(order_id: int) -> None:
        before = time.perf_counter()
        with transaction.atomic():
            # Registered first, so it runs first after the COMMIT, before the publisher's send.
            transaction.on_commit(lambda: commits.__setitem__(order_id, time.time()))
            order_confirm(order_id=order_id)
        durations.append(time.perf_counter() - before)

    Path(ready_path).touch()
    start = _wait_for_start(Path(go_path))
    late: list[float] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="confirm") as pool:
        if rate:
            futures = []
            for k, order_id in enumerate(timed):
                delay = start + (k * processes + index) / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late.append(-delay)
                futures.append(pool.submit(confirm, order_id))
        else:
            time.sleep(max(0.0, start - time.time()))
            futures = [pool.submit(confirm, order_id) for order_id in timed]
        errors = [exc for exc in (future.exception() for future in futures) if exc is not None]
    request_publisher().flush(timeout=30)
    unsent = OutboxEvent.objects.filter(key__in=[str(order_id) for order_id in timed], sent_at__isnull=True).count()
    return {
        "orders": orders,
        "confirmed": len(commits),
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else "",
        "commits": [[order_id, at] for order_id, at in commits.items()],
        "dispatch_late_max_ms": round(max(late) * 1000, 2) if late else 0.0,
        "unsent_after_run": unsent,
        "confirm_call": latency_summary(durations),
    }


def _wait_for_start(go: Path, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if go.exists() and (text := go.read_text().strip()):
            return float(text)
        time.sleep(0.005)
    raise RuntimeError(f"no start time in {go} within {timeout:g} s")


def create_times(*, topic: str) -> dict:
    """Each record's producer timestamp (CreateTime, set by the producer's send), by key, read
    from the topic's start to its end by a consumer of no group."""
    from kafka import KafkaConsumer, TopicPartition

    from kafka_bridge.consumer import consumer_config

    config = {**consumer_config(group_id=None), "enable_auto_commit": False}
    consumer = KafkaConsumer(**config)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(partitions)
    times: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=500).values():
            for record in batch:
                if record.key:
                    times.setdefault(record.key.decode(), record.timestamp / 1000)
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not read {topic} to its end within 120 s")
    consumer.close(autocommit=False)
    return {"times": times}


def outbox_discard() -> dict:
    """Delete the bench database's unsent outbox rows (left by the outbox-only runs), so that
    the relay of the end-to-end run does not spend itself on them."""
    from kafka_bridge.models import OutboxEvent

    return {"deleted": OutboxEvent.objects.filter(sent_at__isnull=True).delete()[0]}


# --- orchestrator side ----------------------------------------------------------------------


def _generate(
    run: DatabaseRun, env: dict[str, str], *, orders: int, threads: int, rate: float | None, consumers
) -> dict:
    """Run the generator processes together and merge what they report."""
    harness, processes = run.context.harness, run.context.sizes.e2e_processes
    go = harness.path("start")
    ready = [harness.path(f"generator-ready-{i}") for i in range(processes)]
    shares = [orders // processes + (1 if i < orders % processes else 0) for i in range(processes)]
    generators = [
        harness.spawn(
            "e2e.generate",
            {
                "orders": share,
                "threads": threads,
                "rate": rate,
                "index": i,
                "processes": processes,
                "ready_path": str(path),
                "go_path": str(go),
            },
            env=env,
        )
        for i, (share, path) in enumerate(zip(shares, ready))
    ]
    wait_for_files(ready, timeout=300, workers=[*generators, *consumers])
    go.write_text(f"{time.time() + 0.2}")
    parts = [generator.wait(timeout=900) for generator in generators]
    commits = [pair for part in parts for pair in part["commits"]]
    times = sorted(at for _, at in commits)
    errors = sum(part["errors"] for part in parts)
    return {
        "orders": orders,
        "processes": processes,
        "threads_per_process": threads,
        "confirmed": len(commits),
        "errors": errors,
        "first_error": next((part["first_error"] for part in parts if part["first_error"]), ""),
        "commits": commits,
        "rate": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
        "dispatch_late_max_ms": max(part["dispatch_late_max_ms"] for part in parts),
        "unsent_after_run": sum(part["unsent_after_run"] for part in parts),
        "confirm_call_p99_ms": max(part["confirm_call"]["p99_ms"] or 0 for part in parts),
    }


def steps(repeats: int) -> int:
    return 2 * repeats


def _drain(run: DatabaseRun, group: str, topic: str, *, expected: int, unsent: int, workers) -> None:
    """Until the group has consumed every event of the topic, the relayed ones included."""
    harness = run.context.harness
    alive = lambda: all(w.alive() for w in workers)  # noqa: E731
    harness.wait_group_caught_up(group, target=expected, timeout=300, alive=alive)
    if unsent:
        # Events the fast path did not get acknowledged wait OUTBOX_RELAY_GRACE_SECONDS (5 s)
        # for the relay; give it that, then drain again.
        time.sleep(8)
    harness.wait_group_caught_up(group, target=harness.end_offset_total(topic), timeout=300, alive=alive)


def _delivery(generated: dict, receipts: dict[int, float]) -> dict:
    commits = dict(generated["commits"])
    latencies = [receipts[order_id] - at for order_id, at in commits.items() if order_id in receipts]
    delivered = [receipts[order_id] for order_id in commits if order_id in receipts]
    span = max(delivered) - min(commits.values()) if delivered else 0.0
    return {
        "latencies": latencies,
        "missing": len(commits) - len(latencies),
        "delivered_rate": len(delivered) / span if span else None,
        **latency_summary(latencies),
    }


# Where an order's time goes, split at the record's producer timestamp (CreateTime, set by
# send(), in whole milliseconds), when the consumer's processor got the record, and at the start
# of its platform call (the attempt log's).
SEGMENTS = {
    "commit_to_send": "commit → producer send (on-commit hook, the hand-off's thread)",
    "send_to_consumer": "producer send → at the consumer (linger, the broker's append, the fetch, the poll)",
    "consumer_to_call": "at the consumer → platform call started (the batch's DB read, waiting for a slot)",
    "call": "platform call started → answered",
}


def _segments(
    generated: dict,
    created: dict[str, float],
    received: dict[str, float],
    started: dict[int, float],
    receipts: dict[int, float],
) -> dict:
    parts: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for order_id, committed in generated["commits"]:
        sent, got = created.get(str(order_id)), received.get(str(order_id))
        if sent is None or got is None or order_id not in started or order_id not in receipts:
            continue
        parts["commit_to_send"].append(sent - committed)
        parts["send_to_consumer"].append(got - sent)
        parts["consumer_to_call"].append(started[order_id] - got)
        parts["call"].append(receipts[order_id] - started[order_id])
    return {name: latency_summary(values) for name, values in parts.items() if values}


def pipeline_run(
    run: DatabaseRun,
    *,
    label: str,
    suffix: str,
    saturation: bool,
    env_overrides: dict[str, str] | None = None,
    concurrency: int | None = None,
) -> dict[str, dict]:
    """One run of the pipeline on a topic and group of its own, and per load its delivery to the
    platform, latencies included. Without `saturation`, the paced load at `sizes.e2e_rate`; with
    it, first the flat-out load (`flat`), whose end-to-end delivered rate is the saturation
    throughput, then the paced load at half that rate (`paced`, with its `offered_rate`).
    `env_overrides` change the processes' settings; `concurrency` is the consumer's
    `--concurrency`."""
    context = run.context
    sizes, harness, progress = context.sizes, context.harness, context.progress
    topic = harness.topic("e2e", dlt=True)
    group = harness.group("e2e")
    env = run.env(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=f"{topic}.DLT",
        ORDER_EXPORT_CONSUMER_GROUP=group,
        KAFKA_PUBLISH_ON_COMMIT="true",
        **(env_overrides or {}),
    )
    harness.run("db.outbox-discard", {}, env=env)
    assigned = harness.path("assigned")
    consumer = harness.spawn(
        "consume.export-consumer",
        {"assigned_path": str(assigned), "concurrency": concurrency, "stamp_received": True},
        env=env,
    )
    relay = harness.command([PYTHON, "manage.py", "run_outbox_relay"], env=env, name="relay")
    workers = [consumer, relay]
    generated: dict[str, dict] = {}
    warmups = WARMUP * sizes.e2e_processes
    expected = 0
    rate = sizes.e2e_rate
    try:
        wait_for_files([assigned], timeout=120, workers=workers)
        if saturation:
            progress.next(
                f"{label}: saturation, {sizes.e2e_processes} x {sizes.saturation_threads} threads confirming flat out {suffix}"
            )
            generated["flat"] = _generate(
                run,
                env,
                orders=sizes.saturation_orders,
                threads=sizes.saturation_threads,
                rate=None,
                consumers=workers,
            )
            expected += warmups + sizes.saturation_orders
            _drain(run, group, topic, expected=expected, unsent=generated["flat"]["unsent_after_run"], workers=workers)
            rate = _half_saturation(run, label, generated["flat"], topic=topic, env=env)
        paced_orders = max(1, int(rate * sizes.e2e_seconds))
        progress.next(f"{label}: {rate:.0f} confirms/s for {sizes.e2e_seconds:g} s, latency to the platform {suffix}")
        generated["paced"] = _generate(
            run, env, orders=paced_orders, threads=sizes.e2e_threads, rate=rate, consumers=workers
        )
        generated["paced"]["offered_rate"] = round(rate, 2)
        expected += warmups + paced_orders
        _drain(run, group, topic, expected=expected, unsent=generated["paced"]["unsent_after_run"], workers=workers)
    finally:
        received = consumer.stop().get("received", {}) if consumer.alive() else {}
        relay.terminate()
    receipts, started = _receipts(run, topic=topic, env=env)
    created = harness.run("e2e.create-times", {"topic": topic}, env=env)["times"]
    outcomes: dict[str, dict] = {}
    for name, load in generated.items():
        if load["errors"]:
            raise BenchError(f"{load['errors']} confirm(s) failed in the {label} run: {load['first_error']}")
        delivery = _delivery(load, receipts)
        if name == "paced":
            delivery["segments"] = _segments(load, created, received, started, receipts)
        if delivery["missing"]:
            context.note(f"{run.vendor} {label} {name}: {delivery['missing']} order(s) never reached the platform")
        outcomes[name] = {**{key: value for key, value in load.items() if key != "commits"}, **delivery}
    harness.delete_topics([topic, f"{topic}.DLT"])
    return outcomes


def _receipts(run: DatabaseRun, *, topic: str, env: dict[str, str]) -> tuple[dict[int, float], dict[int, float]]:
    """(answered, started) per order: its first platform call's, from the attempt log (a repeat
    after a rebalance is not a later delivery)."""
    receipts: dict[int, float] = {}
    started: dict[int, float] = {}
    for order_id, _, began, answered in sorted(
        run.context.harness.run("consume.deliveries", {"topic": topic}, env=env)["calls"], key=lambda call: call[3]
    ):
        receipts.setdefault(order_id, answered)
        started.setdefault(order_id, began)
    return receipts, started


def _half_saturation(run: DatabaseRun, label: str, flat: dict, *, topic: str, env: dict[str, str]) -> float:
    """Half the orders/s the flat-out load delivered to the platform end to end (first commit
    to last platform answer), read from the attempt log as soon as it drained."""
    receipts, _ = _receipts(run, topic=topic, env=env)
    delivered = _delivery(flat, receipts)["delivered_rate"]
    if not delivered:
        raise BenchError(f"the {label} saturation run delivered nothing to the platform: no half of it to offer")
    return delivered / 2


def measure(run: DatabaseRun) -> list[dict]:
    context = run.context
    sizes = context.sizes
    results: dict[str, list[dict]] = defaultdict(list)
    pooled: list[float] = []
    for repeat in range(1, sizes.repeats + 1):
        outcomes = pipeline_run(
            run, label="e2e", suffix=f"({run.vendor}), run {repeat}/{sizes.repeats}", saturation=True
        )
        pooled.extend(outcomes["paced"]["latencies"])
        for name, outcome in outcomes.items():
            results[name].append({key: value for key, value in outcome.items() if key != "latencies"})
    paced_runs, flat_runs = results["paced"], results["flat"]
    offered = median([r["offered_rate"] for r in paced_runs])
    rates = ", ".join(f"{r['offered_rate']:.0f}" for r in paced_runs)
    note = (
        f"half the saturation measured just before in the same run ({rates}/s) "
        f"offered for {sizes.e2e_seconds:g} s by {sizes.e2e_processes} processes x {sizes.e2e_threads} threads"
    )
    segments = [
        figure(
            f"e2e.segment.{name}.{q}",
            label=f"{q}: {label}",
            unit="ms",
            db=run.vendor,
            runs=[r.get("segments", {}).get(name, {}).get(f"{q}_ms") for r in paced_runs],
            note=note,
        )
        for name, label in SEGMENTS.items()
        for q in ("p50", "p99")
    ]
    return [
        *latency_figures(
            HALF_SATURATION,
            label=f"end-to-end {{}} at half the saturation ({offered:.0f}/s)",
            db=run.vendor,
            runs=paced_runs,
            pooled=pooled,
            note=note,
            quantiles=("p50", "p95", "p99"),
        ),
        *segments,
        runs_figure(
            f"{HALF_SATURATION}.offered",
            label="confirms/s offered: half the saturation (delivered orders/s flat out) of the same run",
            unit="confirms/s",
            db=run.vendor,
            runs=paced_runs,
            field="offered_rate",
            note=note,
            with_details=False,
        ),
        runs_figure(
            f"{HALF_SATURATION}.achieved",
            label="confirms/s achieved at the offered load",
            unit="confirms/s",
            db=run.vendor,
            runs=paced_runs,
            note=f"dispatch late by at most {median([r['dispatch_late_max_ms'] for r in paced_runs])} ms",
            with_details=False,
        ),
        runs_figure(
            "e2e.saturation",
            label="saturation: orders/s delivered end to end",
            unit="orders/s",
            db=run.vendor,
            runs=flat_runs,
            field="delivered_rate",
            note=f"{sizes.saturation_orders} orders confirmed flat out by {sizes.e2e_processes} processes x {sizes.saturation_threads} threads, consumer and relay running",
        ),
        runs_figure(
            "e2e.saturation.confirms",
            label="saturation: confirms/s flat out (consumer running)",
            unit="confirms/s",
            db=run.vendor,
            runs=flat_runs,
            with_details=False,
        ),
        runs_figure(
            "e2e.saturation.p99",
            label="saturation: end-to-end p99",
            unit="ms",
            db=run.vendor,
            runs=flat_runs,
            field="p99_ms",
            with_details=False,
        ),
    ]
