"""Where one export's CPU goes: `run_export_consumer`'s loop, built as the command builds it,
draining a backlog against the platform stub over HTTP, measured as CPU seconds of the process
(user + system, `os.times()`) per export, by thread, and, sampled by py-spy, by component.

    python -m bench.profile_consumer prepare --orders 10000
    python -m bench.profile_consumer drain --records 10000 --concurrency 32 --delay 0.02 > c32-1.json
    py-spy record -r 200 --nonblocking --gil --threads -f raw -o c32-1.txt -- \\
        python -m bench.profile_consumer drain --records 10000 --concurrency 32 --delay 0.02
    python -m bench.profile_consumer attribute c32-*.txt --drain c32-1.json

`prepare` confirms orders and publishes their events to ORDER_EXPORT_TOPIC (created with its
DLT; KAFKA_PUBLISH_ON_COMMIT=false is set here). `drain` empties the export tables, starts a
stub of its own (`tests.support.platform_stub`, in a process of its own), and runs the loop in
a new consumer group until it exported `--records` orders; CPU and wall time are taken from its
first export to its last. `attribute` folds py-spy's samples of the thread holding the GIL into
the components below, and with `--drain` scales each thread's samples to that thread's CPU per
export. The environment is the production settings' (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS,
DJANGO_SECRET_KEY, LOG_LEVELS, ...). docs/benchmarks.md, "Where an export's CPU goes".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

# (component, substrings of a frame "function (file:line)" or of the thread's name, which py-spy's
# --threads puts first); the first rule that any frame of a sample's stack matches wins.
COMPONENTS = [
    ("the drain's own watcher (not the consumer)", ["): profile-watch", "(watch)"]),
    ("logging (the line per export)", ["logging/__init__.py", "config/logging.py"]),
    ("HTTP: JSON encoding of the body", ["json/encoder.py"]),
    # The consumer's event loop thread makes the calls (whatever it is doing, asyncio's own frames
    # too); a blocking client's calls would be on worker threads.
    (
        "HTTP: the client on the consumer's event loop (asyncio, httptools, pool, deadline)",
        ["): export-consumer-loop", "exports/platform/"],
    ),
    ("workers: executor, futures, hand-back (a blocking client's)", ["-call_"]),
    ("event decode (JSON, checks)", ["export_record_decode", "exports/events.py", "json/decoder.py"]),
    ("ORM: plan query (prepare)", ["order_exports_plan"]),
    ("ORM: record + attempt log (complete)", ["order_exports_record"]),
    ("ORM: other (connection checks)", ["django/"]),
    ("Kafka: fetch, decode records", ["kafka/consumer/fetcher.py", "kafka/record/"]),
    ("Kafka: commits, heartbeat", ["kafka/coordinator/"]),
    ("Kafka: I/O thread, poll, network", ["kafka/", "): kafka-io"]),
    ("loop: scheduler, dispatcher, commit points", ["kafka_bridge/consumer/", "exports/consumer.py"]),
]
OTHER = "other"


def component(stack: str) -> str:
    """The component of one sample, its frames joined by ";" as py-spy's raw format has them."""
    for name, needles in COMPONENTS:
        if any(needle in stack for needle in needles):
            return name
    return OTHER


def _role(thread: str) -> str:
    return "workers" if "-call_" in thread else thread


def attribute(raws: list[Path], *, drains: list[Path]) -> dict:
    """The samples' shares by component; with `drains` (results of unprofiled drains), µs per
    export: each thread's measured CPU per export (their mean) split as its samples are."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in (line for raw in raws for line in raw.read_text().splitlines()):
        stack, _, count = line.rpartition(" ")
        # The main thread outside the loop (start-up, set-up, the interpreter's exit, seen
        # without a Python frame) is not the drain's; nor is the start before threads have names.
        thread = stack.split(";", 1)[0].partition(": ")[2]
        if stack and (thread not in ("MainThread", "") or "ConsumerLoop.run" in stack):
            counts[_role(thread), component(stack)] += int(count)
    cpu: Counter[str] = Counter()
    for drain_path in drains:
        for role, ms in json.loads(drain_path.read_text())["cpu_ms_per_export_by_thread"].items():
            cpu[role] += ms * 1000 / len(drains)
    by_role = Counter()
    for (role, _), count in counts.items():
        by_role[role] += count
    total = sum(counts.values()) or 1
    us: Counter[str] = Counter()
    for (role, name), count in counts.items():
        us[name] += cpu[role] * count / by_role[role]
    rows = [
        {"component": name, "share": round(sum(n for (_, c), n in counts.items() if c == name) / total, 4)}
        | ({"us": round(us[name], 1)} if drains else {})
        for name, _ in [*COMPONENTS, (OTHER, [])]
    ]
    result = {"samples": total, "rows": rows}
    if drains:
        result["us_total"] = round(sum(us.values()), 1)
        result["us_by_thread"] = {role: round(cpu[role], 1) for role in sorted(cpu)}
        result["unsampled_threads"] = sorted(role for role in cpu if role not in by_role)
    return result


def _setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    import django

    django.setup()


def prepare(orders: int) -> dict:
    _setup({"KAFKA_PUBLISH_ON_COMMIT": "false"})
    from kafka import KafkaAdminClient

    from bench.consume import backlog_prepare
    from exports.topics import export_topic_specs
    from kafka_bridge.connection import connection_config

    admin = KafkaAdminClient(**connection_config(), client_id="orderflow-bench-profile")
    existing = set(admin.list_topics())
    specs = [spec for spec in export_topic_specs() if spec.name not in existing]
    if specs:
        admin.create_topics(
            {
                spec.name: {"num_partitions": spec.partitions, "replication_factor": spec.replication_factor}
                for spec in specs
            },
            wait_for_metadata=True,
        )
    admin.close()
    return backlog_prepare(orders=orders)


def _stub(delay: float) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp(prefix="profile-stub-")) / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.platform_stub", "--port", "0", "--delay", str(delay)]
        + ["--port-file", str(port_file)],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
    )
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the platform stub did not start")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text().strip()}/orders"


def _thread_cpu() -> Counter[str]:
    """CPU seconds (user + system) of this process's threads so far, by role: the worker
    threads together, the others by name. From each thread's CPU clock, which is exact where
    /proc's per-thread times lose up to a clock tick per thread (hundreds of workers)."""
    by_role: Counter[str] = Counter()
    for thread in threading.enumerate():
        try:
            by_role[_role(thread.name)] += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, TypeError):
            continue  # ended meanwhile
    return by_role


def _counted(method, counts: list[int]):
    """`method`, counting its calls and the records they were given."""

    def counted(self, records):
        counts[0] += 1
        counts[1] += len(records)
        return method(self, records)

    return counted


def drain(records: int, concurrency: int, delay: float, gc_settle: bool = True) -> dict:
    stub, url = _stub(delay)
    try:
        group = f"profile-{uuid.uuid4().hex[:8]}"
        _setup({"EXPORT_PLATFORM_URL": url, "ORDER_EXPORT_CONSUMER_GROUP": group})
        from django.db import connection

        from bench.consume import exports_reset
        from exports.consumer import ExportProcessor, export_consumer
        from kafka_bridge.consumer import ConsumerLoop
        from kafka_bridge.runner import StopFlag

        exports_reset()
        # How often the loop polls and calls the processor, and the statements it runs (main thread's connection).
        batches = {"prepare": [0, 0], "complete": [0, 0], "statements": [0], "polls": [0, 0]}
        for name in ("prepare", "complete"):
            setattr(ExportProcessor, name, _counted(getattr(ExportProcessor, name), batches[name]))
        poll = ConsumerLoop._poll

        def poll_counted(self):
            polled = poll(self)
            batches["polls"][0] += 1
            batches["polls"][1] += bool(polled)
            return polled

        ConsumerLoop._poll = poll_counted

        def statement_counted(execute, sql, params, many, context):
            batches["statements"][0] += 1
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(statement_counted)
        stop = StopFlag()
        loop = export_consumer(stop=stop, concurrency=concurrency)
        if gc_settle:
            # As run_export_consumer does once its loop is built.
            from kafka_bridge.runner import garbage_collector_settle

            garbage_collector_settle()
        window: dict[str, tuple[float, os.times_result, Counter[str]]] = {}
        # The garbage collector's passes, timed by its callbacks: (generation, seconds), in the window.
        passes: list[tuple[int, float]] = []
        began: list[float] = []

        def gc_timed(phase: str, info: dict) -> None:
            if phase == "start":
                began[:] = [time.perf_counter()]
            elif began and "first" in window and "last" not in window:
                passes.append((info["generation"], time.perf_counter() - began[0]))

        gc.callbacks.append(gc_timed)

        def watch() -> None:
            while not stop.is_set():
                done = loop.processed_total
                if done and "first" not in window:
                    window["first"] = (time.monotonic(), os.times(), _thread_cpu())
                if done >= records:
                    window["last"] = (time.monotonic(), os.times(), _thread_cpu())
                    stop.set()
                stop.wait(0.01)

        threading.Thread(target=watch, name="profile-watch", daemon=True).start()
        loop.run()
    finally:
        stub.terminate()
        stub.wait(10)
    (t0, c0, threads0), (t1, c1, threads1) = window["first"], window["last"]
    done = loop.processed_total
    user, system = c1.user - c0.user, c1.system - c0.system
    # The first export's own CPU is outside the window: count the exports after it.
    exports = done - 1
    return {
        "concurrency": concurrency,
        "delay_ms": delay * 1000,
        "exported": done,
        "wall_s": round(t1 - t0, 3),
        "exports_per_s": round(exports / (t1 - t0), 1),
        "cpu_user_s": round(user, 3),
        "cpu_sys_s": round(system, 3),
        "cpu_ms_per_export": round((user + system) / exports * 1000, 4),
        "cpu_ms_per_export_by_thread": {
            role: round((threads1[role] - threads0[role]) / exports * 1000, 4) for role in sorted(threads1)
        },
        "max_in_flight": loop.max_in_flight_seen,
        "statements_per_export": round(batches["statements"][0] / done, 3),
        "loop_passes": batches["polls"][0],
        "polls_with_records": batches["polls"][1],
        "prepare_calls": batches["prepare"][0],
        "records_per_prepare": round(batches["prepare"][1] / max(1, batches["prepare"][0]), 2),
        "complete_calls": batches["complete"][0],
        "results_per_complete": round(batches["complete"][1] / max(1, batches["complete"][0]), 2),
        "gc_ms_per_export": round(sum(seconds for _, seconds in passes) / exports * 1000, 4),
        "gc_passes": {g: sum(1 for generation, _ in passes if generation == g) for g in range(3)},
        "gc_gen2_ms_each": round(
            1000 * sum(s for g, s in passes if g == 2) / max(1, sum(1 for g, _ in passes if g == 2)), 1
        ),
        "log_levels": os.environ.get("LOG_LEVELS", ""),
        "gc_settle": gc_settle,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_consumer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="confirm orders and publish their events to ORDER_EXPORT_TOPIC")
    p.add_argument("--orders", type=int, default=10_000)
    d = commands.add_parser("drain", help="export the backlog against a stub; CPU ms per export")
    d.add_argument("--records", type=int, required=True, help="exports to wait for (the backlog's size)")
    d.add_argument("--concurrency", type=int, default=32)
    d.add_argument("--delay", type=float, default=0.02, help="the stub's answer time, seconds")
    d.add_argument(
        "--no-gc-settle",
        dest="gc_settle",
        action="store_false",
        help="leave the garbage collector as Python sets it (run_export_consumer freezes and tunes it)",
    )
    a = commands.add_parser("attribute", help="fold py-spy raw stacks (-f raw) into components")
    a.add_argument("raw", type=Path, nargs="+", help="py-spy record --gil --threads -f raw outputs, summed")
    a.add_argument("--drain", type=Path, action="append", default=[], help="an unprofiled drain's result (JSON)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        result = prepare(args.orders)
    elif args.command == "drain":
        result = drain(args.records, args.concurrency, args.delay, gc_settle=args.gc_settle)
    else:
        result = attribute(args.raw, drains=args.drain)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
