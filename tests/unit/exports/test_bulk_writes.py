"""`rows_insert` writes what the ORM would have written: every value read back as it was given,
odd text included, through the connection's execute wrappers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from exports.attempts import ATTEMPT_COLUMNS
from exports.bulk_writes import rows_insert
from exports.models import ExportAttempt, OrderExport
from tests.support.factories import order_factory

pytestmark = pytest.mark.django_db

# What a text COPY or a hand-built statement could mangle: its separators, escapes and quotes,
# NUL-free control characters, non-ASCII, and SQL.
ODD_TEXTS = [
    "tab\there",
    "line\nbreak\r\n",
    "back\\slash \\N \\.",
    "quote ' and \"",
    "é ² 🚀 \u200b",
    "'); DROP TABLE x; --",
    "",
]


@pytest.mark.parametrize("zones", ["UTC and another", "UTC only"])
def test_odd_values_are_read_back_as_they_were_given(zones):
    order = order_factory()
    berlin = timezone(timedelta(hours=1)) if zones == "UTC and another" else UTC
    rows = [
        (
            order.pk,
            uuid.uuid4(),
            f"topic-{index}",
            index,
            2**62 + index,
            text,
            datetime(2026, 11, 29, 12, 0, index, 123456, tzinfo=UTC if index % 2 else berlin),
            index / 3,
            ExportAttempt.Outcome.FAILED.value,
            text,
        )
        for index, text in enumerate(ODD_TEXTS)
    ]

    rows_insert(ExportAttempt, ATTEMPT_COLUMNS, rows)

    read = list(ExportAttempt.objects.order_by("id").values_list(*ATTEMPT_COLUMNS))
    assert read == rows


def test_nulls_and_repeated_values_are_written_per_row():
    orders = [order_factory() for _ in range(3)]
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    rows = [
        (order.pk, OrderExport.Status.EXPORTED.value, 1, None if index == 1 else uuid.uuid4(), None, now)
        for index, order in enumerate(orders)
    ]

    rows_insert(OrderExport, ["order_id", "status", "attempts", "event_id", "last_error", "updated_at"], rows)

    read = list(
        OrderExport.objects.order_by("order_id").values_list(
            "order_id", "status", "attempts", "event_id", "last_error", "updated_at"
        )
    )
    assert read == sorted(rows)


def test_the_write_goes_through_the_connections_execute_wrappers():
    order = order_factory()
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append((sql.split()[0], context["connection"] is connections[DEFAULT_DB_ALIAS]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        rows_insert(
            ExportAttempt,
            ATTEMPT_COLUMNS,
            [(order.pk, uuid.uuid4(), "t", 0, 0, "c", datetime.now(UTC), 1.0, "exported", "")],
        )

    assert seen == [("COPY" if connection.vendor == "postgresql" else "INSERT", True)]
    assert ExportAttempt.objects.filter(order=order).count() == 1


def test_an_empty_batch_writes_nothing():
    seen = []
    with connection.execute_wrapper(lambda execute, *args: seen.append(args) or execute(*args)):
        rows_insert(ExportAttempt, ATTEMPT_COLUMNS, [])
    assert seen == []
