"""The exports app's reads that the consumer makes on every batch."""

from __future__ import annotations

import uuid

import pytest

from exports.models import OrderExport
from exports.selectors import order_exports_of
from tests.support.factories import order_factory

pytestmark = pytest.mark.django_db


def test_order_exports_of_names_the_orders_that_exist_and_reads_the_exports_of_those_that_have_one():
    without, with_export, failed = order_factory(), order_factory(), order_factory()
    event_id = uuid.uuid4()
    exported = OrderExport.objects.create(
        order=with_export, status=OrderExport.Status.EXPORTED, event_id=event_id, attempts=2
    )
    dead = OrderExport.objects.create(
        order=failed,
        status=OrderExport.Status.FAILED,
        event_id=None,
        attempts=5,
        dead_letter_topic="order-export.DLT",
        dead_letter_partition=2,
        dead_letter_offset=10**12,
    )
    missing = max(without.pk, with_export.pk, failed.pk) + 1000

    known, exports = order_exports_of({without.pk, with_export.pk, failed.pk, missing})

    assert known == {without.pk, with_export.pk, failed.pk}
    assert set(exports) == {with_export.pk, failed.pk}
    read = {
        order_id: (
            e.pk,
            e.order_id,
            e.status,
            e.event_id,
            e.attempts,
            e.dead_letter_topic,
            e.dead_letter_partition,
            e.dead_letter_offset,
        )
        for order_id, e in exports.items()
    }
    assert read == {
        with_export.pk: (exported.pk, with_export.pk, "exported", event_id, 2, "", None, None),
        failed.pk: (dead.pk, failed.pk, "failed", None, 5, "order-export.DLT", 2, 10**12),
    }
    assert isinstance(read[with_export.pk][3], uuid.UUID)


def test_order_exports_of_nothing_reads_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert order_exports_of(set()) == (set(), {})


def test_order_exports_of_a_thousand_orders_is_one_statement(django_assert_num_queries):
    orders = [order_factory() for _ in range(3)]
    ids = {order.pk for order in orders} | set(range(10**9, 10**9 + 997))

    with django_assert_num_queries(1):
        known, _ = order_exports_of(ids)
    assert known == {order.pk for order in orders}
