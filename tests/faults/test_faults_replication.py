"""Replication, as Kafka's leader-follower design promises: on a 3-node cluster (replication
factor 3, min.insync.replicas=2, acks=all), SIGKILLing the leader of a partition while events
are produced loses none of the events the producer saw acknowledged."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from contextlib import closing

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from tests.support.cluster import KafkaCluster
from tests.support.figures import report_figures
from tests.support.helpers import wait_until

# Kafka alone: a cluster of its own, a producer and a consumer; no database.
pytestmark = [pytest.mark.kafka, pytest.mark.database_independent]

EVENTS = 3000
# Paced, so that producing spans the kill and the fail-over after it (~12 s in all) instead of
# finishing in the second it takes to fill the producer's buffer.
EVENTS_PER_SECOND = 250
PARTITIONS = 3


@pytest.fixture
def kafka_cluster(tmp_path):
    with KafkaCluster(tmp_path / "cluster") as cluster:
        yield cluster


class Ledger:
    """What the producer was told about each event; the callbacks run on its I/O thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: dict[str, int] = {}  # event id -> partition
        self.failed: dict[str, str] = {}  # event id -> error

    def ack(self, event_id: str, metadata) -> None:
        with self.lock:
            self.acked[event_id] = metadata.partition

    def fail(self, event_id: str, error: BaseException) -> None:
        with self.lock:
            self.failed[event_id] = repr(error)

    def settled(self) -> int:
        with self.lock:
            return len(self.acked) + len(self.failed)


def produce_paced(producer: KafkaProducer, topic: str, ledger: Ledger, stop: threading.Event) -> None:
    started = time.monotonic()
    for i in range(EVENTS):
        if stop.wait(max(0.0, started + i / EVENTS_PER_SECOND - time.monotonic())):
            return
        event_id = f"event-{i:05d}"
        try:
            future = producer.send(topic, key=f"key-{i % 64}".encode(), value=event_id.encode())
        except KafkaError as exc:  # e.g. no metadata within max_block_ms
            ledger.fail(event_id, exc)
            continue
        finally:
            ledger.sent += 1
        future.add_callback(ledger.ack, event_id)
        future.add_errback(ledger.fail, event_id)


def partition_leaders(cluster: KafkaCluster, topic: str, *, nodes: list[int] | None = None) -> dict[int, dict]:
    """{partition: metadata} as one of `nodes` sees it; {} while none answers."""
    try:
        with closing(cluster.admin(nodes=nodes, timeout_ms=5000)) as admin:
            (described,) = admin.describe_topics([topic])
    except KafkaError:
        return {}
    return {p["partition_index"]: p for p in described["partitions"]}


def read_all(cluster: KafkaCluster, topic: str, *, nodes: list[int]) -> list[str]:
    """Every value in `topic`, read from the beginning up to the end offsets, from `nodes`."""
    consumer = KafkaConsumer(**cluster.client_config(nodes=nodes), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        values: list[str] = []

        def caught_up() -> bool:
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(record.value.decode() for record in batch)
            return all(consumer.position(tp) >= end[tp] for tp in partitions)

        wait_until(caught_up, timeout=60, message=lambda: f"read {len(values)} of {sum(end.values())} records")
        return values
    finally:
        consumer.close()


def test_acknowledged_events_survive_sigkill_of_a_partition_leader(kafka_cluster):
    cluster = kafka_cluster
    topic = f"replication-{uuid.uuid4().hex[:8]}"
    with closing(cluster.admin()) as admin:
        admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 3, "configs": {"min.insync.replicas": "2"}}},
            wait_for_metadata=True,
        )
    wait_until(
        lambda: (
            (leaders := partition_leaders(cluster, topic)) and all(len(p["isr_nodes"]) == 3 for p in leaders.values())
        ),
        timeout=30,
        message="the new topic's partitions did not get 3 in-sync replicas",
    )

    producer = KafkaProducer(
        **cluster.client_config(),
        acks="all",
        enable_idempotence=True,
        retries=2_147_483_647,
        delivery_timeout_ms=60_000,
        request_timeout_ms=5_000,
        linger_ms=5,
    )
    ledger = Ledger()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            produce_paced(producer, topic, ledger, stop)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run, name="replication-producer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: len(ledger.acked) >= EVENTS // 3,
            timeout=30,
            message=lambda: f"only {len(ledger.acked)} of {EVENTS} events acknowledged",
        )
        killed = wait_until(
            lambda: (p0 := partition_leaders(cluster, topic).get(0)) and p0["leader_id"] >= 0 and p0["leader_id"],
            timeout=15,
            message="partition 0 has no leader to kill",
        )
        cluster.kill(killed)
        sent_at_kill, acked_at_kill = ledger.sent, len(ledger.acked)
        survivors = cluster.alive

        wait_until(lambda: not thread.is_alive(), timeout=60, message="the producer thread did not finish")
        producer.flush(timeout=90)
        wait_until(
            lambda: ledger.settled() == ledger.sent,
            timeout=10,
            message=lambda: f"{ledger.sent - ledger.settled()} sends never completed",
        )
    finally:
        stop.set()
        thread.join(timeout=10)
        producer.close(timeout=5)
    assert not errors, f"the producer thread crashed: {errors[0]!r}"

    new_leader = wait_until(
        lambda: (
            (p0 := partition_leaders(cluster, topic, nodes=survivors).get(0))
            and p0["leader_id"] not in (killed, -1)
            and p0["leader_id"]
        ),
        timeout=30,
        message=f"partition 0 got no leader other than the killed node {killed}",
    )
    consumed = Counter(read_all(cluster, topic, nodes=survivors))

    acked = set(ledger.acked)
    lost = sorted(acked - consumed.keys())
    duplicated = sum(count - 1 for count in consumed.values() if count > 1)
    report_figures(
        "leader of partition 0 SIGKILLed",
        produced=ledger.sent,
        acknowledged=len(acked),
        killed_node=killed,
        sent_before_the_kill=sent_at_kill,
        acknowledged_before_the_kill=acked_at_kill,
        failed=len(ledger.failed),
        lost=len(lost),
        duplicated=duplicated,
        consumed=sum(consumed.values()),
        new_leader_node=new_leader,
    )
    assert sent_at_kill < EVENTS, "the producer had finished before the leader was killed"
    assert not lost, f"{len(lost)} acknowledged events were lost, e.g. {lost[:5]}"
    assert duplicated == 0, f"{duplicated} events were consumed more than once (idempotence)"
    # Not vacuous: nearly everything was acknowledged, and a good part of it after the kill.
    assert len(acked) >= EVENTS * 0.9, f"only {len(acked)} of {EVENTS} acknowledged: {list(ledger.failed.values())[:3]}"
    assert len(acked) - acked_at_kill >= EVENTS // 3
    assert new_leader != killed
