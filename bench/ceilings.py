"""Ceilings: how fast Kafka's own Java tools, raw kafka-python and raw confluent-kafka produce
and consume records of the event's size on this machine and broker.

Every producer gets the project's producer settings (acks=all, idempotence, linger, batch size,
compression from settings). The consumers read one backlog: the records the raw kafka-python
producer wrote. A consumer's rate runs from its first record to its last (group join excluded).
Worker functions run in child processes; `measure` runs in the orchestrator.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from itertools import cycle

from bench.harness import ROOT, BenchError
from bench.plan import Context
from bench.stats import runs_figure

CONSUME_TIMEOUT = 180.0

# --- worker side ----------------------------------------------------------------------------


def _producer_settings() -> dict:
    from django.conf import settings

    return {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.KAFKA_PRODUCER_OPTIONS["linger_ms"],
        "batch.size": settings.KAFKA_PRODUCER_OPTIONS["batch_size"],
        "compression.type": settings.KAFKA_PRODUCER_OPTIONS["compression_type"] or "none",
    }


def kafka_python_produce(*, topic: str, records: int) -> dict:
    """Send `records` event payloads with a KafkaProducer built like the project's."""
    from kafka import KafkaProducer

    from bench.payloads import event_payloads
    from kafka_bridge.outbox.publisher import producer_config

    pairs = event_payloads(min(records, 1000))
    producer = KafkaProducer(**producer_config(timeout_ms=60_000))
    producer.partitions_for(topic)  # metadata before the clock starts
    futures = []
    pair = cycle(pairs)
    started = time.perf_counter()
    for _ in range(records):
        key, value = next(pair)
        futures.append(producer.send(topic, key=key, value=value))
    producer.flush(timeout=300)
    elapsed = time.perf_counter() - started
    failed = sum(1 for future in futures if future.failed())
    producer.close()
    return {
        "records": records,
        "failed": failed,
        "seconds": elapsed,
        "rate": records / elapsed,
        "event_bytes": round(sum(len(v) for _, v in pairs) / len(pairs)),
    }


def kafka_python_consume(*, topic: str, group: str, records: int) -> dict:
    """Read `records` records of `topic` in a new group with the project's consumer settings,
    decoding each value's JSON: the client's ceiling for the export consumer."""
    from kafka import KafkaConsumer

    from kafka_bridge.consumer import consumer_config

    consumer = KafkaConsumer(**consumer_config(group_id=group))
    consumer.subscribe([topic])
    count, first = 0, None
    deadline = time.monotonic() + CONSUME_TIMEOUT
    while count < records:
        for batch in consumer.poll(timeout_ms=500).values():
            for record in batch:
                if first is None:
                    first = time.perf_counter()
                json.loads(record.value)
                count += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"read {count} of {records} records of {topic} in {CONSUME_TIMEOUT:g} s")
    elapsed = time.perf_counter() - first
    consumer.close(autocommit=False)
    return {"records": count, "seconds": elapsed, "rate": count / elapsed if elapsed else None}


def _confluent_base() -> dict:
    from django.conf import settings

    return {"bootstrap.servers": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS), "client.id": "orderflow-bench"}


def confluent_produce(*, topic: str, records: int) -> dict:
    from confluent_kafka import Producer

    from bench.payloads import event_payloads

    pairs = event_payloads(min(records, 1000))
    failed = 0

    def delivered(error, message):
        nonlocal failed
        if error is not None:
            failed += 1

    producer = Producer({**_confluent_base(), **_producer_settings()})
    producer.list_topics(topic, timeout=30)
    pair = cycle(pairs)
    started = time.perf_counter()
    for i in range(records):
        key, value = next(pair)
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(300)
    elapsed = time.perf_counter() - started
    return {"records": records, "failed": failed + remaining, "seconds": elapsed, "rate": records / elapsed}


def confluent_consume(*, topic: str, group: str, records: int) -> dict:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {**_confluent_base(), "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    count, first = 0, None
    deadline = time.monotonic() + CONSUME_TIMEOUT
    while count < records:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            if message.error():
                continue
            if first is None:
                first = time.perf_counter()
            json.loads(message.value())
            count += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"read {count} of {records} records of {topic} in {CONSUME_TIMEOUT:g} s")
    elapsed = time.perf_counter() - first
    consumer.close()
    return {"records": count, "seconds": elapsed, "rate": count / elapsed if elapsed else None}


# --- orchestrator side: Kafka's own tools ---------------------------------------------------

JAVA_OPTS = ["-Xms256m", "-Xmx768m"]
_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) (?P<steady>steady state )?records sent, (?P<rate>[\d.]+) records/sec .*?(?P<avg>[\d.]+) ms avg latency.*?"
    r"(?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th"
)


def _java(tool: str, args: list[str], *, timeout: float) -> str:
    classpath = str(ROOT / "kafka" / "lib" / "*")
    try:
        done = subprocess.run(
            ["java", *JAVA_OPTS, "-cp", classpath, f"org.apache.kafka.tools.{tool}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{tool} did not finish within {timeout:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{tool} exited with {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def java_available() -> bool:
    return shutil.which("java") is not None and any((ROOT / "kafka" / "lib").glob("kafka-tools-*.jar"))


def java_produce(*, bootstrap: str, topic: str, records: int, payload_file: str) -> dict:
    """org.apache.kafka.tools.ProducerPerformance with the event payloads and the project's
    producer settings (records without a key: the tool sets none). The rate is the steady
    state's, after a fifth of the records warmed the JVM up."""
    from django.conf import settings

    props = [
        f"{name}={str(value).lower() if isinstance(value, bool) else value}"
        for name, value in _producer_settings().items()
    ]
    out = _java(
        "ProducerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--throughput",
            "-1",
            "--warmup-records",
            str(max(1, records // 5)),
            "--payload-file",
            payload_file,
            "--command-property",
            *props,
            f"client.id={settings.KAFKA_CLIENT_ID}-bench",
        ],
        timeout=600,
    )
    summary = sorted(_PRODUCER_SUMMARY.finditer(out), key=lambda m: m["steady"] is not None)
    if not summary:
        raise BenchError(f"ProducerPerformance printed no summary: {out[-1000:]}")
    last = summary[-1]
    return {
        "records": int(last["records"]),
        "rate": float(last["rate"]),
        "avg_latency_ms": float(last["avg"]),
        "p99_latency_ms": float(last["p99"]),
    }


def java_consume(*, bootstrap: str, topic: str, group: str, records: int) -> dict:
    """org.apache.kafka.tools.ConsumerPerformance; the rate is fetch.nMsg.sec (group join
    excluded, like the Python consumers' first-to-last rate)."""
    out = _java(
        "ConsumerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--num-records",
            str(records),
            "--timeout",
            str(int(CONSUME_TIMEOUT * 1000)),
        ],
        timeout=CONSUME_TIMEOUT + 60,
    )
    lines = [line for line in out.splitlines() if line.strip()]
    header_index = next((i for i, line in enumerate(lines) if line.startswith("start.time")), None)
    if header_index is None or header_index + 1 >= len(lines):
        raise BenchError(f"ConsumerPerformance printed no result: {out[-1000:]}")
    names = [name.strip() for name in lines[header_index].split(",")]
    values = [value.strip() for value in lines[header_index + 1].split(",")]
    row = dict(zip(names, values))
    return {
        "records": int(row["data.consumed.in.nMsg"]),
        "rate": float(row["fetch.nMsg.sec"]),
        "rate_with_join": float(row["nMsg.sec"]),
        "rebalance_ms": float(row["rebalance.time.ms"]),
    }


# --- orchestrator side: the measurement -----------------------------------------------------

LABELS = {
    "kafka-python.produce": "raw kafka-python produce",
    "kafka-python.consume": "raw kafka-python consume",
    "confluent.produce": "confluent-kafka produce",
    "confluent.consume": "confluent-kafka consume",
    "java.produce": "Kafka ProducerPerformance (Java)",
    "java.consume": "Kafka ConsumerPerformance (Java)",
}


def available_parts(context: Context, parts: tuple[str, ...]) -> tuple[str, ...]:
    kept = ["kafka-python"]  # the others read its backlog, so it always runs
    if "confluent" in parts:
        if importlib.util.find_spec("confluent_kafka") is None:
            context.note(
                "confluent-kafka is not installed (pip install -r requirements-bench.txt): its ceilings are skipped"
            )
        else:
            kept.append("confluent")
    if "java" in parts:
        if not java_available():
            context.note(
                "java or kafka/lib/kafka-tools-*.jar is missing (make kafka-up resolves it): Kafka's own ceilings are skipped"
            )
        else:
            kept.append("java")
    return tuple(kept)


def steps(parts: tuple[str, ...], repeats: int) -> int:
    return 2 * len(parts) * repeats


def measure(context: Context, parts: tuple[str, ...]) -> list[dict]:
    from django.conf import settings

    harness, sizes, progress = context.harness, context.sizes, context.progress
    env = harness.env()
    bootstrap = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
    records = sizes.ceiling_records
    payload_file = harness.path("payloads.txt")
    payloads = harness.run("payloads.write", {"path": str(payload_file)}, env=env)
    results: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(1, sizes.repeats + 1):
        run = f", run {repeat}/{sizes.repeats}"
        first_topic = len(harness.topics)
        backlog = harness.topic("ceiling-kafka-python")
        progress.next(f"ceilings: {LABELS['kafka-python.produce']}{run}")
        results["kafka-python.produce"].append(
            harness.run("ceilings.kafka-python-produce", {"topic": backlog, "records": records}, env=env)
        )
        progress.next(f"ceilings: {LABELS['kafka-python.consume']}{run}")
        results["kafka-python.consume"].append(
            harness.run(
                "ceilings.kafka-python-consume",
                {"topic": backlog, "group": harness.group("ceiling-kp"), "records": records},
                env=env,
            )
        )
        if "confluent" in parts:
            progress.next(f"ceilings: {LABELS['confluent.produce']}{run}")
            topic = harness.topic("ceiling-confluent")
            results["confluent.produce"].append(
                harness.run("ceilings.confluent-produce", {"topic": topic, "records": records}, env=env)
            )
            progress.next(f"ceilings: {LABELS['confluent.consume']}{run}")
            results["confluent.consume"].append(
                harness.run(
                    "ceilings.confluent-consume",
                    {"topic": backlog, "group": harness.group("ceiling-ck"), "records": records},
                    env=env,
                )
            )
        if "java" in parts:
            progress.next(f"ceilings: {LABELS['java.produce']}{run}")
            topic = harness.topic("ceiling-java")
            results["java.produce"].append(
                java_produce(bootstrap=bootstrap, topic=topic, records=records, payload_file=str(payload_file))
            )
            progress.next(f"ceilings: {LABELS['java.consume']}{run}")
            results["java.consume"].append(
                java_consume(bootstrap=bootstrap, topic=backlog, group=harness.group("ceiling-java"), records=records)
            )
        harness.delete_topics(harness.topics[first_topic:])
    return [
        runs_figure(
            f"ceilings.{key}",
            label=LABELS[key],
            unit="records/s",
            db=None,
            runs=runs,
            note=f"{records} records of {payloads['event_bytes']} bytes",
        )
        for key, runs in results.items()
    ]
