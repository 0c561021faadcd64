"""Redrive: `replay_dlt`, the admin's "Retry failed exports" action and dead-letters page, and
`purge_outbox`."""

import io
import re
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from exports.models import OrderExport, RedriveAudit
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from tests.support.helpers import wait_until
from tests.support.records import end_offsets, read_records
from tests.support.redrive import DEAD_LETTERS_URL, dead_letter_position, dead_lettered_order, user_with

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def consumer(refusing_consumer):
    return refusing_consumer


def replay(*args) -> str:
    out = io.StringIO()
    call_command("replay_dlt", *args, stdout=out)
    return out.getvalue()


def test_a_permanent_refusal_is_dead_lettered_and_marked_failed(consumer, export_topics, refusing_platform):
    topic, dlt = export_topics
    order = dead_lettered_order()

    [dead] = read_records(dlt, expected=1)
    [original] = read_records(topic, expected=1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (original.key, original.value)
    assert headers["dlt.original.topic"] == topic.encode()
    assert headers["dlt.original.offset"] == str(original.offset).encode()
    assert headers["dlt.attempts"] == b"1"
    assert b"422" in headers["dlt.error"]
    export = OrderExport.objects.get(order=order)
    assert export.status == "failed" and "422" in export.last_error and export.attempts == 1


def test_a_dead_lettered_export_records_where_its_dead_letter_is(consumer, export_topics, refusing_platform):
    _, dlt = export_topics
    order = dead_lettered_order()

    [dead] = read_records(dlt, expected=1)
    export = OrderExport.objects.get(order=order)
    assert (export.dead_letter_topic, export.dead_letter_partition, export.dead_letter_offset) == (
        dlt,
        dead.partition,
        dead.offset,
    )
    assert export.dead_lettered_at is not None
    [attempt] = order.export_attempts.all()
    assert attempt.outcome == "failed" and "422" in attempt.error


def test_replay_dlt_needs_a_user_with_the_redrive_permission(consumer, export_topics):
    dead_lettered_order()
    user_with("viewer", may_redrive=False)

    with pytest.raises(CommandError) as excinfo:
        replay("--operator", "viewer")

    assert excinfo.value.returncode == 1
    assert str(excinfo.value) == "not allowed: user 'viewer' lacks the permission exports.redrive_orderexport"
    assert not RedriveAudit.objects.exists()


def test_replay_dlt_dry_run_lists_and_changes_nothing(consumer, export_topics):
    topic, _ = export_topics
    order = dead_lettered_order()
    user_with("ops", may_redrive=True)
    before = end_offsets(topic)

    output = replay("--operator", "ops", "--dry-run")

    assert "would replay DLT[" in output and f"key={order.pk}" in output and "422" in output
    assert output.strip().endswith("1 record(s) would be replayed (dry run)")
    assert end_offsets(topic) == before
    assert OrderExport.objects.get(order=order).status == "failed"
    assert not RedriveAudit.objects.exists()


def test_replay_dlt_sends_the_event_again_and_it_is_exported_once(consumer, export_topics, refusing_platform):
    topic, dlt = export_topics
    order = dead_lettered_order()
    event_id = str(OutboxEvent.objects.get(key=str(order.pk)).event_id)
    user_with("ops", may_redrive=True)
    refusing_platform.refusing = False

    output = replay("--operator", "ops")

    assert output.strip().endswith("1 record(s) replayed")
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message="the replayed event was not exported",
    )
    assert refusing_platform.received() == [(order.pk, event_id)]
    records = read_records(topic, expected=2)
    assert [r.key for r in records] == [str(order.pk).encode()] * 2
    assert not any(name.startswith("dlt.") for name, _ in records[-1].headers)
    audit = RedriveAudit.objects.get()
    assert (audit.actor, audit.action, audit.event_ids, audit.order_ids) == (
        "ops",
        "replay_dlt",
        [event_id],
        [order.pk],
    )
    # Dated when the redrive began, not when its row was written: before its copy was on the
    # topic (a record's timestamp has milliseconds) and so before the export it led to.
    assert audit.created_at.timestamp() * 1000 <= records[-1].timestamp + 1
    assert audit.created_at <= OrderExport.objects.get(order=order).exported_at
    # Replayed once: a second run finds nothing left.
    assert replay("--operator", "ops").strip() == "0 record(s) replayed"


def test_replay_dlt_offset_replays_only_that_record_and_a_later_replay_of_all_skips_it(
    consumer, export_topics, refusing_platform
):
    _, dlt = export_topics
    first, second = dead_lettered_order(), dead_lettered_order()
    position = dead_letter_position(dlt, second, records_on_the_dlt=2)
    user_with("ops", may_redrive=True)
    refusing_platform.refusing = False

    output = replay("--operator", "ops", "--offset", position)

    assert output.strip().endswith("1 record(s) replayed") and f"key={second.pk}" in output
    wait_until(
        lambda: OrderExport.objects.filter(order=second, status="exported").exists(),
        timeout=30,
        message="the selected dead letter was not exported",
    )
    assert OrderExport.objects.get(order=first).status == "failed"
    partition, offset = map(int, position.split(":"))
    assert RedriveAudit.objects.get().dlt_positions == [[dlt, partition, offset]]

    output = replay("--operator", "ops")

    assert output.strip().endswith("1 record(s) replayed") and f"key={first.pk}" in output
    wait_until(
        lambda: OrderExport.objects.filter(order=first, status="exported").exists(),
        timeout=30,
        message="the other dead letter was not exported",
    )
    assert sorted(order_id for order_id, _ in refusing_platform.received()) == sorted([first.pk, second.pk])


def test_replay_dlt_key_selects_the_dead_letters_of_that_order(consumer, export_topics, refusing_platform):
    first, second = dead_lettered_order(), dead_lettered_order()
    user_with("ops", may_redrive=True)

    output = replay("--operator", "ops", "--key", str(first.pk), "--dry-run")

    assert output.strip().endswith("1 record(s) would be replayed (dry run)")
    assert f"key={first.pk}" in output and f"key={second.pk}" not in output


def test_replay_dlt_refuses_a_selection_naming_what_is_not_on_the_dlt_and_replays_nothing(consumer, export_topics):
    topic, dlt = export_topics
    order = dead_lettered_order()
    position = dead_letter_position(dlt, order, records_on_the_dlt=1)
    user_with("ops", may_redrive=True)
    before = end_offsets(topic)

    with pytest.raises(CommandError) as excinfo:
        replay("--operator", "ops", "--offset", position, "--offset", "0:999999", "--key", "no-such-order")

    assert excinfo.value.returncode == 1
    assert str(excinfo.value) == (
        "nothing replayed: not on the DLT or replayed before: DLT[0]@999999, key 'no-such-order'"
    )
    assert end_offsets(topic) == before
    assert OrderExport.objects.get(order=order).status == "failed"
    assert not RedriveAudit.objects.exists()


@pytest.mark.parametrize("value", ["5", "a:1", "1:-2", ":3"])
def test_replay_dlt_rejects_an_offset_that_is_not_partition_and_offset(value):
    with pytest.raises(CommandError) as excinfo:
        replay("--operator", "ops", "--offset", value)

    assert "is not PARTITION:OFFSET" in str(excinfo.value)


def dead_letter_rows(response) -> list[str]:
    html = response.content.decode()
    start = html.index('<table id="dead-letters">')
    body = html[start : html.index("</table>", start)]
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in body.split("<tr>")[2:]]


def test_the_dead_letters_page_lists_each_with_its_headers_and_redrives_only_the_selected(
    client, consumer, export_topics, refusing_platform
):
    topic, dlt = export_topics
    first, second = dead_lettered_order(), dead_lettered_order()
    position = dead_letter_position(dlt, second, records_on_the_dlt=2)
    client.force_login(user_with("ops", may_redrive=True))

    page = client.get(DEAD_LETTERS_URL)

    assert page.status_code == 200
    rows = dead_letter_rows(page)
    assert len(rows) == 2
    for order, row in ((second, rows[0]), (first, rows[1])):  # newest first
        assert (
            f"#{order.pk} failed PermanentExportError: HTTP 422 from the platform: unknown customer 1 {topic}[" in row
        )
        assert row.endswith(" no —")

    refusing_platform.refusing = False
    response = client.post(DEAD_LETTERS_URL, {"position": [position]})

    assert response.status_code == 302
    wait_until(
        lambda: OrderExport.objects.filter(order=second, status="exported").exists(),
        timeout=30,
        message="the redriven dead letter was not exported",
    )
    assert OrderExport.objects.get(order=first).status == "failed"
    assert [order_id for order_id, _ in refusing_platform.received()] == [second.pk]
    audit = RedriveAudit.objects.get()
    assert (audit.actor, audit.order_ids) == ("ops", [second.pk])
    rows = dead_letter_rows(client.get(DEAD_LETTERS_URL))
    assert rows[0].startswith(f"{position} ") and rows[0].endswith(" yes —")
    assert rows[1].endswith(" no —")


def test_the_dead_letters_page_needs_the_redrive_permission(client, consumer, export_topics):
    assert client.get(DEAD_LETTERS_URL).status_code == 302  # to the admin's login
    client.force_login(user_with("viewer", may_redrive=False))

    assert client.get(DEAD_LETTERS_URL).status_code == 403
    assert client.post(DEAD_LETTERS_URL, {"position": ["0:0"]}).status_code == 403
    assert not RedriveAudit.objects.exists()


def test_the_admin_retry_action_sends_a_failed_export_again(client, consumer, export_topics, refusing_platform):
    order = dead_lettered_order()
    export = OrderExport.objects.get(order=order)
    client.force_login(user_with("ops", may_redrive=True))
    refusing_platform.refusing = False

    response = client.post(
        "/admin/exports/orderexport/", {"action": "retry_failed", "_selected_action": [export.pk]}, follow=True
    )

    assert [str(m) for m in response.context["messages"]] == [f"Queued 1 export(s) again: orders #{order.pk}."]
    export.refresh_from_db()
    assert (export.status, export.attempts, export.last_error) == ("pending", 0, None)
    relay = OutboxRelay(stop=StopFlag(), grace=0)
    try:
        wait_until(lambda: relay.run_once().sent == 1, timeout=30, message="the relay did not resend the event")
    finally:
        relay.publisher.close()
    wait_until(lambda: OrderExport.objects.filter(order=order, status="exported").exists(), timeout=30)
    assert refusing_platform.received_order_ids() == [order.pk]
    audit = RedriveAudit.objects.get()
    assert (audit.actor, audit.action, audit.order_ids) == ("ops", "admin_retry", [order.pk])


def test_the_admin_retry_action_is_refused_without_the_permission(client, consumer, export_topics):
    order = dead_lettered_order()
    export = OrderExport.objects.get(order=order)
    client.force_login(user_with("viewer", may_redrive=False))

    page = client.get("/admin/exports/orderexport/")
    client.post("/admin/exports/orderexport/", {"action": "retry_failed", "_selected_action": [export.pk]})

    assert page.status_code == 200 and b"retry_failed" not in page.content
    export.refresh_from_db()
    assert export.status == "failed"
    assert not RedriveAudit.objects.exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_purge_outbox_deletes_only_sent_rows_older_than_asked(dry_run):
    now = timezone.now()

    def row(name, sent_days_ago):
        return OutboxEvent.objects.create(
            event_id=uuid.uuid4(),
            event_type="T",
            topic="t",
            key=name,
            payload="{}",
            sent_at=None if sent_days_ago is None else now - timedelta(days=sent_days_ago),
        )

    row("old", 8)
    row("recent", 1)
    unsent = row("unsent", None)
    OutboxEvent.objects.filter(pk=unsent.pk).update(created_at=now - timedelta(days=30))

    out = io.StringIO()
    call_command("purge_outbox", "--older-than", "7d", *(["--dry-run"] if dry_run else []), stdout=out)

    remaining = set(OutboxEvent.objects.values_list("key", flat=True))
    if dry_run:
        assert out.getvalue().strip() == "would delete 1 sent outbox row(s) older than 7d"
        assert remaining == {"old", "recent", "unsent"}
    else:
        assert out.getvalue().strip() == "deleted 1 sent outbox row(s) older than 7d"
        assert remaining == {"recent", "unsent"}


@pytest.mark.parametrize("value", ["7", "7 days", "-1d", "d"])
def test_purge_outbox_rejects_a_malformed_age(value):
    with pytest.raises(CommandError, match="--older-than takes a number and a unit") as excinfo:
        call_command("purge_outbox", f"--older-than={value}")
    assert excinfo.value.returncode == 2
