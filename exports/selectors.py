"""Reads of the exports app."""

from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import NotSupportedError, connections, router
from django.db.models import Case, Count, F, FloatField, Func, IntegerField, Value, When
from django.db.models.functions import TruncMinute
from django.db.models.lookups import LessThan
from django.utils import timezone

from exports.models import OrderExport
from kafka_bridge.console.charts.svg import Chart
from orders.models import Order

# Edges of the delay buckets, in seconds: 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6 and 8 times each power
# of ten from 10 ms to 80,000 s, then 100,000 s. Two neighbouring edges differ by at most 4/3.
DELAY_BUCKET_EDGES: tuple[float, ...] = tuple(
    round(step * 10.0**exponent, 6) for exponent in range(-2, 5) for step in (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
) + (100_000.0,)
# The bucket of an export whose order has no confirmation time: counted, but in no percentile.
NO_DELAY = -1


@dataclass(frozen=True)
class ExportMinute:
    """One minute of exports: how many were exported in it, and the confirm -> exported delay
    (seconds) that half of them, and 99 in 100, stayed under (None when the minute had none)."""

    minute: datetime
    exported: int
    p50_seconds: float | None
    p99_seconds: float | None


# The columns `order_exports_of` reads of an order's export, in its SELECT's order.
_EXPORT_COLUMNS = (
    "id",
    "status",
    "event_id",
    "attempts",
    "dead_letter_topic",
    "dead_letter_partition",
    "dead_letter_offset",
)


def order_exports_of(order_ids: set[int]) -> tuple[set[int], dict[int, OrderExport]]:
    """Which of `order_ids` are orders, and the export of those that have one (the fields the
    consumer's plan reads), in one statement.

    The statement is built once per database from the models' tables and columns and given the
    ids as one parameter (an array on PostgreSQL, a JSON list SQLite's json_each reads): the
    consumer reads a batch every few milliseconds, and building the same query with the ORM each
    time cost it about 1.4 ms a batch of 17 (about 80 µs an export), against 0.1 ms this way."""
    if not order_ids:
        return set(), {}
    db = connections[router.db_for_read(OrderExport)]
    with db.cursor() as cursor:
        cursor.execute(_order_exports_sql(db.alias, db.vendor), [_id_list(sorted(order_ids), db.vendor)])
        rows = cursor.fetchall()
    known, exports = set(), {}
    for order_id, *export in rows:
        known.add(order_id)
        if export[0] is not None:
            fields = dict(zip(_EXPORT_COLUMNS, export))
            if fields["event_id"] is not None and not isinstance(fields["event_id"], uuid.UUID):
                fields["event_id"] = uuid.UUID(fields["event_id"])  # SQLite keeps its hex
            exports[order_id] = OrderExport(order_id=order_id, **fields)
    return known, exports


_order_exports_statements: dict[str, str] = {}


def _order_exports_sql(alias: str, vendor: str) -> str:
    sql = _order_exports_statements.get(alias)
    if sql is None:
        quote = connections[alias].ops.quote_name
        orders, exports = quote(Order._meta.db_table), quote(OrderExport._meta.db_table)
        order_pk = quote(Order._meta.pk.column)
        columns = ", ".join(f"e.{quote(OrderExport._meta.get_field(name).column)}" for name in _EXPORT_COLUMNS)
        order_fk = quote(OrderExport._meta.get_field("order").column)
        where = (
            f"o.{order_pk} = ANY(%s)"
            if vendor == "postgresql"
            else f"o.{order_pk} IN (SELECT value FROM json_each(%s))"
        )
        sql = _order_exports_statements[alias] = (
            f"SELECT o.{order_pk}, {columns} FROM {orders} o LEFT JOIN {exports} e ON e.{order_fk} = o.{order_pk} WHERE {where}"
        )
    return sql


def _id_list(ids: list[int], vendor: str) -> object:
    return ids if vendor == "postgresql" else json.dumps(ids)


class SecondsBetween(Func):
    """`later - earlier` in seconds, as a float, computed by the database itself (Django's own
    datetime subtraction calls back into Python for every row on SQLite)."""

    output_field = FloatField()
    arity = 2

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError(f"SecondsBetween is written for SQLite and PostgreSQL, not {connection.vendor}")

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra_context,
        )

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler, connection, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ", **extra_context
        )


class WidthBucket(Func):
    """PostgreSQL's width_bucket(value, thresholds): how many of `edges` are at most the value,
    in one call (the bisecting CASE of other databases compares seven times)."""

    output_field = IntegerField()
    arity = 1

    def __init__(self, expression, *, edges: tuple[float, ...]) -> None:
        super().__init__(expression)
        self.edges = list(edges)

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError(f"width_bucket is PostgreSQL's, not {connection.vendor}'s")

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return f"width_bucket(({sql})::float8, %s::float8[])", (*params, self.edges)


def export_counts() -> dict[str, int]:
    counts = dict(OrderExport.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {status: counts.get(status, 0) for status in OrderExport.Status.values}


def export_failures(*, limit: int = 10) -> list[OrderExport]:
    return list(OrderExport.objects.filter(status=OrderExport.Status.FAILED).order_by("-updated_at")[:limit])


def export_minutes(*, now: datetime, minutes: int = 60) -> list[ExportMinute]:
    """The last `minutes` minutes up to `now` (the current one included, oldest first), in one
    query whatever the volume.

    The database counts the exports of each minute (TruncMinute) and of each delay bucket (the
    number of DELAY_BUCKET_EDGES the delay reaches: PostgreSQL's width_bucket, elsewhere a CASE
    that bisects the edges): it returns at most `minutes` times len(DELAY_BUCKET_EDGES) + 2
    rows, never the exports themselves. SQLite has no percentile_cont; the histogram gives the
    same answers on both databases, in one query.

    Precision: p50 and p99 are nearest-rank percentiles read off the histogram, as the upper
    edge of the bucket that holds them. The exact value lies in that bucket: below the figure
    shown and at least 3/4 of it (for delays of 10 ms and more; anything shorter, and a
    negative delay from clocks apart, reads 0.01 s; anything from 100,000 s on reads
    100,000 s). SQLite reads the times to the millisecond, PostgreSQL to the microsecond.
    """
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=minutes - 1)
    rows = (
        OrderExport.objects.filter(exported_at__gte=first, exported_at__lte=now)
        .annotate(minute=TruncMinute("exported_at"), bucket=_delay_bucket())
        .values("minute", "bucket")
        .annotate(n=Count("pk"))
        .order_by()
    )
    histograms: dict[datetime, dict[int, int]] = defaultdict(dict)
    for row in rows:
        histograms[row["minute"]][row["bucket"]] = row["n"]
    result = []
    for offset in range(minutes):
        minute = first + timedelta(minutes=offset)
        histogram = histograms.get(minute, {})
        delays = {bucket: n for bucket, n in histogram.items() if bucket != NO_DELAY}
        result.append(
            ExportMinute(
                minute=minute,
                exported=sum(histogram.values()),
                p50_seconds=_percentile(delays, 0.50),
                p99_seconds=_percentile(delays, 0.99),
            )
        )
    return result


def _delay_bucket() -> Case:
    """The delay bucket of an export: how many of DELAY_BUCKET_EDGES its delay reaches."""
    delay = SecondsBetween(F("exported_at"), F("order__confirmed_at"))
    if connections[router.db_for_read(OrderExport)].vendor == "postgresql":
        bucket = WidthBucket(delay, edges=DELAY_BUCKET_EDGES)
    else:
        bucket = _bucket_among(delay, low=0, high=len(DELAY_BUCKET_EDGES))
    return Case(
        When(order__confirmed_at__isnull=True, then=Value(NO_DELAY)),
        default=bucket,
        output_field=IntegerField(),
    )


def _bucket_among(delay: SecondsBetween, *, low: int, high: int) -> Case | Value:
    """The bucket of `delay` among buckets `low` to `high` (bucket i holds the delays from edge
    i - 1 up to, not including, edge i; the last one those from the last edge on), found by
    bisection: seven comparisons a row instead of up to 71 for a flat CASE."""
    if low == high:
        return Value(low)
    middle = (low + high) // 2
    return Case(
        When(LessThan(delay, DELAY_BUCKET_EDGES[middle]), then=_bucket_among(delay, low=low, high=middle)),
        default=_bucket_among(delay, low=middle + 1, high=high),
        output_field=IntegerField(),
    )


def _percentile(histogram: Mapping[int, int], quantile: float) -> float | None:
    """The upper edge of the bucket holding the nearest-rank `quantile` (the last edge for the
    bucket past it)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(quantile * total)), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return DELAY_BUCKET_EDGES[min(bucket, len(DELAY_BUCKET_EDGES) - 1)]
    raise AssertionError("unreachable: the ranks add up to the total")


def export_charts(*, now: datetime, minutes: int = 60) -> list[Chart]:
    """The last hour of exports as charts: exports per minute, and the delay from confirmation
    to export (p50 and p99) per minute."""
    per_minute = export_minutes(now=now, minutes=minutes)
    labels = [f"{timezone.localtime(m.minute):%H:%M}" for m in per_minute]
    heading = f"Minute ({timezone.get_current_timezone_name()})"
    return [
        Chart(
            chart_id="exports-per-minute",
            title=f"Exports per minute, last {minutes} minutes",
            kind="bars",
            labels=labels,
            series={"exports": [m.exported for m in per_minute]},
            label_heading=heading,
        ),
        Chart(
            chart_id="export-delay",
            title=f"Confirm to exported delay per minute, last {minutes} minutes",
            kind="lines",
            labels=labels,
            unit="s",
            label_heading=heading,
            series={"p50": [m.p50_seconds for m in per_minute], "p99": [m.p99_seconds for m in per_minute]},
        ),
    ]


def export_status_panel(*, user) -> dict:
    """The exports' part of the admin's Kafka status page, for `user`: the failed exports (their
    orders and errors) only if the user may view exports; counts and charts for all staff."""
    may_view = user.has_perm("exports.view_orderexport")
    return {
        "title": "Exports",
        "counts": export_counts(),
        "failed": [
            {"order_id": e.order_id, "attempts": e.attempts, "last_error": e.last_error, "updated_at": e.updated_at}
            for e in export_failures()
        ]
        if may_view
        else [],
        "failed_hidden": not may_view,
        "charts": export_charts(now=timezone.now()),
    }
