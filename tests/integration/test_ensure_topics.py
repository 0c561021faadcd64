"""`manage.py ensure_topics` on the real broker: creates, is idempotent, grows, never shrinks."""

import io

import pytest
from django.core.management import CommandError, call_command

from tests.support.helpers import wait_until

pytestmark = pytest.mark.kafka


def partition_counts(admin, names):
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names) if t["error_code"] == 0}


def run(*args) -> str:
    out = io.StringIO()
    call_command("ensure_topics", *args, stdout=out)
    return out.getvalue()


def test_creates_the_event_topic_and_its_dlt_with_the_configured_partitions(event_topics, kafka_admin, settings):
    topic, dlt = event_topics
    settings.ORDER_EXPORT_PARTITIONS = 3

    output = run()

    assert partition_counts(kafka_admin, [topic, dlt]) == {topic: 3, dlt: 3}
    assert output.splitlines() == [
        f"{topic}: created with 3 partition(s)",
        f"{dlt}: created with 3 partition(s)",
    ]


def test_a_second_run_changes_nothing(event_topics, kafka_admin):
    topic, dlt = event_topics
    run()

    output = run()

    assert partition_counts(kafka_admin, [topic, dlt]) == {topic: 3, dlt: 3}
    assert output.splitlines() == [f"{topic}: unchanged, 3 partition(s)", f"{dlt}: unchanged, 3 partition(s)"]


def test_grows_the_partition_count(event_topics, kafka_admin, settings):
    topic, dlt = event_topics
    run()
    settings.ORDER_EXPORT_PARTITIONS = 5

    output = run()

    # The controller has the new partitions when the command returns; the broker's metadata
    # cache may take a moment longer to show them.
    wait_until(
        lambda: partition_counts(kafka_admin, [topic, dlt]) == {topic: 5, dlt: 5},
        timeout=10,
        message=lambda: f"partition counts: {partition_counts(kafka_admin, [topic, dlt])}",
    )
    assert f"{topic}: grown from 3 to 5 partition(s)" in output


def test_refuses_to_lower_the_partition_count_and_changes_nothing(event_topics, kafka_admin):
    topic, dlt = event_topics
    run("--partitions", "4")

    with pytest.raises(CommandError) as excinfo:
        run("--partitions", "2")

    assert excinfo.value.returncode == 1
    assert str(excinfo.value) == (
        f"topic {topic} has 4 partitions; asked for 2, but Kafka can only add partitions, never remove them"
    )
    assert partition_counts(kafka_admin, [topic, dlt]) == {topic: 4, dlt: 4}


def test_rejects_a_partition_count_below_one(event_topics, kafka_admin):
    topic, dlt = event_topics
    with pytest.raises(CommandError, match="--partitions must be at least 1, not 0"):
        run("--partitions", "0")
    assert partition_counts(kafka_admin, [topic, dlt]) == {}
