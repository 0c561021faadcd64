"""`manage.py reset_export_offsets` on the real broker: each target moves the export group's
committed offsets to the offsets kcat (an independent client) names; a dry run and a refusal
change nothing; bad arguments exit 2 with one line.

The topic has 3 partitions with 4, 6 and 8 records, their timestamps one second apart from a
base an hour ago, and partition 0's first record deleted (so "earliest" is 1 there, not 0).
The group has committed 2 on partition 0, 3 on partition 1, and nothing on partition 2.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.management import call_command
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from config.env import BASE_DIR
from kafka_bridge.cluster import group_offsets as offsets
from kafka_bridge.connection import bootstrap_servers, connection_config
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, end_offsets, produce_records

pytestmark = pytest.mark.kafka

RECORDS = {0: 4, 1: 6, 2: 8}
COMMITTED = {0: 2, 1: 3}


def kcat_offset(topic: str, partition: int, which: int) -> int:
    """kcat's offset for a partition: -2 the beginning, -1 the end, else the first record at
    or after that timestamp in ms (-1 when there is none)."""
    result = subprocess.run(
        ["kcat", "-b", bootstrap_servers(), "-Q", "-t", f"{topic}:{partition}:{which}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(re.search(rf"{re.escape(topic)} \[{partition}\] offset (-?\d+)", result.stdout).group(1))


@pytest.fixture
def base_time() -> datetime:
    # Recent enough that retention never deletes the records during a run.
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def loaded_topic(export_topics, export_group, kafka_admin, base_time) -> tuple[str, str]:
    topic, _ = export_topics
    base_ms = int(base_time.timestamp() * 1000)
    produce_records(
        topic,
        [
            {"value": f"{partition}-{i}".encode(), "partition": partition, "timestamp_ms": base_ms + i * 1000}
            for partition, count in RECORDS.items()
            for i in range(count)
        ],
    )
    kafka_admin.delete_records({TopicPartition(topic, 0): 1})
    kafka_admin.alter_group_offsets(
        export_group, {TopicPartition(topic, p): OffsetAndMetadata(o, "", None) for p, o in COMMITTED.items()}
    )
    assert committed_offsets(kafka_admin, export_group, topic) == COMMITTED
    return topic, export_group


def reset(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("reset_export_offsets", *args, stdout=out)
    return out.getvalue().splitlines()


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The command as an operator runs it: exit code, stdout and stderr of a real process."""
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "reset_export_offsets", *args],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def move_lines(topic: str, moves: dict[int, tuple[int | None, int]]) -> list[str]:
    return [f"{topic}[{p}]: {'(none)' if old is None else old} -> {new}" for p, (old, new) in sorted(moves.items())]


# --- each target ------------------------------------------------------------------------------


def test_to_earliest_moves_every_partition_to_its_first_offset(loaded_topic, kafka_admin):
    topic, group = loaded_topic
    beginnings = {p: kcat_offset(topic, p, -2) for p in RECORDS}
    assert beginnings == {0: 1, 1: 0, 2: 0}

    lines = reset("--to-earliest")

    assert lines[:-1] == move_lines(topic, {0: (2, 1), 1: (3, 0), 2: (None, 0)})
    assert lines[-1] == f"reset group {group} on {topic} to earliest: 3 of 3 partition(s) moved"
    assert committed_offsets(kafka_admin, group, topic) == beginnings


def test_to_latest_moves_every_partition_to_its_end_offset(loaded_topic, kafka_admin):
    topic, group = loaded_topic
    ends = {p: kcat_offset(topic, p, -1) for p in RECORDS}
    assert ends == end_offsets(topic) == RECORDS

    lines = reset("--to-latest")

    assert lines[:-1] == move_lines(topic, {0: (2, 4), 1: (3, 6), 2: (None, 8)})
    assert lines[-1] == f"reset group {group} on {topic} to latest: 3 of 3 partition(s) moved"
    assert committed_offsets(kafka_admin, group, topic) == ends


def test_to_datetime_moves_each_partition_to_the_first_record_at_or_after_it(loaded_topic, kafka_admin, base_time):
    topic, group = loaded_topic
    # Between the 4th and 5th record of each partition, written in another timezone than UTC.
    moment = (base_time + timedelta(seconds=3, milliseconds=500)).astimezone(timezone(timedelta(hours=2)))
    by_kcat = {p: kcat_offset(topic, p, int(moment.timestamp() * 1000)) for p in RECORDS}
    assert by_kcat == {0: -1, 1: 4, 2: 4}  # partition 0 has no record that late: kcat says -1

    lines = reset("--to-datetime", moment.isoformat())

    # "No record at or after it" is the end of the partition.
    expected = {0: end_offsets(topic)[0], 1: 4, 2: 4}
    assert lines[:-1] == move_lines(topic, {0: (2, expected[0]), 1: (3, 4), 2: (None, 4)})
    assert lines[-1] == f"reset group {group} on {topic} to {moment.isoformat()}: 3 of 3 partition(s) moved"
    assert committed_offsets(kafka_admin, group, topic) == expected


def test_a_datetime_after_the_last_record_resolves_to_the_end_offsets(loaded_topic, kafka_admin):
    topic, group = loaded_topic
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert all(kcat_offset(topic, p, int(tomorrow.timestamp() * 1000)) == -1 for p in RECORDS)

    reset("--to-datetime", tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ"))

    assert committed_offsets(kafka_admin, group, topic) == end_offsets(topic) == RECORDS


def test_a_datetime_before_the_first_record_resolves_to_the_earliest_offsets(loaded_topic, kafka_admin):
    topic, group = loaded_topic

    reset("--to-datetime", "2000-01-01T00:00:00+00:00")

    assert (
        committed_offsets(kafka_admin, group, topic)
        == {p: kcat_offset(topic, p, -2) for p in RECORDS}
        == {0: 1, 1: 0, 2: 0}
    )


def test_a_consumer_started_after_the_reset_reads_from_the_new_offsets(loaded_topic):
    topic, group = loaded_topic
    reset("--to-earliest")

    consumer = KafkaConsumer(
        topic, **connection_config(), group_id=group, enable_auto_commit=False, auto_offset_reset="latest"
    )
    try:
        values: list[bytes] = []

        def read_all() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in batch)
            return len(values) >= sum(RECORDS.values()) - 1

        wait_until(read_all, timeout=30, message=lambda: f"read {len(values)} record(s)")
    finally:
        consumer.close(autocommit=False)
    # Everything still on the topic, including what the group had committed past before.
    assert sorted(values) == sorted(
        f"{p}-{i}".encode() for p, n in RECORDS.items() for i in range(n) if (p, i) != (0, 0)
    )


# --- nothing changes --------------------------------------------------------------------------


def test_a_dry_run_prints_the_moves_and_changes_nothing(loaded_topic, kafka_admin):
    topic, group = loaded_topic

    lines = reset("--to-latest", "--dry-run")

    assert lines[:-1] == move_lines(topic, {0: (2, 4), 1: (3, 6), 2: (None, 8)})
    assert lines[-1] == (
        f"dry run: would reset group {group} on {topic} to latest: 3 of 3 partition(s) would move; nothing changed"
    )
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


@pytest.fixture
def active_member(loaded_topic, kafka_admin):
    """A live KafkaConsumer in the export group: the broker counts it as a member."""
    topic, group = loaded_topic
    consumer = KafkaConsumer(
        topic, **connection_config(), group_id=group, enable_auto_commit=False, client_id="reset-probe"
    )
    seen: list[dict] = []

    def joined() -> bool:
        consumer.poll(timeout_ms=100)
        seen[:] = [kafka_admin.describe_groups([group])[group]]
        return seen[0]["group_state"] == "Stable" and len(seen[0]["members"]) == 1

    try:
        wait_until(joined, timeout=30, message=lambda: f"the probe did not join {group}: {seen[-1] if seen else '-'}")
        yield consumer
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("dry_run", [False, True], ids=["reset", "dry-run"])
def test_refused_while_the_group_has_an_active_member_and_nothing_changes(
    loaded_topic, active_member, kafka_admin, dry_run
):
    topic, group = loaded_topic

    result = run_command(
        "--to-earliest",
        *(["--dry-run"] if dry_run else []),
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_CONSUMER_GROUP=group,
    )

    assert result.returncode == 1, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    # Stable, or a rebalance state should the probe have rejoined meanwhile: either way a member.
    assert re.fullmatch(
        rf"CommandError: refused: consumer group {re.escape(group)} has 1 active member\(s\) \(state \w+\); "
        "stop its consumers first, offsets unchanged",
        line,
    ), line
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


def test_a_member_joining_after_the_check_makes_the_broker_refuse_the_reset(
    loaded_topic, active_member, kafka_admin, monkeypatch
):
    """The check and the write are two requests: should a consumer join in between, the broker
    refuses the commit for a group with members, and nothing is overwritten under it."""
    topic, group = loaded_topic
    monkeypatch.setattr(offsets, "group_inactive_ensure", lambda **kwargs: None)

    refusal = r"(UnknownMemberId|IllegalGeneration|RebalanceInProgress)Error"
    with pytest.raises(
        offsets.OffsetResetFailed, match=rf"refused new offsets for group {re.escape(group)}: .*{refusal}"
    ):
        offsets.group_offsets_reset(group=group, topic=topic, target="earliest")

    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


def test_the_real_command_prints_one_line_per_partition_and_a_summary(loaded_topic, kafka_admin):
    topic, group = loaded_topic

    result = run_command("--to-latest", ORDER_EXPORT_TOPIC=topic, ORDER_EXPORT_CONSUMER_GROUP=group)

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines() == [
        *move_lines(topic, {0: (2, 4), 1: (3, 6), 2: (None, 8)}),
        f"reset group {group} on {topic} to latest: 3 of 3 partition(s) moved",
    ]
    assert committed_offsets(kafka_admin, group, topic) == RECORDS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: one of the arguments --to-earliest --to-latest --to-datetime is required"),
        (("--to-earliest", "--to-latest"), "error: argument --to-latest: not allowed with argument --to-earliest"),
        (("--dry-run",), "error: one of the arguments --to-earliest --to-latest --to-datetime is required"),
        (("--to-datetime", "2026-11-24T09:30:00"), "has no timezone; add one, e.g. 2026-11-24T09:30:00Z for UTC"),
        (("--to-datetime", "yesterday"), "takes an ISO-8601 datetime such as 2026-11-24T09:30:00Z, not 'yesterday'"),
    ],
    ids=["no-target", "two-targets", "dry-run-alone", "naive-datetime", "not-a-datetime"],
)
def test_bad_arguments_exit_2_with_one_line_and_change_nothing(loaded_topic, kafka_admin, args, message):
    topic, group = loaded_topic

    result = run_command(*args, ORDER_EXPORT_TOPIC=topic, ORDER_EXPORT_CONSUMER_GROUP=group)

    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert message in line
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


def test_a_missing_topic_exits_1_with_one_line(export_group, unique_name):
    missing = unique_name("no-such-topic")

    result = run_command("--to-earliest", ORDER_EXPORT_TOPIC=missing, ORDER_EXPORT_CONSUMER_GROUP=export_group)

    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [f"CommandError: topic {missing} does not exist"]


def test_an_unreachable_broker_exits_1_with_one_line():
    started = time.monotonic()

    result = run_command(
        "--to-earliest", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", TEST_SETTINGS='{"KAFKA_ADMIN_TIMEOUT_MS": 1000}'
    )

    assert result.returncode == 1, result
    [line] = result.stderr.splitlines()
    assert line.startswith("CommandError: no Kafka broker answered at 127.0.0.1:1")
    assert time.monotonic() - started < 30


# --- from the admin ---------------------------------------------------------------------------

RESET_URL = "/admin/exports/orderexport/reset-offsets/"


@pytest.fixture
def operator_client(client, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="ops", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="exports", codename__in=["view_orderexport", "redrive_orderexport"]
        )
    )
    client.force_login(user)
    return client


def preview_rows(response) -> list[str]:
    html = response.content.decode()
    start = html.index('<table id="reset-preview">')
    body = html[start : html.index("</table>", start)]
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in body.split("<tr>")[2:]]


@pytest.mark.django_db
def test_the_admin_previews_the_moves_then_resets_and_audits(loaded_topic, kafka_admin, operator_client):
    from exports.models import RedriveAudit

    topic, group = loaded_topic
    earliest = {p: kcat_offset(topic, p, -2) for p in RECORDS}

    preview = operator_client.post(RESET_URL, {"target": "earliest", "preview": "Preview"})

    assert preview.status_code == 200
    assert preview_rows(preview) == [
        f"{topic}[0] 2 {earliest[0]}",
        f"{topic}[1] 3 {earliest[1]}",
        f"{topic}[2] (none) {earliest[2]}",
    ]
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED
    assert not RedriveAudit.objects.exists()

    applied = operator_client.post(RESET_URL, {"target": "earliest", "previewed": "earliest", "apply": "Reset offsets"})

    assert applied.status_code == 302
    assert committed_offsets(kafka_admin, group, topic) == earliest
    audit = RedriveAudit.objects.get()
    assert (audit.actor, audit.action) == ("ops", "reset_offsets")
    assert f"{topic}[2]: (none) -> {earliest[2]}" in audit.detail


@pytest.mark.django_db
def test_the_admin_applies_only_the_target_it_previewed(loaded_topic, kafka_admin, operator_client):
    topic, group = loaded_topic

    response = operator_client.post(RESET_URL, {"target": "latest", "previewed": "earliest", "apply": "Reset offsets"})

    assert response.status_code == 200 and preview_rows(response)  # previewed again instead
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


@pytest.mark.django_db
def test_the_admin_refuses_the_reset_while_the_group_has_members(
    loaded_topic, active_member, kafka_admin, operator_client
):
    topic, group = loaded_topic

    response = operator_client.post(
        RESET_URL, {"target": "earliest", "previewed": "earliest", "apply": "Reset offsets"}
    )

    assert response.status_code == 200
    assert f"refused: consumer group {group} has 1 active member(s)" in response.content.decode()
    assert committed_offsets(kafka_admin, group, topic) == COMMITTED


@pytest.mark.django_db
def test_a_datetime_target_needs_a_time(operator_client, export_topics):
    response = operator_client.post(RESET_URL, {"target": "datetime", "preview": "Preview"})

    assert response.status_code == 200
    assert "A time is needed for this target." in response.content.decode()


@pytest.mark.django_db
def test_the_reset_page_needs_the_redrive_permission(client, django_user_model):
    assert client.get(RESET_URL).status_code == 302  # to the admin's login
    client.force_login(django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True))
    assert client.get(RESET_URL).status_code == 403
    assert client.post(RESET_URL, {"target": "earliest", "previewed": "earliest", "apply": "1"}).status_code == 403
