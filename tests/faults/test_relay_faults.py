"""`run_outbox_relay` with the database away under it: one line per failed round, a backoff that
doubles up to its cap, and once the database is back every pending event is sent, none twice.

The outage is made per thread with `connection.execute_wrapper` (every statement of the relay's
thread fails while it lasts, as against a restarting server), and for real on PostgreSQL by
stopping and starting the project's cluster under a `run_outbox_relay` process."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import OperationalError, connections
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.services import order_confirm
from tests.support.consumers import LoopThread
from tests.support.faults import orders_create, records_per_event
from tests.support.helpers import wait_until
from tests.support.processes import command_env
from tests.support.records import end_offsets, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


class DatabaseOutage:
    """An execute wrapper that fails every statement while the database is `down`, as a server
    that is restarting does. `trip_on` takes it down at the first statement it matches."""

    def __init__(self, *, down: bool = False, trip_on: Callable[[str], bool] | None = None):
        self.down = threading.Event()
        if down:
            self.down.set()
        self.trip_on = trip_on
        self.failed_statements = 0

    def __call__(self, execute, sql, params, many, context):
        if self.trip_on is not None and self.trip_on(sql):
            self.trip_on = None
            self.down.set()
        if self.down.is_set():
            self.failed_statements += 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


@pytest.fixture
def relay_thread():
    """`relay_thread(outage, **options)`: `OutboxRelay.run()` (no grace, `options` to the relay) in
    a thread whose database calls go through `outage`; stopped and checked after the test."""
    started: list[LoopThread] = []

    def start(outage: DatabaseOutage, **options) -> LoopThread:
        relay = OutboxRelay(stop=StopFlag(), grace=0, **options)
        running = LoopThread(relay, name="relay", execute_wrapper=outage)
        started.append(running.start())
        return running

    yield start
    for running in started:
        if running.is_alive():
            running.stop()
            running.check_stopped()


def outbox_rows(topic: str, count: int) -> list[OutboxEvent]:
    return OutboxEvent.objects.bulk_create(
        OutboxEvent(
            event_id=uuid.uuid4(),
            event_type="Probe",
            topic=topic,
            key=f"k{n}",
            payload=json.dumps({"n": n}),
            headers=[],
            created_at=timezone.now() - timedelta(minutes=1),
        )
        for n in range(count)
    )


def on_the_topic_once_each(topic: str, rows: list[OutboxEvent]) -> None:
    records = read_records(topic, expected=len(rows))
    assert Counter(json.loads(r.value)["n"] for r in records) == Counter(json.loads(r.payload)["n"] for r in rows)
    landed = {json.loads(r.value)["n"]: (r.partition, r.offset) for r in records}
    for row in OutboxEvent.objects.filter(pk__in=[r.pk for r in rows]):
        assert (row.partition, row.offset) == landed[json.loads(row.payload)["n"]]


def unsent():
    return OutboxEvent.objects.filter(sent_at__isnull=True)


def test_the_relay_rides_out_a_database_outage_with_a_capped_backoff_and_then_sends_what_is_pending(
    kafka_topic, relay_thread, caplog
):
    rows = outbox_rows(kafka_topic, 20)
    outage = DatabaseOutage(down=True)

    with caplog.at_level(logging.WARNING, logger="kafka_bridge.outbox.relay"):
        relay = relay_thread(outage, interval=0.1, max_backoff=0.8)
        wait_until(
            lambda: len([r for r in caplog.records if "database unavailable" in r.getMessage()]) >= 5,
            timeout=10,
            message=lambda: f"the relay did not retry: {caplog.text}",
        )
        assert relay.is_alive() and not relay.errors
        assert end_offsets(kafka_topic) == {0: 0}
        outage.down.clear()
        wait_until(lambda: not unsent().exists(), timeout=20, message=lambda: f"{unsent().count()} row(s) unsent")
        relay.stop()
        relay.check_stopped()

    failures = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    # One line per failed round, with no traceback, and the wait doubling up to its cap.
    assert all(r.exc_info is None for r in caplog.records)
    waits = [float(re.search(r"retrying in ([\d.]+) s", line).group(1)) for line in failures]
    assert waits[:5] == [0.1, 0.2, 0.4, 0.8, 0.8]
    assert "OperationalError: server closed the connection unexpectedly" in failures[0]
    on_the_topic_once_each(kafka_topic, rows)
    assert relay.loop.total_sent == len(rows)


def test_the_database_lost_between_a_send_and_its_marking_sends_nothing_twice(kafka_topic, relay_thread):
    rows = outbox_rows(kafka_topic, 20)
    # Down at the statement that would mark the acknowledged batch sent.
    outage = DatabaseOutage(trip_on=lambda sql: sql.startswith("UPDATE") and "partition" in sql)

    relay = relay_thread(outage, interval=0.05, max_backoff=0.2)
    wait_until(lambda: outage.failed_statements >= 4, timeout=20, message="the marking never failed")
    # On the topic already, unmarked: the relay must write those marks, not send them again.
    assert sum(end_offsets(kafka_topic).values()) == len(rows)
    assert unsent().count() == len(rows)
    outage.down.clear()
    wait_until(lambda: not unsent().exists(), timeout=20, message=lambda: f"{unsent().count()} row(s) unsent")
    relay.stop()
    relay.check_stopped()

    on_the_topic_once_each(kafka_topic, rows)
    assert relay.loop.total_sent == len(rows)
    assert set(OutboxEvent.objects.values_list("attempts", "claimed_by")) == {(1, "")}


# --- PostgreSQL restarted under a running relay process ----------------------------------------


# Restarts the server every test database lives on: run alone (`make test` runs the serial
# tests first, then the rest in parallel).
@pytest.mark.serial
@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="restarts the project's PostgreSQL"
)
def test_postgresql_restarted_under_a_running_relay_which_keeps_running_and_sends_each_event_once(
    settings, export_topics, spawn
):
    from config.env import BASE_DIR

    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    env = command_env(
        ORDER_EXPORT_TOPIC=topic,
        TEST_SETTINGS='{"OUTBOX_RELAY_GRACE_SECONDS": 0, "OUTBOX_RELAY_INTERVAL": 0.1, "OUTBOX_RELAY_MAX_BACKOFF": 1}',
    )
    relay = spawn("run_outbox_relay", env)
    before = orders_create(20)
    for order_id in before:
        order_confirm(order_id=order_id)
    wait_until(lambda: not unsent().exists(), timeout=60, message=lambda: relay.output()[-3000:])

    postgres = BASE_DIR / "scripts" / "postgres.sh"
    connections.close_all()
    subprocess.run([postgres, "down"], check=True, capture_output=True)
    try:
        wait_until(
            lambda: "relay: database unavailable" in relay.output(),
            timeout=30,
            message=lambda: f"the relay did not notice; it said:\n{relay.output()[-3000:]}",
        )
    finally:
        subprocess.run([postgres, "up"], check=True, capture_output=True)
    assert relay.process.poll() is None, f"the relay exited:\n{relay.output()[-3000:]}"

    after = orders_create(30)
    for order_id in after:
        order_confirm(order_id=order_id)
    wait_until(
        lambda: not unsent().exists(),
        timeout=60,
        message=lambda: f"{unsent().count()} row(s) unsent; the relay said:\n{relay.output()[-3000:]}",
    )
    exit_code, _ = relay.terminate(timeout=15)
    output = relay.output()

    records = read_records(topic, expected=50)
    per_event = records_per_event(records)
    assert set(per_event.values()) == {1} and set(per_event) == {
        str(e) for e in OutboxEvent.objects.values_list("event_id", flat=True)
    }
    assert {(r.partition, r.offset) for r in records} == set(OutboxEvent.objects.values_list("partition", "offset"))
    assert exit_code == 0, output
    assert "relay: stopped after sending 50 event(s)" in output
    assert "Traceback" not in output
