"""The console's pages over records a hostile (or broken) producer wrote: values of 10 MB of
repetitive JSON, keys and headers of a megabyte, gzip-compressed to a few KB each. Each page
answers within KAFKA_STATUS_TIMEOUT_MS plus a second, holds a bounded amount of memory while it
does (tracemalloc's peak: the decompressed bytes are Python objects), shows a bounded part of
each record and its size, and the download gives the whole value back byte for byte."""

from __future__ import annotations

import html
import re
import time
import tracemalloc
import uuid
from collections.abc import Iterator

import pytest
from django.utils import timezone
from kafka import KafkaProducer

from kafka_bridge.connection import connection_config
from kafka_bridge.console.browser.reading import HEADER_HEAD_BYTES, KEY_HEAD_BYTES, VALUE_HEAD_BYTES
from kafka_bridge.console.browser.views import VALUE_CUT_AT
from kafka_bridge.consumer.dead_letters import dead_letter_headers
from kafka_bridge.models import OutboxEvent
from tests.support.factories import consumer_record_factory, order_factory, user_factory

pytestmark = [pytest.mark.kafka, pytest.mark.django_db]

BROWSE = "kafka_bridge.browse_topics"
REDRIVE = "exports.redrive_orderexport"
OPERATOR = ["orders.view_order", "exports.view_orderexport", BROWSE]

GIANTS = 30
# One value: 200,000 order lines of 52 bytes, 10.4 MB, about 30 KB gzip-compressed.
LINES = 200_000
LINE = b'{"sku": "ABC-123", "quantity": 1, "price": "9.99"}, '
# A key and a header value of a megabyte each.
BIG = 1024 * 1024
# What a page may add to the web process's Python memory at its peak, whatever the records hold.
# kafka-python decompresses a whole batch at once (here one giant a batch: 12.5 MB with its key
# and header): for a moment the decompressed bytes live twice, and unpacking a record copies its
# key, value and headers out of the batch. Measured: 33 to 47 MiB a page. Without the bounds a
# page held every value it listed whole (300 MB for these 30) and parsed each as JSON (392 MB and
# 1.6 s for one 10 MB value, by the measure).
MEMORY_BOUND = 64 * 1024 * 1024


def giant_value(i: int) -> bytes:
    return b'{"giant": %d, "lines": [' % i + LINE * LINES + b'{}], "end": "THE-END-%d"}' % i


def giant_key(i: int) -> bytes:
    return b"%d-" % i + b"k" * BIG


def produce_giants(topic: str, *, headers=None, count: int = GIANTS) -> None:
    """`count` giants sent as a hostile producer would: gzip, a request size far above the
    default, one at a time so the producer holds one."""
    producer = KafkaProducer(
        **connection_config(),
        compression_type="gzip",
        max_request_size=64 * 1024 * 1024,
    )
    try:
        for i in range(count):
            record_headers = headers(i) if headers else [("big", b"h" * BIG)]
            producer.send(topic, key=giant_key(i), value=giant_value(i), headers=record_headers).get(timeout=30)
    finally:
        producer.close(timeout=5)


def measured_get(client, url: str):
    """The answer to GET `url`, the seconds it took and the most Python memory it added at once."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        started = time.monotonic()
        response = client.get(url)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{url}: {elapsed:.2f} s, tracemalloc peak +{(peak - before) / 2**20:.1f} MiB")
    return response, elapsed, peak - before


def time_bound(settings) -> float:
    """The page's own bound plus what it may take to finish the record in hand and render: a
    giant's decompression traced by tracemalloc, on a machine whose two cores the other tests'
    broker and workers share, has taken 1.1 s past a 0.5 s bound. A page that ignored its bound
    would read on through every giant (the tests also check the page says it stopped early)."""
    return settings.KAFKA_STATUS_TIMEOUT_MS / 1000 + 2


@pytest.fixture(scope="module")
def giants_on_the_broker(kafka_admin) -> Iterator[str]:
    """A topic of giants, written once for the module's tests (compressing 30 giants takes
    seconds): they only read it. Deleted after the last of them."""
    topic = f"giants-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    try:
        produce_giants(topic)
        yield topic
    finally:
        kafka_admin.delete_topics([topic])


@pytest.fixture
def giants_topic(giants_on_the_broker, settings) -> str:
    """The topic of giants, listed in KAFKA_BROWSE_TOPICS so that the browser shows it."""
    settings.KAFKA_BROWSE_TOPICS = [giants_on_the_broker]
    return giants_on_the_broker


@pytest.fixture
def operator(client):
    client.force_login(user_factory(is_staff=True, permissions=OPERATOR))
    return client


# The pages that must list all 30 giants get a bound that reading them fits in whatever else the
# machine runs (about 1.5 s alone); the next test shows a bound running out among them.
WHOLE_SCAN_TIMEOUT_MS = 10_000


def test_the_topic_browser_over_giants_answers_in_bounded_time_and_memory_and_shows_their_sizes(
    operator, giants_topic, settings
):
    settings.KAFKA_STATUS_TIMEOUT_MS = WHOLE_SCAN_TIMEOUT_MS
    response, elapsed, peak = measured_get(operator, f"/admin/kafka/topics/{giants_topic}/?limit=500")

    page = response.content.decode()
    assert response.status_code == 200
    assert elapsed <= time_bound(settings)
    assert peak <= MEMORY_BOUND
    rows = re.findall(r'<tr class="record" .*?</tr>', page, re.S)
    assert len(rows) == GIANTS and 'id="time-bound"' not in page
    for row in rows:
        offset = int(re.search(r'data-offset="(\d+)"', row).group(1))
        assert f'<span class="value-size">{len(giant_value(offset))}</span> bytes' in row
        value = html.unescape(re.search(r"<pre>(.*?)</pre>", row, re.S).group(1))
        assert len(value) <= min(VALUE_CUT_AT, VALUE_HEAD_BYTES) and value.startswith('{"giant": ')
        key = html.unescape(re.search(r"<code>(.*?)</code>", row, re.S).group(1))
        assert len(key) <= KEY_HEAD_BYTES
    assert "THE-END" not in page
    # Each giant's cells are a few KB: the page is bounded, not the records.
    assert len(page) < GIANTS * (VALUE_CUT_AT + KEY_HEAD_BYTES + HEADER_HEAD_BYTES + 2_000) + 50_000


def test_a_giant_is_downloaded_whole_byte_for_byte_from_the_link_on_its_row(operator, giants_topic, settings):
    page = operator.get(f"/admin/kafka/topics/{giants_topic}/?partition=0&offset=7&limit=1").content.decode()
    href = html.unescape(re.search(r'<a class="download-link" href="([^"]+)"', page).group(1))
    assert href == f"/admin/kafka/topics/{giants_topic}/0/7/value"

    response, elapsed, peak = measured_get(operator, href)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == f'attachment; filename="{giants_topic}-0-7.bin"'
    assert response.content == giant_value(7)
    assert elapsed <= time_bound(settings)
    # The one value, whole, on top of what any page holds.
    assert peak <= MEMORY_BOUND + len(giant_value(7))


def test_the_record_page_of_a_giant_shows_its_head_and_size_and_links_the_download(operator, giants_topic, settings):
    response, elapsed, peak = measured_get(operator, f"/admin/kafka/topics/{giants_topic}/?partition=0&offset=3&full=1")

    page = response.content.decode()
    assert response.status_code == 200
    assert elapsed <= time_bound(settings) and peak <= MEMORY_BOUND
    assert f'<span class="value-size">{len(giant_value(3))}</span> bytes' in page
    assert f'href="/admin/kafka/topics/{giants_topic}/0/3/value"' in page
    assert "THE-END" not in page


def test_a_page_whose_bound_runs_out_among_giants_says_so_and_answers_in_time(operator, giants_topic, settings):
    # Decompressing and hashing 30 giants takes about a second, more than this bound allows.
    settings.KAFKA_STATUS_TIMEOUT_MS = 500

    response, elapsed, peak = measured_get(operator, f"/admin/kafka/topics/{giants_topic}/?offset=0&limit=500")

    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="time-bound"' in page
    assert elapsed <= time_bound(settings) and peak <= MEMORY_BOUND
    assert len(re.findall(r'<tr class="record" ', page)) < GIANTS
    assert re.search(r'<a class="resume-link" href="\?[^"]*offset=\d+', page)


def test_the_dead_letters_page_over_giants_with_megabyte_headers_answers_in_bounded_time_and_memory(
    client, kafka_topic_factory, settings
):
    settings.KAFKA_STATUS_TIMEOUT_MS = WHOLE_SCAN_TIMEOUT_MS
    dlt = kafka_topic_factory(prefix="dlt")
    settings.ORDER_EXPORT_DLT_TOPIC = dlt
    settings.ORDER_EXPORT_CONSUMER_GROUP = f"giants-{uuid.uuid4().hex[:8]}"
    error = "the platform said: " + "no " * (BIG // 3)

    def headers(i):
        original = consumer_record_factory(topic="order-export", partition=0, offset=i, key=b"1", value=b"{}")
        return [(n, v) for n, v in dead_letter_headers(original, error="x", attempts=1) if n != "dlt.error"] + [
            ("dlt.error", error.encode())
        ]

    produce_giants(dlt, headers=headers)
    client.force_login(user_factory(is_staff=True, permissions=[REDRIVE, "exports.view_orderexport"]))

    response, elapsed, peak = measured_get(client, "/admin/exports/orderexport/dead-letters/")

    page = response.content.decode()
    assert response.status_code == 200
    assert elapsed <= time_bound(settings) and peak <= MEMORY_BOUND
    assert page.count("the platform said: no no") == GIANTS
    assert "no " * (HEADER_HEAD_BYTES // 3 + 1) not in page
    assert len(page) < GIANTS * (KEY_HEAD_BYTES + HEADER_HEAD_BYTES + 2_000) + 100_000


@pytest.mark.django_db(transaction=True)
def test_the_delivery_panel_of_an_order_whose_record_is_a_giant_answers_in_bounded_time_and_memory(
    operator, giants_topic, settings
):
    settings.ORDER_EXPORT_TOPIC = giants_topic
    order = order_factory()
    OutboxEvent.objects.create(
        event_id=uuid.uuid4(),
        event_type="OrderExportRequested",
        topic=giants_topic,
        key=str(order.pk),
        payload="{}",
        sent_at=timezone.now(),
        partition=0,
        offset=11,
    )

    response, elapsed, peak = measured_get(operator, f"/admin/orders/order/{order.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert elapsed <= time_bound(settings) and peak <= MEMORY_BOUND
    assert f'<span class="value-size">{len(giant_value(11))}</span> bytes' in page
    assert f'href="/admin/kafka/topics/{giants_topic}/0/11/value"' in page
    assert "{&quot;giant&quot;: 11" in page and "THE-END" not in page


def test_the_status_page_with_a_topic_of_giants_answers_in_bounded_time_and_memory(client, giants_topic, settings):
    client.force_login(user_factory(is_staff=True))

    response, elapsed, peak = measured_get(client, "/admin/kafka-status/")

    assert response.status_code == 200
    assert giants_topic in response.content.decode()
    assert elapsed <= time_bound(settings) and peak <= MEMORY_BOUND
