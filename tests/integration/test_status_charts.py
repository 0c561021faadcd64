"""The last hour on the admin's Kafka status page: exports per minute and the confirm -> exported
delay read from the database in a bounded number of queries, the lag per partition read from the
broker, all drawn as inline SVG."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from exports.models import OrderExport
from exports.selectors import DELAY_BUCKET_EDGES, export_minutes, export_status_panel
from kafka_bridge.console.charts.svg import bar_chart_svg, line_chart_svg
from orders.models import Order
from tests.support.factories import order_factory, user_factory
from tests.support.records import produce_records

STATUS_PAGE = "/admin/kafka-status/"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def now() -> datetime:
    """Half past a minute, so that "n seconds ago" falls in a minute known in advance."""
    return timezone.now().replace(second=30, microsecond=0)


@pytest.fixture
def operator(client):
    # Staff who may view exports: the page's exports panel lists failed ones for them.
    client.force_login(user_factory(is_staff=True, permissions=["exports.view_orderexport"]))
    return client


def an_export(*, confirmed_at: datetime, exported_at: datetime) -> OrderExport:
    """A confirmed order (made by the services) exported at `exported_at`."""
    order = order_factory(confirmed=True)
    Order.objects.filter(pk=order.pk).update(confirmed_at=confirmed_at)
    return OrderExport.objects.create(
        order=order, status=OrderExport.Status.EXPORTED, attempts=1, exported_at=exported_at
    )


def many_exports(*, exported_at: Iterable[datetime], delay_seconds: Iterable[float]) -> None:
    """Confirmed orders and their exports in bulk (two queries), for volumes the services would
    take too long to make: the i-th exported at `exported_at[i]`, `delay_seconds[i]` after its
    confirmation."""
    times = [(at, at - timedelta(seconds=delay)) for at, delay in zip(exported_at, delay_seconds, strict=True)]
    orders = Order.objects.bulk_create(
        Order(customer_id="c-charts", status=Order.Status.CONFIRMED, confirmed_at=confirmed) for _, confirmed in times
    )
    OrderExport.objects.bulk_create(
        OrderExport(order=order, status=OrderExport.Status.EXPORTED, attempts=1, exported_at=exported)
        for order, (exported, _) in zip(orders, times)
    )


def bucket_edge(seconds: float) -> float:
    """The figure the charts show for an exact delay: the upper edge of its bucket."""
    return next((edge for edge in DELAY_BUCKET_EDGES if seconds < edge), DELAY_BUCKET_EDGES[-1])


def nearest_rank(values: list[float], quantile: float) -> float:
    return sorted(values)[max(1, math.ceil(quantile * len(values))) - 1]


def svg_in(html: str, chart_id: str) -> ET.Element:
    """The chart `chart_id` of a page, parsed as XML (so it must be well-formed)."""
    found = re.search(rf'<svg [^>]*id="{re.escape(chart_id)}".*?</svg>', html, re.DOTALL)
    assert found, f"no chart {chart_id!r} on the page"
    return ET.fromstring(found.group(0))


def bars(svg: ET.Element) -> list[ET.Element]:
    return [rect for rect in svg.iter(f"{SVG}rect") if "bar" in rect.get("class", "").split()]


def mark_titles(marks: Iterable[ET.Element]) -> list[str]:
    return [mark.find(f"{SVG}title").text for mark in marks]


@pytest.mark.django_db
def test_exports_are_counted_in_the_minute_they_were_exported(now):
    for seconds_ago in (0, 10, 29):
        an_export(
            confirmed_at=now - timedelta(seconds=seconds_ago + 2), exported_at=now - timedelta(seconds=seconds_ago)
        )
    an_export(confirmed_at=now - timedelta(minutes=5), exported_at=now - timedelta(seconds=31))  # the minute before
    an_export(confirmed_at=now - timedelta(minutes=50), exported_at=now - timedelta(minutes=45))

    minutes = export_minutes(now=now)

    assert len(minutes) == 60
    assert minutes[-1].minute == now.replace(second=0) and minutes[0].minute == now.replace(second=0) - timedelta(
        minutes=59
    )
    assert [m.exported for m in minutes][-2:] == [1, 3]
    assert minutes[-1 - 45].exported == 1
    assert sum(m.exported for m in minutes) == 5


@pytest.mark.django_db
def test_a_minute_without_exports_counts_zero_and_has_no_delay(now):
    an_export(confirmed_at=now - timedelta(seconds=19), exported_at=now - timedelta(seconds=10))

    minutes = export_minutes(now=now)

    assert [m.exported for m in minutes[:-1]] == [0] * 59
    assert {(m.p50_seconds, m.p99_seconds) for m in minutes[:-1]} == {(None, None)}
    assert (minutes[-1].exported, minutes[-1].p50_seconds, minutes[-1].p99_seconds) == (1, 10.0, 10.0)  # 9 s


@pytest.mark.django_db
def test_exports_older_than_the_hour_or_not_exported_are_not_counted(now):
    first_minute = now.replace(second=0) - timedelta(minutes=59)
    an_export(confirmed_at=first_minute - timedelta(seconds=5), exported_at=first_minute)  # the oldest counted
    an_export(confirmed_at=first_minute - timedelta(seconds=5), exported_at=first_minute - timedelta(microseconds=1))
    an_export(confirmed_at=now - timedelta(hours=3), exported_at=now - timedelta(hours=2))
    OrderExport.objects.create(order=order_factory(confirmed=True), status=OrderExport.Status.PENDING)

    minutes = export_minutes(now=now)

    assert minutes[0].exported == 1
    assert sum(m.exported for m in minutes) == 1


@pytest.mark.django_db
def test_the_delay_percentiles_are_the_exact_ones_up_to_one_bucket(now):
    # 200 exports in the current minute, with delays from 40 ms to about 40 minutes.
    delays = [0.04 * 1.06**k for k in range(200)]
    many_exports(exported_at=[now - timedelta(seconds=5)] * len(delays), delay_seconds=delays)

    minute = export_minutes(now=now)[-1]

    assert minute.exported == 200
    for shown, quantile in ((minute.p50_seconds, 0.50), (minute.p99_seconds, 0.99)):
        exact = nearest_rank(delays, quantile)
        assert shown == bucket_edge(exact)
        # The documented precision: above the exact value, and at most 4/3 of it.
        assert exact < shown <= exact * 4 / 3


@pytest.mark.django_db
def test_a_negative_delay_from_clocks_apart_counts_as_the_shortest(now):
    an_export(confirmed_at=now - timedelta(seconds=5), exported_at=now - timedelta(seconds=6))

    minute = export_minutes(now=now)[-1]

    assert (minute.exported, minute.p50_seconds) == (1, DELAY_BUCKET_EDGES[0])


def test_a_bar_chart_is_well_formed_svg_with_one_bar_per_label():
    svg = ET.fromstring(
        bar_chart_svg(chart_id="c", title="Things", labels=["a", "b", "c"], values=[3, 0, None], value_name="things")
    )

    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "Things"
    assert mark_titles(bars(svg)) == ["a, things: 3", "b, things: 0", "c, things: unknown"]
    heights = [float(bar.get("height")) for bar in bars(svg)]
    assert heights[0] > 0 and heights[1] == heights[2] == 0


def test_chart_labels_and_titles_are_escaped():
    title, label = '<script>alert("x")</script> & co', "<b>p&q</b>"

    markup = str(bar_chart_svg(chart_id="x", title=title, labels=[label], values=[1]))
    lines = str(line_chart_svg(chart_id="y", title=title, labels=[label], series={"<i>": [1.5]}, unit="s"))

    for text in (markup, lines):
        assert "<script>" not in text and "<b>" not in text and "<i>" not in text
        svg = ET.fromstring(text)
        assert svg.find(f"{SVG}title").text == title
        assert label in {t.text for t in svg.iter(f"{SVG}text")}
    assert mark_titles(ET.fromstring(lines).iter(f"{SVG}circle")) == ["<b>p&q</b>, <i>: 1.5 s"]


def test_a_line_chart_breaks_its_line_where_a_value_is_missing():
    svg = ET.fromstring(
        line_chart_svg(
            chart_id="d", title="Delay", labels=list("abcde"), series={"p50": [1, 2, None, 4, 5], "p99": [None] * 5}
        )
    )

    p50, p99 = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "series"]
    assert p50.find(f"{SVG}path").get("d").count("M") == 2
    assert len(p50.findall(f"{SVG}circle")) == 4
    assert p99.find(f"{SVG}path").get("d") == "" and not p99.findall(f"{SVG}circle")


@pytest.mark.django_db
def test_the_exports_panel_costs_the_same_queries_for_10_and_for_1000_exports(django_assert_max_num_queries):
    def exports(count: int) -> None:
        # Spread over the last 58 minutes, so that all are in the hour even if a minute turns.
        latest = timezone.now()
        many_exports(
            exported_at=[latest - timedelta(seconds=i * 3480 / count) for i in range(count)],
            delay_seconds=[0.05 * (i % 97 + 1) ** 2 for i in range(count)],
        )

    # A superuser has every permission without a query.
    viewer = get_user_model()(is_superuser=True, is_active=True)
    exports(10)
    with CaptureQueriesContext(connection) as with_10:
        export_status_panel(user=viewer)
    exports(990)
    with django_assert_max_num_queries(3), CaptureQueriesContext(connection) as with_1000:
        panel = export_status_panel(user=viewer)

    assert len(with_1000) == len(with_10) == 3
    [per_minute, _] = panel["charts"]
    assert sum(per_minute.series["exports"]) == 1000


@pytest.mark.django_db
def test_the_page_without_a_broker_draws_the_database_charts_and_says_the_lag_is_unknown(operator, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.KAFKA_STATUS_TIMEOUT_MS = 500
    exported_at = timezone.now()
    an_export(confirmed_at=exported_at - timedelta(seconds=3), exported_at=exported_at)

    html = operator.get(STATUS_PAGE).content.decode()

    assert "Kafka is unreachable" in html
    assert '<p id="export-group-lag-unknown">Lag unknown: Kafka is unreachable.</p>' in html
    assert 'id="export-group-lag"' not in html
    per_minute = svg_in(html, "exports-per-minute")
    assert len(bars(per_minute)) == 60
    assert sum(int(t.rsplit(": ", 1)[1]) for t in mark_titles(bars(per_minute))) == 1
    delay = svg_in(html, "export-delay")
    assert [g.get("data-series") for g in delay.iter(f"{SVG}g") if g.get("class") == "series"] == ["p50", "p99"]
    assert 'id="exports-per-minute-table"' in html and 'id="export-delay-table"' in html


@pytest.mark.django_db
def test_the_page_costs_the_same_queries_for_10_and_for_1000_exports(operator, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.KAFKA_STATUS_TIMEOUT_MS = 500
    now = timezone.now()
    many_exports(exported_at=[now - timedelta(minutes=i) for i in range(10)], delay_seconds=[2.0] * 10)
    operator.get(STATUS_PAGE)  # the session and the user, loaded once per request, are warm now
    with CaptureQueriesContext(connection) as with_10:
        operator.get(STATUS_PAGE)
    many_exports(
        exported_at=[now - timedelta(seconds=i * 3.6) for i in range(990)],
        delay_seconds=[0.1 * (i % 50 + 1) for i in range(990)],
    )

    with CaptureQueriesContext(connection) as with_1000:
        operator.get(STATUS_PAGE)

    assert len(with_1000) == len(with_10)
    assert sum(OrderExport._meta.db_table in q["sql"] for q in with_1000.captured_queries) == 3


@pytest.mark.kafka
@pytest.mark.django_db
def test_the_page_draws_one_lag_bar_per_partition_of_the_export_group(
    operator, export_topics, export_group, kafka_admin
):
    topic, _ = export_topics
    produce_records(
        topic,
        [{"value": f"{partition}-{i}".encode(), "partition": partition} for partition in range(3) for i in range(5)],
    )
    kafka_admin.alter_group_offsets(
        export_group, {TopicPartition(topic, p): OffsetAndMetadata(p, "", None) for p in range(3)}
    )

    html = operator.get(STATUS_PAGE).content.decode()

    lag = svg_in(html, "export-group-lag")
    assert lag.find(f"{SVG}title").text == f"Lag per partition of {export_group}"
    assert mark_titles(bars(lag)) == ["0, lag: 5", "1, lag: 4", "2, lag: 3"]
    assert 'id="export-group-lag-unknown"' not in html
