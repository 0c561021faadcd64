"""The outbox relay's claims: concurrent relays send each row once and keep per-key order."""
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.relay import OutboxRelay, outbox_claim
from kafka_bridge.runner import StopFlag
from tests.helpers import read_records, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def outbox_rows(topic: str, *, keys: int, per_key: int) -> list[OutboxEvent]:
    """Rows interleaved by key (k0, k1, ..., k0, k1, ...), created a minute ago."""
    rows = [
        OutboxEvent(
            event_id=uuid.uuid4(), event_type="Probe", topic=topic, key=f"k{k}",
            payload=json.dumps({"key": f"k{k}", "seq": seq}), headers=[],
            created_at=timezone.now() - timedelta(minutes=1),
        )
        for seq in range(per_key)
        for k in range(keys)
    ]
    return OutboxEvent.objects.bulk_create(rows)


def test_a_claim_skips_keys_whose_older_rows_another_relay_holds(kafka_topic):
    outbox_rows(kafka_topic, keys=2, per_key=3)  # ids in order: k0 k1 k0 k1 k0 k1

    first = outbox_claim(relay_id="a", older_than=0, limit=1, lease=60)
    second = outbox_claim(relay_id="b", older_than=0, limit=10, lease=60)

    assert [(r.key, json.loads(r.payload)["seq"]) for r in first] == [("k0", 0)]
    # b may not take k0's later rows while a holds k0's oldest: only k1's rows, in order.
    assert [(r.key, json.loads(r.payload)["seq"]) for r in second] == [("k1", 0), ("k1", 1), ("k1", 2)]


def test_an_expired_claim_is_taken_over(kafka_topic):
    outbox_rows(kafka_topic, keys=1, per_key=2)
    first = outbox_claim(relay_id="dead", older_than=0, limit=10, lease=60)
    OutboxEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))

    second = outbox_claim(relay_id="alive", older_than=0, limit=10, lease=60)

    assert [r.pk for r in second] == [r.pk for r in first]
    assert set(OutboxEvent.objects.values_list("claimed_by", flat=True)) == {"alive"}


def test_two_relays_keep_per_key_order_and_send_each_row_once(kafka_topic_factory):
    topic = kafka_topic_factory(partitions=3)
    rows = outbox_rows(topic, keys=10, per_key=30)
    relays = [OutboxRelay(stop=StopFlag(), grace=0, batch_size=7, interval=0.05) for _ in range(2)]
    sent_by: list[int] = [0, 0]

    def drain(index: int) -> None:
        relay = relays[index]
        try:
            while OutboxEvent.objects.filter(sent_at__isnull=True).exists():
                sent_by[index] += relay.run_once().sent
        finally:
            relay.publisher.close()
            connections.close_all()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    records = read_records(topic, expected=len(rows))
    assert len(records) == len(rows) == sum(sent_by)
    assert min(sent_by) > 0, f"one relay sent everything: {sent_by}"
    by_key: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        by_key.setdefault(event["key"], []).append(event["seq"])
    assert by_key == {f"k{k}": list(range(30)) for k in range(10)}
    wait_until(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), timeout=5)
