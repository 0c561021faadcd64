"""What OUTBOX_PUBLISHER=debezium changes in the project's own processes, on any database: the
web process sends nothing on commit, the relay refuses to start, the purge goes by age, a resend
writes the row again, and the connector command says in one line what is wrong. (Debezium
itself, on PostgreSQL: test_debezium.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox import publisher
from kafka_bridge.outbox.store import outbox_purge, outbox_resend
from tests.support.factories import order_factory
from tests.support.ports import free_port


@pytest.fixture
def debezium_mode(settings):
    settings.OUTBOX_PUBLISHER = "debezium"
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    return settings


def test_a_confirm_writes_its_row_and_sends_nothing_on_commit(debezium_mode, fresh_publisher, transactional_db):
    debezium_mode.KAFKA_PUBLISH_ON_COMMIT = True  # even were it said: Debezium publishes
    order_factory(confirmed=True)
    row = OutboxEvent.objects.get()
    assert row.key is not None and row.sent_at is None
    assert publisher._request_publisher is None  # the on-commit publisher was never built


def test_the_relay_refuses_to_start_in_one_line(debezium_mode):
    with pytest.raises(CommandError) as refused:
        call_command("run_outbox_relay")
    assert refused.value.returncode == 2
    assert str(refused.value).startswith("run_outbox_relay does not run with OUTBOX_PUBLISHER=debezium")


def test_the_purge_deletes_by_age_alone_and_the_relay_mode_keeps_unsent_rows(settings, db):
    old, young = order_factory(confirmed=True), order_factory(confirmed=True)
    OutboxEvent.objects.filter(key=str(old.pk)).update(created_at=timezone.now() - timedelta(days=8))

    assert outbox_purge(older_than=timedelta(days=7)) == 0  # relay mode: both unsent, both kept
    settings.OUTBOX_PUBLISHER = "debezium"
    assert outbox_purge(older_than=timedelta(days=7), dry_run=True) == 1
    assert outbox_purge(older_than=timedelta(days=7)) == 1
    assert list(OutboxEvent.objects.values_list("key", flat=True)) == [str(young.pk)]


def test_a_resend_writes_the_row_again_as_it_was(debezium_mode, db):
    order_factory(confirmed=True)
    before = OutboxEvent.objects.get()

    assert outbox_resend(event_ids=[before.event_id]) == 1

    after = OutboxEvent.objects.get()
    assert after.pk != before.pk  # a new row: an INSERT, which Debezium publishes
    fields = ("event_id", "event_type", "topic", "key", "payload", "headers", "created_at")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert after.resends == before.resends + 1
    assert outbox_resend(event_ids=[after.event_id, "00000000-0000-4000-8000-000000000000"]) == 1


def test_registering_in_relay_mode_is_refused(settings):
    settings.OUTBOX_PUBLISHER = "relay"
    with pytest.raises(CommandError) as refused:
        call_command("debezium_connector", "register")
    assert refused.value.returncode == 2
    assert "would publish every event twice" in str(refused.value)


def test_status_without_kafka_connect_exits_1_naming_where_it_looked(debezium_mode, db, capsys):
    debezium_mode.KAFKA_CONNECT_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError) as failed:
        call_command("debezium_connector", "status")
    assert failed.value.returncode == 1
    assert str(failed.value).startswith(f"Kafka Connect at {debezium_mode.KAFKA_CONNECT_URL} unreachable")
    assert "\n" not in str(failed.value)
