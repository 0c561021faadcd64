"""The admin's topic browser against the real broker: which topics it shows, which records a
page shows and in what order, how it shows what is not plain text, the bounds it keeps, and who
may see it."""

from __future__ import annotations

import html
import re
import threading
import time
from datetime import UTC, datetime

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.structs import OffsetAndMetadata

from kafka_bridge.console.browser import views as browse_views
from kafka_bridge.console.browser.reading import TopicNotFound, record_at, topic_records_read
from tests.support.factories import user_factory
from tests.support.helpers import wait_until
from tests.support.records import produce_records

pytestmark = pytest.mark.kafka

BROWSE = "kafka_bridge.browse_topics"


def shown(page) -> list[tuple[int, int]]:
    """(partition, offset) of the records a page lists, in the order it lists them."""
    return [
        (int(p), int(o))
        for p, o in re.findall(r'<tr class="record" data-partition="(\d+)" data-offset="(\d+)">', page.content.decode())
    ]


def records_url(topic: str) -> str:
    return f"/admin/kafka/topics/{topic}/"


@pytest.fixture
def kafka_topic_factory(kafka_topic_factory, settings):
    """The suite's factory, each topic added to KAFKA_BROWSE_TOPICS (the browser shows only the
    apps' topics and those listed) unless `browsable=False`."""
    settings.KAFKA_BROWSE_TOPICS = []

    def create(*, browsable: bool = True, **options) -> str:
        topic = kafka_topic_factory(**options)
        if browsable:
            settings.KAFKA_BROWSE_TOPICS = [*settings.KAFKA_BROWSE_TOPICS, topic]
        return topic

    return create


@pytest.fixture
def operator(client):
    """A client logged in as staff with the browse permission."""
    client.force_login(user_factory(is_staff=True, permissions=[BROWSE]))
    return client


@pytest.fixture
def interleaved_topic(kafka_topic_factory):
    """3 partitions with 3 records each, whose timestamps interleave: record i of partition p
    has the timestamp base + (3i + p) s, so that order by time differs from order by offset."""
    topic = kafka_topic_factory(partitions=3)
    base = (int(time.time()) - 600) * 1000
    produce_records(
        topic,
        (
            {
                "partition": p,
                "key": f"k{p}".encode(),
                "value": f"p{p}-r{i}".encode(),
                "timestamp_ms": base + (3 * i + p) * 1000,
            }
            for i in range(3)
            for p in range(3)
        ),
    )
    return topic, base


@pytest.mark.django_db
def test_the_topic_list_shows_partitions_and_record_counts_and_hides_internal_topics(operator, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=3)
    produce_records(
        topic, [{"partition": 0, "value": b"a"}, {"partition": 0, "value": b"b"}, {"partition": 2, "value": b"c"}]
    )

    page = operator.get("/admin/kafka/topics/")

    text = page.content.decode()
    assert page.status_code == 200
    assert re.search(
        rf'<tr data-topic="{re.escape(topic)}"><td><a href="/admin/kafka/topics/{re.escape(topic)}/">{re.escape(topic)}</a></td>\s*'
        r'<td class="partitions">3</td><td class="records">3</td></tr>',
        text,
    )
    assert "__consumer_offsets" not in text


@pytest.mark.django_db
def test_the_newest_records_of_all_partitions_come_newest_first_by_timestamp(operator, interleaved_topic):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"limit": 4})

    assert page.status_code == 200
    assert shown(page) == [(2, 2), (1, 2), (0, 2), (2, 1)]
    assert "newest first" in page.content.decode()


@pytest.mark.django_db
def test_records_from_an_offset_come_oldest_first_from_that_offset_in_each_partition(operator, interleaved_topic):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"offset": 1})

    assert shown(page) == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
    assert "oldest first" in page.content.decode()


@pytest.mark.django_db
def test_records_from_a_time_start_at_the_first_record_at_or_after_it_in_utc(operator, interleaved_topic):
    topic, base = interleaved_topic
    since = datetime.fromtimestamp(base / 1000 + 4, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")

    page = operator.get(records_url(topic), {"since": since})

    assert shown(page) == [(1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
    text = page.content.decode()
    assert f"{datetime.fromtimestamp(base / 1000 + 4, tz=UTC):%Y-%m-%d %H:%M:%S}.000 UTC" in text


@pytest.mark.django_db
def test_one_partition_shows_only_its_records(operator, interleaved_topic):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"partition": 1})

    assert shown(page) == [(1, 2), (1, 1), (1, 0)]


@pytest.mark.django_db
def test_a_partition_the_topic_does_not_have_is_a_404_that_says_so(operator, interleaved_topic):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"partition": 7})

    assert page.status_code == 404
    assert "has no partition 7 (it has 3)" in page.content.decode()


@pytest.mark.django_db
def test_an_unknown_topic_is_a_404_that_says_so(operator, unique_name, settings):
    absent = unique_name("absent")
    settings.KAFKA_BROWSE_TOPICS = [absent]

    page = operator.get(records_url(absent))

    assert page.status_code == 404
    assert "No topic named" in page.content.decode()


@pytest.mark.django_db
def test_a_key_filter_shows_only_the_records_with_exactly_that_key(operator, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    produce_records(
        topic,
        [
            {"partition": 0, "key": b"42", "value": b"a"},
            {"partition": 0, "key": b"420", "value": b"b"},
            {"partition": 1, "key": b"42", "value": b"c"},
            {"partition": 1, "key": None, "value": b"d"},
        ],
    )

    page = operator.get(records_url(topic), {"key": "42"})

    assert sorted(shown(page)) == [(0, 0), (1, 0)]


@pytest.mark.django_db
def test_a_text_filter_shows_only_the_records_whose_value_contains_it(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    produce_records(
        topic,
        [
            {"value": b'{"status": "confirmed"}'},
            {"value": b'{"status": "pending"}'},
            {"key": b"tombstone", "value": None},
            {"value": b"confirmed, plain text"},
        ],
    )

    page = operator.get(records_url(topic), {"contains": "confirmed", "offset": 0})

    assert shown(page) == [(0, 0), (0, 3)]


@pytest.mark.django_db
def test_null_and_empty_keys_and_values_binary_headers_and_non_utf8_values_are_shown_escaped(
    operator, kafka_topic_factory
):
    topic = kafka_topic_factory()
    produce_records(
        topic,
        [
            {"key": None, "value": b"v", "headers": [("bin", b"\xff\x00z")]},
            {"key": b"k", "value": None},
            {"key": b"", "value": b""},
            {"key": b"\xfe", "value": b"\xff\xfeabc\x01"},
        ],
    )

    page = operator.get(records_url(topic), {"offset": 0})

    assert page.status_code == 200
    rows = re.findall(r'<tr class="record".*?</tr>', page.content.decode(), re.DOTALL)
    assert len(rows) == 4
    null_key, null_value, empty, binary = rows
    assert '<td class="key"><span class="null">null</span></td>' in null_key
    assert r"<code>bin=\xff\x00z</code>" in null_key
    assert '<td class="value"><span class="null">null</span>' in null_value
    assert '<td class="key"><span class="empty">(empty)</span></td>' in empty
    assert '<td class="value"><span class="empty">(empty)</span>' in empty
    assert r"<code>\xfe</code>" in binary
    assert r"<pre>\xff\xfeabc\x01</pre>" in binary


@pytest.mark.django_db
def test_html_in_keys_headers_and_values_is_shown_escaped(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    produce_records(
        topic,
        [
            {
                "key": b"<b>k</b>",
                "value": b"<script>alert(1)</script>",
                "headers": [("h", b"<img src=x onerror=alert(2)>")],
            },
            {"value": b'{"note": "</pre><script>alert(3)</script>"}'},
        ],
    )

    page = operator.get(records_url(topic), {"offset": 0})

    text = page.content.decode()
    assert "<script>" not in text
    assert "<b>k</b>" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text


@pytest.mark.django_db
def test_json_values_are_pretty_printed(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    produce_records(topic, [{"value": b'{"event_type":"OrderExportRequested","order":{"id":7}}'}])

    page = operator.get(records_url(topic))

    assert (
        '<pre class="json">{\n  &quot;event_type&quot;: &quot;OrderExportRequested&quot;,\n  &quot;order&quot;: {\n    &quot;id&quot;: 7\n  }\n}</pre>'
        in page.content.decode()
    )


@pytest.mark.django_db
def test_a_long_value_is_cut_and_its_link_shows_the_whole_record(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    long_value = "x" * 4_000 + "THE-END"
    produce_records(topic, [{"value": long_value.encode()}])

    page = operator.get(records_url(topic))

    text = page.content.decode()
    assert "THE-END" not in text
    assert "x" * browse_views.VALUE_CUT_AT in text
    assert (
        f'The first {browse_views.VALUE_CUT_AT} characters of <span class="value-size">{len(long_value)}</span> bytes'
        in text
    )
    href = html.unescape(re.search(r'<a class="full-link" href="([^"]+)"', text).group(1))
    assert href == "?partition=0&offset=0&full=1"

    whole = operator.get(records_url(topic) + href)

    assert whole.status_code == 200
    assert f"<pre>{long_value}</pre>" in whole.content.decode()
    assert shown(whole) == [(0, 0)]


@pytest.mark.django_db
def test_the_whole_record_page_says_when_there_is_no_record_there(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    produce_records(topic, [{"value": b"one"}])

    page = operator.get(records_url(topic), {"partition": 0, "offset": 5, "full": 1})

    assert page.status_code == 200
    assert "No record at partition 0, offset 5" in page.content.decode()


@pytest.mark.django_db
def test_a_forward_search_stops_at_the_scan_bound_and_links_to_where_it_stopped(
    operator, kafka_topic_factory, monkeypatch
):
    monkeypatch.setattr(browse_views, "MAX_SCANNED", 5)
    topic = kafka_topic_factory()
    produce_records(topic, [{"key": b"hit" if i in (0, 15) else b"miss", "value": str(i).encode()} for i in range(20)])

    page = operator.get(records_url(topic), {"key": "hit", "offset": 0})

    text = page.content.decode()
    assert shown(page) == [(0, 0)]
    assert 'id="scan-bound"' in text and "bound of 5 records scanned" in text
    links = [html.unescape(h) for h in re.findall(r'<a class="resume-link" href="([^"]+)"', text)]
    assert links == ["?key=hit&partition=0&offset=5"]

    following = operator.get(records_url(topic) + "?key=hit&partition=0&offset=15")
    assert shown(following) == [(0, 15)]


@pytest.mark.django_db
def test_a_newest_search_says_how_far_back_the_scan_bound_let_it_look(operator, kafka_topic_factory, monkeypatch):
    monkeypatch.setattr(browse_views, "MAX_SCANNED", 5)
    topic = kafka_topic_factory()
    produce_records(topic, [{"key": b"hit" if i in (3, 17) else b"miss", "value": str(i).encode()} for i in range(20)])

    page = operator.get(records_url(topic), {"key": "hit"})

    text = page.content.decode()
    assert shown(page) == [(0, 17)]
    assert 'id="scan-bound"' in text
    assert "Only the newest records of each partition were searched; older ones were not." in text
    assert "not searched before offset 15" in text
    links = [html.unescape(h) for h in re.findall(r'<a class="resume-link" href="([^"]+)"', text)]
    assert links == ["?key=hit&partition=0&offset=10"]


def test_the_scan_bound_limits_the_records_read(interleaved_topic):
    topic, _ = interleaved_topic

    result = topic_records_read(
        topic=topic, from_offset=0, contains="no such text", limit=50, max_scanned=4, timeout_ms=5000
    )

    assert result.scanned == 4
    assert result.records == []
    assert result.scan_bound_reached and not result.timed_out
    assert sum(p.next_offset - p.start for p in result.partitions) == 4


@pytest.mark.django_db
def test_browsing_joins_no_consumer_group_and_leaves_no_thread_running(operator, interleaved_topic, kafka_admin):
    topic, _ = interleaved_topic
    operator.get("/admin/kafka/topics/")  # anything opened once for good (the database) is opened now
    groups_before = {g["group_id"] for g in kafka_admin.list_groups()}
    threads_before = threading.active_count()

    for query in ({}, {"offset": 0}, {"key": "k1"}, {"partition": 0, "offset": 0, "full": 1}):
        assert operator.get(records_url(topic), query).status_code == 200

    new_groups = {g["group_id"] for g in kafka_admin.list_groups()} - groups_before
    # Other tests on the shared broker (this run's or another worktree's) make groups meanwhile,
    # each named by `unique_name` ("<prefix>-<test>-<8 hex>", maybe with a suffix): not the browser's.
    assert {g for g in new_groups if not re.search(r"-[0-9a-f]{8}(\.|$)", g)} == set()
    wait_until(
        lambda: threading.active_count() <= threads_before,
        timeout=5,
        message=lambda: f"threads left: {sorted(t.name for t in threading.enumerate())}",
    )


@pytest.mark.django_db
def test_an_unreachable_broker_is_said_on_the_page_and_leaves_no_thread_running(operator, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.KAFKA_STATUS_TIMEOUT_MS = 300
    threads_before = threading.active_count()

    for url in (
        "/admin/kafka/topics/",
        records_url("order-export"),
        records_url("order-export") + "?partition=0&offset=0&full=1",
    ):
        page = operator.get(url)
        assert page.status_code == 200
        assert "Kafka is unreachable: no Kafka broker answered at 127.0.0.1:1" in page.content.decode()

    wait_until(
        lambda: threading.active_count() <= threads_before,
        timeout=5,
        message=lambda: f"threads left: {sorted(t.name for t in threading.enumerate())}",
    )


@pytest.mark.django_db
def test_an_event_topic_record_keyed_by_an_order_id_links_to_the_order(operator, kafka_topic_factory, settings):
    topic = kafka_topic_factory()
    settings.ORDER_EXPORT_TOPIC = topic
    produce_records(topic, [{"key": b"123", "value": b"{}"}, {"key": b"not-an-id", "value": b"{}"}])

    page = operator.get(records_url(topic), {"offset": 0})

    text = page.content.decode()
    assert '<a class="record-link" href="/admin/orders/order/123/change/"><code>123</code></a>' in text
    assert text.count('class="record-link"') == 1


@pytest.mark.django_db
def test_a_numeric_key_on_another_topic_links_to_nothing(operator, kafka_topic_factory):
    topic = kafka_topic_factory()
    produce_records(topic, [{"key": b"123", "value": b"{}"}])

    page = operator.get(records_url(topic))

    assert 'class="record-link"' not in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/kafka/topics/", "/admin/kafka/topics/order-export/"])
def test_anonymous_visitors_are_sent_to_the_admin_login(client, url):
    page = client.get(url)

    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/kafka/topics/", "/admin/kafka/topics/order-export/"])
def test_staff_without_the_browse_permission_are_refused(client, url):
    client.force_login(user_factory(is_staff=True, permissions=["orders.view_order"]))

    assert client.get(url).status_code == 403


@pytest.mark.django_db
def test_staff_with_the_browse_permission_see_the_topics(operator):
    assert operator.get("/admin/kafka/topics/").status_code == 200


@pytest.mark.django_db
def test_the_admin_index_links_to_the_topics_only_with_the_browse_permission(client):
    client.force_login(user_factory(is_staff=True))
    without = client.get("/admin/").content.decode()
    client.force_login(user_factory(is_staff=True, permissions=[BROWSE]))
    with_it = client.get("/admin/").content.decode()

    assert 'id="kafka-status-link"' in without and 'id="kafka-topics-link"' not in without
    assert '<a href="/admin/kafka/topics/" id="kafka-topics-link">Topics</a>' in with_it


def test_record_at_gives_the_exact_key_value_and_headers_the_broker_holds(kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    headers = [("event_type", b"OrderExportRequested"), ("bin", b"\xff\x00"), ("empty", b"")]
    produce_records(topic, [{"partition": 1, "key": b"1", "value": b"first"}])
    sent_at = int(time.time() * 1000)
    [sent] = produce_records(
        topic, [{"partition": 1, "key": b"7", "value": b'{"a": 1}', "headers": headers, "timestamp_ms": sent_at}]
    )

    record = record_at(topic=topic, partition=1, offset=sent.offset, timeout_ms=5000)

    assert (record.topic, record.partition, record.offset) == (topic, 1, 1)
    assert (record.key, record.value_head, record.headers) == (b"7", b'{"a": 1}', headers)
    assert record.value_complete and record.value_length == len(b'{"a": 1}')
    assert record.timestamp_ms == sent_at


def test_record_at_is_none_past_the_end_and_for_an_unknown_topic_or_partition(kafka_topic_factory, unique_name):
    topic = kafka_topic_factory()
    [sent] = produce_records(topic, [{"value": b"only"}])

    assert record_at(topic=topic, partition=0, offset=sent.offset + 1, timeout_ms=3000) is None
    assert record_at(topic=topic, partition=3, offset=0, timeout_ms=3000) is None
    assert record_at(topic=unique_name("absent"), partition=0, offset=0, timeout_ms=3000) is None


def test_a_null_header_value_is_shown_as_null_and_an_empty_one_as_empty():
    from django.template.loader import render_to_string

    from kafka_bridge.console.browser.reading import RecordView
    from kafka_bridge.console.browser.views import _row

    record = RecordView(
        topic="t",
        partition=0,
        offset=0,
        timestamp_ms=0,
        key=b"k",
        value_head=b"v",
        headers=[("nothing", None), ("empty", b"")],
    )

    cell = render_to_string("kafka_bridge/topics_record_row.html", {"row": _row(record, cut_at=100)})

    assert '<code>nothing=<span class="null">null</span></code>' in cell
    assert "<code>empty=</code>" in cell


def test_a_value_nested_too_deep_for_the_json_parser_is_shown_as_text():
    from kafka_bridge.console.browser.reading import RecordView

    deep = b"[" * 100_000 + b"]" * 100_000
    record = RecordView(topic="t", partition=0, offset=0, timestamp_ms=0, key=None, value_head=deep)

    assert not record.value_is_json
    assert record.value_text == deep.decode()


# --- which topics ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_apps_event_topic_and_its_dlt_are_browsable_without_listing_them(operator, export_topics, settings):
    topic, dlt = export_topics
    settings.KAFKA_BROWSE_TOPICS = []
    produce_records(topic, [{"partition": 0, "key": b"1", "value": b"event-value"}])
    produce_records(dlt, [{"partition": 0, "key": b"1", "value": b"dead-letter-value"}])

    listed = operator.get("/admin/kafka/topics/").content.decode()

    assert f'data-topic="{topic}"' in listed and f'data-topic="{dlt}"' in listed
    assert "event-value" in operator.get(records_url(topic)).content.decode()
    assert "dead-letter-value" in operator.get(records_url(dlt)).content.decode()


@pytest.mark.django_db
def test_a_topic_neither_the_apps_nor_listed_is_a_404_by_url_and_absent_from_the_list(
    operator, kafka_topic_factory, settings
):
    other = kafka_topic_factory(browsable=False)
    produce_records(other, [{"value": b"another-apps-secret"}])

    refused = [
        operator.get(url)
        for url in (
            records_url(other),
            records_url(other) + "?partition=0&offset=0&full=1",
            records_url(other) + "x/",
            records_url(other) + "0/0/value",
        )
    ]
    listed = operator.get("/admin/kafka/topics/").content.decode()

    assert [page.status_code for page in refused] == [404, 404, 404, 404]
    assert not any("another-apps-secret" in page.content.decode() for page in refused)
    assert other not in listed

    settings.KAFKA_BROWSE_TOPICS = [other]

    assert "another-apps-secret" in operator.get(records_url(other)).content.decode()
    assert operator.get(records_url(other) + "0/0/value").content == b"another-apps-secret"
    assert f'data-topic="{other}"' in operator.get("/admin/kafka/topics/").content.decode()


@pytest.mark.django_db
def test_kafkas_internal_topics_are_never_browsable_even_when_listed(
    operator, settings, consumer_group, kafka_topic, kafka_admin: KafkaAdminClient
):
    # A group of this test's own, whose offsets are now records of __consumer_offsets.
    kafka_admin.alter_group_offsets(consumer_group, {TopicPartition(kafka_topic, 0): OffsetAndMetadata(0, "", None)})
    internal = [t["name"] for t in kafka_admin.describe_topics() if t["error_code"] == 0 and t["is_internal"]]
    assert "__consumer_offsets" in internal
    settings.KAFKA_BROWSE_TOPICS = [*internal, "__consumer_offsets"]

    listed = operator.get("/admin/kafka/topics/").content.decode()
    refused = [
        operator.get(url)
        for name in internal
        for url in (
            records_url(name),
            records_url(name) + "?offset=0",
            records_url(name) + "?partition=0&offset=0&full=1",
            records_url(name) + "members/",
            records_url(name) + "0/0/value",
        )
    ]

    assert not any(f'data-topic="{name}"' in listed for name in internal)
    assert {page.status_code for page in refused} == {404}
    assert not any(consumer_group in page.content.decode() for page in refused)


def test_the_reading_refuses_a_topic_the_broker_says_is_internal_whatever_its_name(kafka_admin):
    """Below the pages' check of the name: the broker's own `is_internal`."""
    with pytest.raises(TopicNotFound):
        topic_records_read(topic="__consumer_offsets", limit=1, max_scanned=1, timeout_ms=3000)
    assert record_at(topic="__consumer_offsets", partition=0, offset=0, timeout_ms=3000) is None


# --- "From time" ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "since",
    [
        # As milliseconds since 1970, -1, -2 and -3: Kafka's latest, earliest and largest timestamp.
        "1969-12-31T23:59:59.999",
        "1969-12-31T23:59:59.998",
        "1969-12-31T23:59:59.997",
        "1969-12-31T23:59:59",
        "1900-01-01T00:00",
    ],
)
def test_a_time_before_1970_is_a_form_error_on_from_time_not_a_special_offset(operator, interleaved_topic, since):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"since": since})

    assert page.status_code == 200
    assert page.context["form"].errors == {
        "since": ["From time must be 1970-01-01 00:00:00 UTC or later: record timestamps start there."]
    }
    assert "From time must be 1970-01-01 00:00:00 UTC or later" in page.content.decode()
    assert shown(page) == []


@pytest.mark.django_db
def test_from_time_1970_01_01_reads_every_record_oldest_first(operator, interleaved_topic):
    topic, _ = interleaved_topic

    page = operator.get(records_url(topic), {"since": "1970-01-01T00:00:00"})

    assert len(shown(page)) == 9
    assert "oldest first" in page.content.decode()
