"""A redrive against a DLT that anyone with write access may have written to: it republishes what
the consumer kept, byte for byte (null header values included), names what it cannot republish
and goes on with the rest, writes only to this app's event topics, and reads a selection where
it is instead of the whole DLT."""

from __future__ import annotations

import io
import os

import pytest
from django.core.management import CommandError, call_command
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from exports import redrive
from exports.console.dead_letters import REPLAY_CHUNK
from exports.models import OrderExport, RedriveAudit
from kafka_bridge.connection import connection_config
from kafka_bridge.consumer.dead_letters import _RecordCopyProducer
from tests.support.helpers import wait_until
from tests.support.records import end_offsets, read_records
from tests.support.redrive import DEAD_LETTERS_URL, dead_letter_position, dead_lettered_order, user_with

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def consumer(refusing_consumer):
    return refusing_consumer


def forge_dead_letter(dlt: str, *, key, value, headers, original_topic: str, partition: int = 0) -> str:
    """A record written straight to the DLT, as whoever holds write access to it could: returns
    its `P:O`. Null keys, values and header values are written as Kafka has them."""
    producer = _RecordCopyProducer(**connection_config(), compression_type="gzip", max_request_size=64 * 1024 * 1024)
    try:
        metadata = producer.send_copy(
            dlt,
            partition=partition,
            key=key,
            value=value,
            headers=[
                *headers,
                ("dlt.original.topic", original_topic.encode()),
                ("dlt.original.partition", str(partition).encode()),
                ("dlt.original.offset", b"0"),
                ("dlt.error", b"forged"),
                ("dlt.attempts", b"1"),
            ],
        ).get(timeout=10)
    finally:
        producer.close()
    return f"{metadata.partition}:{metadata.offset}"


def replay(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("replay_dlt", *args, stdout=out, stderr=err)
    except CommandError as exc:
        raise ReplayFailed(out.getvalue(), err.getvalue(), exc) from exc
    return out.getvalue(), err.getvalue()


class ReplayFailed(Exception):
    def __init__(self, out: str, err: str, error: CommandError):
        super().__init__(str(error))
        self.out, self.err, self.error = out, err, error


def refused_count(reason: str) -> float:
    return REGISTRY.get_sample_value("orderflow_redrives_refused_total", {"reason": reason}) or 0.0


def test_a_mixed_redrive_republishes_a_null_header_dead_letter_byte_for_byte_and_the_genuine_order_is_exported(
    client, consumer, export_topics, refusing_platform
):
    topic, dlt = export_topics
    order = dead_lettered_order()
    genuine = dead_letter_position(dlt, order, records_on_the_dlt=1)
    nulls = forge_dead_letter(
        dlt, key=None, value=b"not an event", headers=[("origin", None), ("note", b"")], original_topic=topic
    )
    client.force_login(user_with("ops", may_redrive=True))
    refusing_platform.refusing = False

    response = client.post(DEAD_LETTERS_URL, {"position": [genuine, nulls]}, follow=True)

    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Redrove 2 dead letter(s): ")
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message="the genuine order was not exported after the redrive",
    )
    audit = RedriveAudit.objects.get()
    assert (audit.actor, audit.order_ids) == ("ops", [order.pk])
    assert sorted(tuple(p) for p in audit.dlt_positions) == sorted(
        (dlt, *map(int, position.split(":"))) for position in (genuine, nulls)
    )
    [copy] = [r for r in read_records(topic, expected=3) if r.value == b"not an event"]
    assert copy.key is None
    assert copy.headers == [("origin", None), ("note", b""), ("redrive.from", f"{dlt}:{nulls}".encode())]


def test_a_record_the_broker_refuses_is_named_the_others_are_replayed_and_a_later_run_names_it_again(
    consumer, export_topics, refusing_platform
):
    topic, dlt = export_topics
    order = dead_lettered_order()
    # Random bytes do not compress: 2 MiB fits the DLT (4 MiB) but not the event topic (1 MiB).
    refused = forge_dead_letter(
        dlt, key=b"noise", value=os.urandom(2 * 1024 * 1024), headers=[], original_topic=topic, partition=2
    )
    user_with("ops", may_redrive=True)
    refusing_platform.refusing = False
    before = refused_count("send")

    with pytest.raises(ReplayFailed) as failed:
        replay("--operator", "ops")

    assert failed.value.error.returncode == 1
    assert str(failed.value) == "1 record(s) refused"
    [line] = [line for line in failed.value.err.splitlines() if line.startswith("refused ")]
    assert line.startswith(f"refused {refused}: not republished: MessageSizeTooLargeError")
    assert failed.value.out.strip().endswith("1 record(s) replayed") and f"key={order.pk}" in failed.value.out
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message="the replayable order was not exported",
    )
    assert RedriveAudit.objects.get().order_ids == [order.pk]
    assert refused_count("send") == before + 1

    # The replay group did not move past the refused record: the next run names it again, and
    # replays nothing twice.
    with pytest.raises(ReplayFailed) as again:
        replay("--operator", "ops")
    assert again.value.out.strip() == "0 record(s) replayed"
    assert f"refused {refused}: not republished" in again.value.err
    assert RedriveAudit.objects.count() == 1


def test_a_dead_letter_naming_a_topic_that_is_not_this_apps_is_refused_by_name_counted_and_shown(
    client, consumer, export_topics, kafka_topic, refusing_platform
):
    topic, dlt = export_topics
    order = dead_lettered_order()
    genuine = dead_letter_position(dlt, order, records_on_the_dlt=1)
    forged = forge_dead_letter(dlt, key=b"1", value=b'{"steal": true}', headers=[], original_topic=kafka_topic)
    client.force_login(user_with("ops", may_redrive=True))
    before = refused_count("target")

    page = client.get(DEAD_LETTERS_URL).content.decode()

    assert "<strong>1</strong> of these dead letter(s) cannot be redriven" in page
    assert f"its dlt.original.topic &#x27;{kafka_topic}&#x27; is not an event topic of this app" in page
    assert f'value="{forged}"' not in page and f'value="{genuine}"' in page

    # Posted anyway, as a forged form would: refused by name, the genuine one redriven.
    refusing_platform.refusing = False
    response = client.post(DEAD_LETTERS_URL, {"position": [genuine, forged]}, follow=True)

    messages = [str(m) for m in response.context["messages"]]
    assert messages[0].startswith("Redrove 1 dead letter(s): ")
    assert messages[1] == (
        f"Refused 1 dead letter(s): {forged}: its dlt.original.topic {kafka_topic!r} is not an event topic of "
        "this app; refused"
    )
    assert refused_count("target") == before + 1
    wait_until(lambda: OrderExport.objects.filter(order=order, status="exported").exists(), timeout=30)
    assert end_offsets(kafka_topic) == {0: 0}

    with pytest.raises(ReplayFailed) as failed:
        replay("--operator", "ops", "--offset", forged)
    assert (
        failed.value.err.strip()
        == f"refused {forged}: its dlt.original.topic {kafka_topic!r} is not an event topic of this app; refused"
    )
    assert end_offsets(kafka_topic) == {0: 0}


class CountingConsumer(KafkaConsumer):
    """The redrive's consumer, counting the records its polls hand back."""

    read = 0

    def poll(self, *args, **kwargs):
        batches = super().poll(*args, **kwargs)
        CountingConsumer.read += sum(len(batch) for batch in batches.values())
        return batches


def test_a_selective_redrive_reads_only_where_its_selection_is_and_a_full_one_reads_in_chunks_with_progress(
    consumer, export_topics, refusing_platform, monkeypatch
):
    topic, dlt = export_topics
    # Whichever partition the order's dead letter goes to, it lands behind 2,000 others.
    per_partition = 4 * REPLAY_CHUNK
    filler = 3 * per_partition
    producer = _RecordCopyProducer(**connection_config(), linger_ms=20)
    try:
        for n in range(filler):
            producer.send_copy(
                dlt,
                partition=n % 3,
                key=b"x",
                value=b"filler %d" % n,
                headers=[("dlt.original.topic", topic.encode())],
            )
        producer.flush(timeout=30)
    finally:
        producer.close()
    order = dead_lettered_order()
    position = dead_letter_position(dlt, order, records_on_the_dlt=filler + 1)
    assert int(position.split(":")[1]) == per_partition
    user_with("ops", may_redrive=True)
    refusing_platform.refusing = False
    monkeypatch.setattr(redrive, "KafkaConsumer", CountingConsumer)
    CountingConsumer.read = 0

    out, _ = replay("--operator", "ops", "--offset", position)

    assert out.strip().endswith("1 record(s) replayed")
    assert CountingConsumer.read <= REPLAY_CHUNK, f"read {CountingConsumer.read} records to replay one"
    wait_until(lambda: OrderExport.objects.filter(order=order, status="exported").exists(), timeout=30)

    CountingConsumer.read = 0
    out, err = replay("--operator", "ops", "--dry-run")
    assert out.strip().endswith(f"{filler} record(s) would be replayed (dry run)")
    assert f"read {filler + 1:,} of {filler + 1:,} record(s) of {dlt}" in err
    assert CountingConsumer.read == filler + 1
