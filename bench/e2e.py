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

On PostgreSQL the same pipeline runs a second time in each repeat with
`OUTBOX_PUBLISHER=debezium` (bench.debezium): no on-commit send and no relay, Debezium's outbox
EventRouter on a Kafka Connect worker of the bench's own publishes the rows from the
write-ahead log. Its figures are the relay's keys with `e2e.debezium.` for `e2e.`
(`e2e.debezium.segment.commit_to_send.p99`, ...). There the record's CreateTime is the time the
connector read the row's change from the WAL (the change event's `ts_ms`, which the EventRouter
gives the record), the counterpart of the relay's send(): both are taken before the producer's
linger and the broker's append.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import debezium
from bench.consume import wait_for_files
from bench.harness import PYTHON, BenchError
from bench.plan import DatabaseRun
from bench.stats import figure, latency_figures, latency_summary, median, runs_figure

WARMUP = 5
# The key prefix of the latency figures at half the saturation throughput.
HALF_SATURATION = "e2e.half_saturation"
# Who publishes the outbox rows, and the infix of its figures' keys (e2e<infix>.saturation).
PUBLISHERS = {"relay": "", "debezium": ".debezium"}

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
    from django.conf import settings
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
    if settings.OUTBOX_PUBLISHER == "relay":
        request_publisher().flush(timeout=30)
        unsent = OutboxEvent.objects.filter(key__in=[str(order_id) for order_id in timed], sent_at__isnull=True).count()
    else:
        unsent = 0  # Debezium marks no row sent, and publishes every one of them
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


def steps(repeats: int, *, debezium: bool = False) -> int:
    """Progress steps of one database's e2e group; with the Debezium runs, theirs and the
    Connect worker's start."""
    return 2 * repeats + ((2 * repeats + 1) if debezium else 0)


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


def _drain_exported(run: DatabaseRun, topic: str, *, expected: int, workers, stalled_after: float = 60.0) -> None:
    """Until `expected` orders of the topic were exported (Debezium's runs). Not by offsets:
    Connect's producer writes in transactions, and each one's commit marker takes an offset
    that no consumer ever commits past, so offsets overstate the records and the group never
    reaches the end offset. Counted in the attempt log, read from the bench database."""
    import psycopg

    from exports.models import ExportAttempt

    query = f'SELECT count(DISTINCT order_id) FROM "{ExportAttempt._meta.db_table}" WHERE topic = %s AND outcome = %s'
    deadline, last, moved = time.monotonic() + 300, -1, time.monotonic()
    with psycopg.connect(run.db.url, autocommit=True) as conn:
        while True:
            done = conn.execute(query, [topic, ExportAttempt.Outcome.EXPORTED.value]).fetchone()[0]
            now = time.monotonic()
            if done >= expected:
                return
            if not all(w.alive() for w in workers):
                raise BenchError(f"the consumer of {topic} died after exporting {done} of {expected} orders")
            if done != last:
                last, moved = done, now
            elif now - moved > stalled_after:
                raise BenchError(
                    f"nothing exported from {topic} for {stalled_after:g} s, at {done} of {expected} orders"
                )
            if now > deadline:
                raise BenchError(f"{done} of {expected} orders of {topic} exported within 300 s")
            time.sleep(0.2)


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
# The same segments with Debezium publishing: its record's CreateTime is the change event's
# `ts_ms`, when the connector read the row's change from the WAL.
DEBEZIUM_SEGMENTS = {
    **SEGMENTS,
    "commit_to_send": "commit → record made by Debezium (WAL sent, decoded, the connector's poll)",
    "send_to_consumer": "record made → at the consumer (Connect's producer, its transaction's commit, the fetch, "
    "the poll)",
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
    publisher: str = "relay",
    paced_rate: float | None = None,
) -> dict[str, dict]:
    """One run of the pipeline on a topic and group of its own, and per load its delivery to the
    platform, latencies included. Without `saturation`, the paced load at `sizes.e2e_rate`; with
    it, first the flat-out load (`flat`), whose end-to-end delivered rate is the saturation
    throughput, then the paced load at half that rate (`paced`, with its `offered_rate`).
    `env_overrides` change the processes' settings; `concurrency` is the consumer's
    `--concurrency`. With `publisher="debezium"` (PostgreSQL, `context.connect` started) the
    outbox connector publishes instead of the on-commit send and the relay: registered for the
    run, streaming before the first confirm, removed after it with its slot. `paced_rate`, with
    `saturation`, offers that rate after the flat-out load instead of half its saturation (the
    same load as another run's)."""
    context = run.context
    harness = context.harness
    topic = harness.topic("e2e", dlt=True)
    group = harness.group("e2e")
    publishing = (
        {"KAFKA_PUBLISH_ON_COMMIT": "true"}
        if publisher == "relay"
        # The settings refuse KAFKA_PUBLISH_ON_COMMIT=true beside Debezium: unset.
        else {"OUTBOX_PUBLISHER": "debezium", "KAFKA_PUBLISH_ON_COMMIT": None, "KAFKA_CONNECT_URL": context.connect.url}
    )
    env = run.env(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=f"{topic}.DLT",
        ORDER_EXPORT_CONSUMER_GROUP=group,
        **publishing,
        **(env_overrides or {}),
    )
    harness.run("db.outbox-discard", {}, env=env)
    connector = debezium.names(harness.run_id) if publisher == "debezium" else None
    try:
        if connector is not None:
            harness.run("e2e.debezium-start", {"names": connector}, env=env, timeout=300)
        return _pipeline(
            run,
            env=env,
            topic=topic,
            group=group,
            label=label,
            suffix=suffix,
            saturation=saturation,
            concurrency=concurrency,
            relay=publisher == "relay",
            paced_rate=paced_rate,
        )
    finally:
        if connector is not None:
            try:
                harness.run("e2e.debezium-stop", {"names": connector}, env=env, timeout=120)
            except BenchError as exc:
                context.note(f"could not remove the {label} connector: {str(exc).splitlines()[0]}")


def _pipeline(
    run: DatabaseRun,
    *,
    env: dict[str, str],
    topic: str,
    group: str,
    label: str,
    suffix: str,
    saturation: bool,
    concurrency: int | None,
    relay: bool,
    paced_rate: float | None,
) -> dict[str, dict]:
    context = run.context
    sizes, harness, progress = context.sizes, context.harness, context.progress
    assigned = harness.path("assigned")
    consumer = harness.spawn(
        "consume.export-consumer",
        {"assigned_path": str(assigned), "concurrency": concurrency, "stamp_received": True},
        env=env,
    )
    workers = [consumer]
    if relay:
        workers.append(harness.command([PYTHON, "manage.py", "run_outbox_relay"], env=env, name="relay"))
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
            if relay:
                _drain(
                    run, group, topic, expected=expected, unsent=generated["flat"]["unsent_after_run"], workers=workers
                )
            else:
                _drain_exported(run, topic, expected=expected, workers=workers)
            rate = paced_rate or _half_saturation(run, label, generated["flat"], topic=topic, env=env)
        paced_orders = max(1, int(rate * sizes.e2e_seconds))
        progress.next(f"{label}: {rate:.0f} confirms/s for {sizes.e2e_seconds:g} s, latency to the platform {suffix}")
        generated["paced"] = _generate(
            run, env, orders=paced_orders, threads=sizes.e2e_threads, rate=rate, consumers=workers
        )
        generated["paced"]["offered_rate"] = round(rate, 2)
        expected += warmups + paced_orders
        if relay:
            _drain(run, group, topic, expected=expected, unsent=generated["paced"]["unsent_after_run"], workers=workers)
        else:
            _drain_exported(run, topic, expected=expected, workers=workers)
    finally:
        received = consumer.stop().get("received", {}) if consumer.alive() else {}
        for worker in workers[1:]:
            worker.terminate()
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
    """The relay's figures, and on PostgreSQL with `context.debezium` Debezium's beside them at
    the same load: in each repeat the relay's run, then Debezium's at the same sizes, its paced
    load at the rate the relay's was offered (half the relay's saturation), so that their
    latencies compare. A failed Debezium run is an error of its own; the relay's figures are
    kept."""
    context = run.context
    sizes = context.sizes
    publishers = ["relay", "debezium"] if context.debezium and run.vendor == "postgresql" else ["relay"]
    results: dict[str, dict[str, list[dict]]] = {p: defaultdict(list) for p in publishers}
    pooled: dict[str, list[float]] = {p: [] for p in publishers}
    for repeat in range(1, sizes.repeats + 1):
        suffix = f"({run.vendor}), run {repeat}/{sizes.repeats}"
        outcomes = {"relay": pipeline_run(run, label="e2e", suffix=suffix, saturation=True)}
        if "debezium" in publishers:
            found = _debezium_run(run, suffix=suffix, rate=outcomes["relay"]["paced"]["offered_rate"])
            if found is None:
                publishers.remove("debezium")
            else:
                outcomes["debezium"] = found
        for publisher, runs in outcomes.items():
            pooled[publisher].extend(runs["paced"]["latencies"])
            for name, outcome in runs.items():
                results[publisher][name].append({key: value for key, value in outcome.items() if key != "latencies"})
    found = _figures(run, results=results["relay"], pooled=pooled["relay"], publisher="relay")
    if results.get("debezium", {}).get("paced"):
        found += _figures(run, results=results["debezium"], pooled=pooled["debezium"], publisher="debezium")
    return found


def _debezium_run(run: DatabaseRun, *, suffix: str, rate: float) -> dict[str, dict] | None:
    """One Debezium pipeline run, its paced load at `rate`, the Connect worker started first
    when it is not yet; None (an error, a note) when the worker or the run failed: no Debezium
    run follows."""
    context = run.context
    try:
        if context.connect is None:
            context.progress.next("e2e debezium: starting a Kafka Connect worker (connect/worker.sh up)")
            context.connect = debezium.ConnectWorker.start(context.harness)
        return pipeline_run(
            run, label="e2e debezium", suffix=suffix, saturation=True, publisher="debezium", paced_rate=rate
        )
    except BenchError as exc:
        context.error(f"e2e debezium ({run.vendor}): {exc}")
        return None


def _figures(run: DatabaseRun, *, results: dict[str, list[dict]], pooled: list[float], publisher: str) -> list[dict]:
    """The figures of one publisher's runs: the relay's keys `e2e.…`, Debezium's `e2e.debezium.…`."""
    sizes = run.context.sizes
    prefix = f"e2e{PUBLISHERS[publisher]}"
    half = f"{prefix}{HALF_SATURATION.removeprefix('e2e')}"
    by = "" if publisher == "relay" else "Debezium: "
    paced_runs, flat_runs = results["paced"], results["flat"]
    offered = median([r["offered_rate"] for r in paced_runs])
    rates = ", ".join(f"{r['offered_rate']:.0f}" for r in paced_runs)
    whose = "" if publisher == "relay" else "the relay's "
    note = (
        f"{whose}half the saturation measured just before in the same run ({rates}/s) "
        f"offered for {sizes.e2e_seconds:g} s by {sizes.e2e_processes} processes x {sizes.e2e_threads} threads"
    )
    running = "consumer and relay running" if publisher == "relay" else "consumer and Connect worker running"
    segments = [
        figure(
            f"{prefix}.segment.{name}.{q}",
            label=f"{by}{q}: {label}",
            unit="ms",
            db=run.vendor,
            runs=[r.get("segments", {}).get(name, {}).get(f"{q}_ms") for r in paced_runs],
            note=note,
        )
        for name, label in (SEGMENTS if publisher == "relay" else DEBEZIUM_SEGMENTS).items()
        for q in ("p50", "p99")
    ]
    return [
        *latency_figures(
            half,
            label=f"{by}end-to-end {{}} at {whose}half the saturation ({offered:.0f}/s)",
            db=run.vendor,
            runs=paced_runs,
            pooled=pooled,
            note=note,
            quantiles=("p50", "p95", "p99"),
        ),
        *segments,
        runs_figure(
            f"{half}.offered",
            label=f"{by}confirms/s offered: {whose}half the saturation (delivered orders/s flat out) of the same run",
            unit="confirms/s",
            db=run.vendor,
            runs=paced_runs,
            field="offered_rate",
            note=note,
            with_details=False,
        ),
        runs_figure(
            f"{half}.achieved",
            label=f"{by}confirms/s achieved at the offered load",
            unit="confirms/s",
            db=run.vendor,
            runs=paced_runs,
            note=f"dispatch late by at most {median([r['dispatch_late_max_ms'] for r in paced_runs])} ms",
            with_details=False,
        ),
        runs_figure(
            f"{prefix}.saturation",
            label=f"{by}saturation: orders/s delivered end to end",
            unit="orders/s",
            db=run.vendor,
            runs=flat_runs,
            field="delivered_rate",
            note=f"{sizes.saturation_orders} orders confirmed flat out by {sizes.e2e_processes} processes x "
            f"{sizes.saturation_threads} threads, {running}",
        ),
        runs_figure(
            f"{prefix}.saturation.confirms",
            label=f"{by}saturation: confirms/s flat out (consumer running)",
            unit="confirms/s",
            db=run.vendor,
            runs=flat_runs,
            with_details=False,
        ),
        runs_figure(
            f"{prefix}.saturation.p99",
            label=f"{by}saturation: end-to-end p99",
            unit="ms",
            db=run.vendor,
            runs=flat_runs,
            field="p99_ms",
            with_details=False,
        ),
    ]
