"""`manage.py order_trace` and the trace behind the order's Delivery panel: an order followed from
its confirm to the platform, through the database and back from the broker."""

import io
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from exports.console.trace import order_trace
from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from orders.services import LineInput, order_confirm, order_create
from tests.support.helpers import wait_until
from tests.support.ports import free_port
from tests.support.processes import database_url_of_test_db
from tests.support.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(refusing_platform):
    refusing_platform.refusing = False
    return refusing_platform


@pytest.fixture
def consumer(platform, refusing_consumer):
    return refusing_consumer


def confirmed_order(customer_id: str = "c-trace"):
    order = order_create(customer_id=customer_id, lines=[LineInput(sku="S-1", quantity=2, unit_price=Decimal("4.50"))])
    order_confirm(order_id=order.pk)
    return order


def trace_json(order_id) -> dict:
    out = io.StringIO()
    call_command("order_trace", str(order_id), "--json", stdout=out)
    return json.loads(out.getvalue())


def exported(order) -> None:
    """Wait until the order is exported and its event marked sent (the mark may come after)."""
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message=f"order {order.pk} was not exported",
    )
    wait_until(
        lambda: OutboxEvent.objects.filter(key=str(order.pk), sent_at__isnull=False).exists(),
        timeout=30,
        message=f"the event of order {order.pk} was not marked sent",
    )


def test_an_exported_order_is_traced_from_confirm_to_platform_with_its_record_read_back(consumer, export_topics):
    topic, _ = export_topics
    order = confirmed_order()
    exported(order)
    event = OutboxEvent.objects.get(key=str(order.pk))
    [on_topic] = list(read_records(topic, expected=1))

    trace = trace_json(order.pk)

    assert [(step["step"], step["at"] is not None) for step in trace["steps"]] == [
        ("confirmed", True),
        ("outbox", True),
        ("on-topic", True),
        ("exported", True),
    ]
    assert trace["confirm_to_exported_seconds"] >= 0
    assert all(step["after_seconds"] >= 0 for step in trace["steps"][1:]), trace["steps"]
    [traced_event] = trace["events"]
    assert traced_event["event_id"] == str(event.event_id)
    assert (traced_event["partition"], traced_event["offset"]) == (on_topic.partition, on_topic.offset)
    record = trace["record"]
    assert (record["topic"], record["partition"], record["offset"], record["key"]) == (
        topic,
        on_topic.partition,
        on_topic.offset,
        str(order.pk),
    )
    assert ["event_id", str(event.event_id)] in record["headers"]
    assert record["value"]["order"]["id"] == order.pk and record["value"]["event_id"] == str(event.event_id)
    export = trace["export"]
    assert (export["status"], export["idempotency_key"]) == ("exported", str(event.event_id))
    [attempt] = trace["attempts"]
    assert (attempt["outcome"], attempt["error"], attempt["offset"]) == ("exported", "", on_topic.offset)
    assert attempt["consumer"].startswith("export-consumer@")
    assert consumer.processed_total == 1
    assert trace["dead_letter"] is None and trace["redrives"] == []


def test_the_text_trace_names_each_step_the_record_and_the_attempt(consumer, export_topics):
    topic, _ = export_topics
    order = confirmed_order()
    exported(order)
    event = OutboxEvent.objects.get(key=str(order.pk))

    out = io.StringIO()
    call_command("order_trace", str(order.pk), stdout=out)
    text = out.getvalue()

    assert text.startswith(f"order {order.pk}: confirmed, customer c-trace")
    assert f"record at {topic}[{event.partition}]@{event.offset}:" in text
    assert f"header event_id={event.event_id}" in text
    assert f"Idempotency-Key {event.event_id}" in text
    assert "confirm -> exported:" in text
    assert " exported " in text.split("attempts:")[1]


def test_a_dead_lettered_order_shows_its_attempts_dead_letter_and_redrive_until_exported(
    consumer, export_topics, platform
):
    _, dlt = export_topics
    platform.refusing = True
    order = confirmed_order()
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="failed").exists(),
        timeout=30,
        message="the refused order was not dead-lettered",
    )
    [dead] = read_records(dlt, expected=1)

    failed = trace_json(order.pk)

    assert failed["export"]["status"] == "failed"
    assert [a["outcome"] for a in failed["attempts"]] == ["failed"]
    assert "HTTP 422" in failed["attempts"][0]["error"]
    letter = failed["dead_letter"]
    assert (letter["topic"], letter["partition"], letter["offset"], letter["key"]) == (
        dlt,
        dead.partition,
        dead.offset,
        str(order.pk),
    )
    assert any(name == "dlt.error" and "HTTP 422" in text for name, text in letter["headers"])
    assert [(step["step"], step["at"] is not None) for step in failed["steps"]] == [
        ("confirmed", True),
        ("outbox", True),
        ("on-topic", True),
        ("dead-lettered", True),
        ("exported", False),
    ]

    platform.refusing = False
    get_user_model().objects.create_user(username="ops", is_staff=True).user_permissions.add(
        Permission.objects.get(codename="redrive_orderexport")
    )
    call_command("replay_dlt", "--operator", "ops", "--key", str(order.pk), stdout=io.StringIO())
    exported(order)

    redriven = trace_json(order.pk)
    assert [a["outcome"] for a in redriven["attempts"]] == ["failed", "exported"]
    assert [(r["actor"], r["action"]) for r in redriven["redrives"]] == [("ops", "replay_dlt")]
    assert redriven["dead_letter"]["offset"] == dead.offset, "the dead letter stays in the trace after its redrive"
    assert redriven["export"]["status"] == "exported"
    assert [step["step"] for step in redriven["steps"]] == [
        "confirmed",
        "outbox",
        "on-topic",
        "dead-lettered",
        "redriven",
        "exported",
    ]
    assert all(step["after_seconds"] >= 0 for step in redriven["steps"][1:]), redriven["steps"]


def test_an_export_before_its_acknowledgement_is_marked_is_traced_at_the_offset_the_consumer_read(
    consumer, export_topics
):
    topic, _ = export_topics
    order = confirmed_order()
    exported(order)
    [on_topic] = read_records(topic, expected=1)
    # As the trace finds it while the fast path's acknowledgement is still to be written.
    OutboxEvent.objects.filter(key=str(order.pk)).update(sent_at=None, partition=None, offset=None)

    trace = order_trace(order_id=order.pk)

    assert (trace.record.partition, trace.record.offset) == (on_topic.partition, on_topic.offset)
    assert trace.record.record.key == str(order.pk).encode()
    on_topic_step = next(step for step in trace.steps if step.name == "on-topic")
    assert on_topic_step.at == trace.record.record.timestamp


def test_an_unreachable_broker_leaves_the_database_half_of_the_trace(consumer, export_topics, settings):
    order = confirmed_order()
    exported(order)
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]

    trace = order_trace(order_id=order.pk, timeout_ms=1500)

    assert trace.record.record is None and trace.record.missing.startswith("not read:")
    assert [attempt.outcome for attempt in trace.attempts] == ["exported"]
    assert trace.export.status == "exported"


def test_a_pending_order_has_no_step_after_its_creation(db):
    order = order_create(customer_id="c-pending", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])

    trace = trace_json(order.pk)

    assert [step["at"] for step in trace["steps"]] == [None, None, None, None]
    assert trace["events"] == [] and trace["record"] is None and trace["export"] is None


@pytest.mark.parametrize("order_id, message", [("424242", "no order 424242"), ("4x", "must be a number")])
def test_an_unknown_or_malformed_order_id_is_one_line_and_exit_1(db, order_id, message):
    with pytest.raises(CommandError, match=message):
        call_command("order_trace", order_id)

    run = subprocess.run(
        [sys.executable, "manage.py", "order_trace", order_id],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": database_url_of_test_db()},
    )
    assert run.returncode == 1
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1 and message in run.stderr
