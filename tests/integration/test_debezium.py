"""OUTBOX_PUBLISHER=debezium on the real broker, a real Kafka Connect worker with Debezium's
PostgreSQL connector and the project's PostgreSQL with logical decoding: the records are the
relay's byte for byte, a resend publishes again, the operator sees the connector and a stall,
and a SIGKILLed worker loses and doubles nothing (exactly-once source support).

One worker and one connector serve the module; each test routes its rows to topics of its own.
Marked `serial` (the worker would otherwise be started once per parallel process) and skipped
where the database is not PostgreSQL with wal_level=logical."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from opentelemetry import context
from opentelemetry.propagate import extract

from exports.readiness import export_consumer_readiness
from kafka_bridge.debezium.status import outbox_connector_status
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import OutboxPublisher
from kafka_bridge.outbox.store import outbox_resend
from tests.support.connect import connect_worker_started, debezium_connector_registered, logical_decoding_or_skip
from tests.support.factories import order_factory
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, end_offsets, read_records
from tests.support.tracing import SpanRecorder, traceparent

pytestmark = [pytest.mark.kafka, pytest.mark.serial, pytest.mark.debezium]

COMMITTED = {"isolation_level": "read_committed"}


@pytest.fixture(scope="module")
def connect_worker(tmp_path_factory, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        logical_decoding_or_skip()
    yield from connect_worker_started(tmp_path_factory.mktemp("connect"))


@pytest.fixture(scope="module")
def debezium(connect_worker, django_db_blocker):
    with django_db_blocker.unblock():
        yield from debezium_connector_registered(connect_worker)


def event_id_of(record) -> str:
    return dict(record.headers)["event_id"].decode()


def shape(record) -> tuple:
    """What a consumer reads of a record, but its offset and timestamp."""
    return record.partition, record.key, record.value, list(record.headers)


def probe_row(*, topic: str, payload: str) -> OutboxEvent:
    """An outbox row written straight to the table, for a topic no app registered."""
    event_id = uuid.uuid4()
    return OutboxEvent.objects.create(
        event_id=event_id,
        event_type="Probe",
        topic=topic,
        key="k",
        payload=payload,
        headers=[["event_type", "Probe"], ["event_id", str(event_id)]],
    )


def confirmed_in_a_trace(*, customer_id: str, tracestate: str):
    """An order confirmed inside a trace continued from a caller with a tracestate."""
    token = context.attach(extract({"traceparent": traceparent(), "tracestate": tracestate}))
    try:
        return order_factory(customer_id=customer_id, confirmed=True)
    finally:
        context.detach(token)


def test_records_are_the_relays_byte_for_byte_and_an_update_publishes_nothing(
    debezium, export_topics, transactional_db, kafka_topic_factory
):
    topic, _ = export_topics
    recorder = SpanRecorder().start()
    try:
        for i in range(3):
            confirmed_in_a_trace(customer_id=f"zoë-☃-{i}", tracestate=f"orderflow=t{i}")
    finally:
        recorder.stop()
    for i in range(3):
        order_factory(customer_id=f"c-{i}", confirmed=True)
    rows = list(OutboxEvent.objects.order_by("id"))
    assert len(rows) == 6
    assert [sorted(dict(row.headers)) for row in rows] == [
        ["event_id", "event_type", "traceparent", "tracestate"]
    ] * 3 + [["event_id", "event_type"]] * 3
    assert all(row.sent_at is None for row in rows)  # nothing sent on commit in this mode

    published = read_records(topic, expected=6, timeout=60, **COMMITTED)

    # The Python relay's records of the same rows, on a topic like the first. The UPDATE that
    # points the rows at it is no record for Debezium (its publication carries INSERTs alone).
    relay_topic = kafka_topic_factory(partitions=3, prefix="relay")
    OutboxEvent.objects.update(topic=relay_topic)
    publisher = OutboxPublisher(timeout=10)
    try:
        assert publisher.publish(list(OutboxEvent.objects.order_by("id"))).sent == 6
    finally:
        publisher.close()
    relayed = read_records(relay_topic, expected=6)

    assert {event_id_of(r): shape(r) for r in published} == {event_id_of(r): shape(r) for r in relayed}
    assert sorted(event_id_of(r) for r in published) == sorted(str(row.event_id) for row in rows)
    assert any("☃".encode() in r.value for r in published)
    wait_until(lambda: (outbox_connector_status()["backlog"] or {}).get("unpublished") == 0, timeout=30)
    # Past the UPDATE (and the connector's commit of it): still the six records, no seventh.
    assert [shape(r) for r in read_records(topic, expected=6)] == [shape(r) for r in published]


def test_a_resent_event_is_published_again_with_the_same_bytes(debezium, export_topics, transactional_db, capsys):
    topic, _ = export_topics
    order = order_factory(confirmed=True)
    [first] = read_records(topic, expected=1, timeout=60, **COMMITTED)
    call_command("order_trace", str(order.pk))
    assert "published by Debezium, which marks no row sent" in capsys.readouterr().out
    event_id = OutboxEvent.objects.get(key=str(order.pk)).event_id

    assert outbox_resend(event_ids=[event_id]) == 1

    records = read_records(topic, expected=2, timeout=60, **COMMITTED)
    assert [shape(r) for r in records] == [shape(first)] * 2
    assert OutboxEvent.objects.filter(event_id=event_id).count() == 1


def test_status_shows_the_connector_and_a_row_waiting_for_a_missing_topic_within_seconds(
    debezium, export_topics, export_group, transactional_db, kafka_admin, unique_name, capsys, client
):
    topic, _ = export_topics
    order_factory(confirmed=True)
    read_records(topic, expected=1, timeout=60, **COMMITTED)
    existing = lambda: set(kafka_admin.list_topics())  # noqa: E731
    status = outbox_connector_status(existing_topics=existing(), max_age_seconds=2)
    assert status["state"] == "RUNNING"
    assert status["problems"] == []
    assert status["slot"]["active"] is True

    missing = unique_name("missing")
    probe_row(topic=missing, payload="{}")
    order_factory(confirmed=True)  # behind the stalled row

    def stalled() -> list[str]:
        return outbox_connector_status(existing_topics=existing(), max_age_seconds=2)["problems"]

    # Named at once; and the backlog's age passes its bound (2 s) while the row holds it back.
    assert any(missing in p for p in stalled())
    wait_until(
        lambda: any("oldest unpublished outbox event" in p for p in stalled()),
        timeout=15,
        message=lambda: f"the stall never showed in the backlog's age: {stalled()}",
    )

    call_command("kafka_status", "--topic", topic)
    text = capsys.readouterr().out
    assert f"outbox connector {debezium['DEBEZIUM_CONNECTOR_NAME']}" in text and "RUNNING" in text
    readiness = export_consumer_readiness(max_lag=1000, max_outbox_age=2)
    assert any(p.endswith(f"topic(s) that do not exist: {missing}") for p in readiness.problems), readiness.problems
    client.force_login(get_user_model().objects.create_user(username="ops", password="pw", is_staff=True))
    html = client.get("/admin/kafka-status/").content.decode()
    assert '<strong id="connector-state">RUNNING</strong>' in html
    assert f"outbox rows wait for topic(s) that do not exist: {missing}" in html

    # The topic appears: the stalled row and the one behind it go out, and the problems clear.
    kafka_admin.create_topics({missing: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    try:
        assert len(read_records(missing, expected=1, timeout=60, **COMMITTED)) == 1
        read_records(topic, expected=2, timeout=60, **COMMITTED)
        wait_until(lambda: not stalled(), timeout=30, message=lambda: f"still {stalled()}")
    finally:
        kafka_admin.delete_topics([missing])


def test_worker_sigkilled_mid_burst_loses_nothing_and_doubles_nothing(
    debezium, connect_worker, export_topics, export_group, running_export_consumer, kafka_admin
):
    topic, _ = export_topics
    total = 1500
    failures: list[BaseException] = []

    def confirm_all() -> None:
        from django.db import connection

        try:
            for i in range(total):
                order_factory(customer_id=f"burst-{i}", confirmed=True)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    confirming = threading.Thread(target=confirm_all, name="confirm-burst")
    confirming.start()
    try:
        wait_until(lambda: sum(end_offsets(topic).values()) >= 200, timeout=60, message="no burst reached the topic")
        mid_burst = confirming.is_alive()
        connect_worker.kill()
        connect_worker.run("up")
    finally:
        confirming.join(timeout=120)
    assert not failures, failures
    assert mid_burst  # orders were still being confirmed when the worker died

    records = read_records(topic, expected=total, timeout=120, **COMMITTED)
    counts = Counter(event_id_of(r) for r in records)
    assert len(counts) == total  # none lost
    assert max(counts.values()) == 1  # none doubled (what a read_committed consumer sees)
    assert set(counts) == {str(e) for e in OutboxEvent.objects.values_list("event_id", flat=True)}
    # Downstream: every order at the platform, once, under its one Idempotency-Key.
    platform = running_export_consumer
    wait_until(lambda: len(set(platform.received_order_ids())) == total, timeout=120)
    assert max(Counter(platform.received_order_ids()).values()) == 1
    assert len({key for _, key in platform.received()}) == total
    # The group commits past the transactions' markers too: its lag goes back to 0.
    wait_until(
        lambda: committed_offsets(kafka_admin, export_group, topic) == end_offsets(topic),
        timeout=30,
        message=lambda: f"committed {committed_offsets(kafka_admin, export_group, topic)}, end {end_offsets(topic)}",
    )


def test_postgresql_restarted_under_the_connector_loses_nothing_and_doubles_nothing(
    debezium, connect_worker, export_topics, transactional_db
):
    import subprocess

    from django.db import connections

    from config.env import BASE_DIR

    topic, _ = export_topics
    before = [order_factory(confirmed=True) for _ in range(100)]
    read_records(topic, expected=len(before), timeout=60, **COMMITTED)

    postgres = BASE_DIR / "scripts" / "postgres.sh"
    connections.close_all()
    subprocess.run([postgres, "down"], check=True, capture_output=True)
    try:
        # Debezium retries the connection by itself (Connect keeps saying RUNNING); the status
        # names what is wrong meanwhile.
        problems = outbox_connector_status(client=connect_worker.client)["problems"]
        assert any(p.startswith("database unavailable") for p in problems), problems
    finally:
        subprocess.run([postgres, "up"], check=True, capture_output=True)
    after = [order_factory(confirmed=True) for _ in range(100)]

    records = read_records(topic, expected=len(before) + len(after), timeout=120, **COMMITTED)
    counts = Counter(event_id_of(r) for r in records)
    assert set(counts) == {str(e) for e in OutboxEvent.objects.values_list("event_id", flat=True)}
    assert len(counts) == 200 and max(counts.values()) == 1
    wait_until(
        lambda: not outbox_connector_status(client=connect_worker.client)["problems"],
        timeout=60,
        message=lambda: f"still {outbox_connector_status(client=connect_worker.client)['problems']}",
    )


def test_a_row_its_topic_refuses_fails_the_task_and_shows_within_seconds(
    debezium, transactional_db, kafka_admin, unique_name, capsys
):
    """Last in the module: the task stays failed on that row (the fixture deletes the connector,
    its offsets and its slot after)."""
    small = unique_name("small")
    kafka_admin.create_topics(
        {small: {"num_partitions": 1, "replication_factor": 1, "configs": {"max.message.bytes": "1024"}}},
        wait_for_metadata=True,
    )
    try:
        probe_row(topic=small, payload='{"blob":"' + "x" * 4000 + '"}')
        name = debezium["DEBEZIUM_CONNECTOR_NAME"]
        # The task fails at once, and says so once its stop is over; until then the transaction it
        # left open holds its committed offsets back: either is a problem, named within seconds.
        shown = (f"task 0 of {name} is FAILED: ", f"the committed offsets of {name} cannot be read")
        wait_until(
            lambda: any(p.startswith(shown) for p in outbox_connector_status()["problems"]),
            timeout=15,
            message=lambda: f"the failed row was not shown: {outbox_connector_status()}",
        )
        with pytest.raises(CommandError) as failed:
            call_command("debezium_connector", "status")
        assert failed.value.returncode == 1
        assert "\n" not in str(failed.value)
        assert "problem: " in capsys.readouterr().out
    finally:
        kafka_admin.delete_topics([small])
