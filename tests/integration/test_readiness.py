"""`manage.py export_consumer_ready`, the export consumer's readiness probe: exit 0 when its group
is Stable and its lag and the outbox's oldest unsent event are within bounds; else exit 1 with
one line saying which check failed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from kafka import KafkaConsumer

from config.env import BASE_DIR
from kafka_bridge.connection import connection_config
from kafka_bridge.models import OutboxEvent
from tests.support.helpers import wait_until
from tests.support.processes import database_url_of_test_db
from tests.support.records import produce_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def ready(*args: str) -> tuple[int, str]:
    """(exit code, the line it printed)."""
    out = io.StringIO()
    try:
        call_command("export_consumer_ready", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, str(exc)
    return 0, out.getvalue().strip()


@pytest.fixture
def idle_member(export_topics, export_group):
    """A member of the export group that polls (so the group is Stable) and never commits."""
    topic, _ = export_topics
    consumer = KafkaConsumer(
        **connection_config(), group_id=export_group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    consumer.subscribe([topic])
    wait_until(lambda: (consumer.poll(timeout_ms=200), consumer.assignment())[1], timeout=30, message="never assigned")
    yield consumer
    consumer.close(autocommit=False)


def test_an_idle_stable_consumer_with_no_lag_is_ready_until_the_outbox_falls_behind(
    running_export_consumer, export_group
):
    code, line = wait_until(
        lambda: (result := ready()) and result[0] == 0 and result, timeout=30, message=lambda: f"never ready: {ready()}"
    )
    assert line == f"ready: group {export_group} Stable, lag 0 (max 1000), oldest unsent outbox event 0 s (max 300 s)"

    OutboxEvent.objects.create(
        event_id="6f1d2b7c-9e10-4c55-9a3e-0b6e2c1e8a0f",
        event_type="OrderExportRequested",
        topic="t",
        key="1",
        payload="{}",
        created_at=timezone.now() - timedelta(seconds=600),
    )
    code, line = ready()
    assert code == 1
    assert line == "not ready: oldest unsent outbox event is 600 s old, over 300 s"
    assert ready("--max-outbox-age", "900")[0] == 0


def test_lag_over_the_threshold_is_not_ready(idle_member, export_topics, export_group):
    topic, _ = export_topics
    produce_records(topic, [{"key": str(n).encode(), "value": b"{}"} for n in range(5)])

    assert ready("--max-lag", "4") == (1, "not ready: lag 5 is over 4")
    code, line = ready("--max-lag", "5")
    assert code == 0
    assert line.startswith(f"ready: group {export_group} Stable, lag 5 (max 5)")


def test_lag_counts_from_the_committed_offsets(idle_member, export_topics, export_group):
    topic, _ = export_topics
    produce_records(topic, [{"key": str(n).encode(), "value": b"{}"} for n in range(5)])
    fetched: list = []
    wait_until(
        lambda: (
            fetched.extend(r for batch in idle_member.poll(timeout_ms=200).values() for r in batch) or len(fetched) == 5
        ),
        timeout=10,
        message=lambda: f"fetched {len(fetched)} of 5",
    )
    idle_member.commit()  # all five consumed

    code, line = ready("--max-lag", "0")

    assert code == 0
    assert line.startswith(f"ready: group {export_group} Stable, lag 0 (max 0)")


def test_a_group_without_members_is_not_ready_exit_1_with_one_line(export_topics, export_group):
    topic, _ = export_topics
    # The group existed (its consumer committed) and its last member left: Empty.
    member = KafkaConsumer(**connection_config(), group_id=export_group, enable_auto_commit=False)
    member.subscribe([topic])
    wait_until(lambda: (member.poll(timeout_ms=200), member.assignment())[1], timeout=30, message="never assigned")
    member.commit()
    member.close(autocommit=False)

    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "export_consumer_ready"],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": database_url_of_test_db(),
            "ORDER_EXPORT_TOPIC": topic,
            "ORDER_EXPORT_CONSUMER_GROUP": export_group,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"CommandError: not ready: group {export_group} is Empty with 0 member(s), not Stable"
    ]


def test_a_group_that_never_existed_is_not_ready(export_topics, export_group):
    assert ready() == (1, f"not ready: group {export_group} is Dead with 0 member(s), not Stable")


def test_an_unreachable_broker_is_not_ready(settings, export_group):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_KAFKA_TIMEOUT_MS = 500

    assert ready() == (
        1,
        "not ready: kafka unavailable: no Kafka broker answered at 127.0.0.1:1 within 0.5 s (KafkaTimeoutError)",
    )
