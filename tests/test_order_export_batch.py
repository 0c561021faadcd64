"""order_export_batch: many requests exported with a fixed number of queries, and, request by
request, exactly what order_export would have done, including where it stops."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from exports.clients import FakeExternalPlatformClient, PermanentExportError, TransientExportError
from exports.events import ExportRequest
from exports.models import OrderExport, ProcessedEvent
from exports.services import UnknownOrder, order_export, order_export_batch, order_export_fail
from orders.serializers import order_snapshot
from tests.factories import order_factory
from tests.test_order_export_service import ScriptedClient

pytestmark = pytest.mark.django_db


def confirmed_requests(count: int) -> list[ExportRequest]:
    requests = []
    for _ in range(count):
        order = order_factory(confirmed=True)
        requests.append(ExportRequest(event_id=uuid.uuid4(), order_id=order.pk, order=order_snapshot(order)))
    return requests


def statuses(items) -> list[str | None]:
    return [item.status for item in items]


def test_a_batch_exports_every_order_once_and_records_each_with_its_event():
    requests = confirmed_requests(5)
    platform = FakeExternalPlatformClient()

    items = order_export_batch(requests=requests, client=platform)

    assert statuses(items) == ["exported"] * 5
    assert platform.received() == [(r.order_id, str(r.event_id)) for r in requests]
    exports = {e.order_id: e for e in OrderExport.objects.all()}
    for request in requests:
        export = exports[request.order_id]
        assert (export.status, export.attempts, export.event_id, export.last_error) == ("exported", 1, request.event_id, None)
        assert export.exported_at is not None
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == {r.event_id for r in requests}


def test_the_number_of_queries_does_not_grow_with_the_batch():
    small, large = confirmed_requests(3), confirmed_requests(40)

    with CaptureQueriesContext(connection) as small_queries:
        order_export_batch(requests=small, client=FakeExternalPlatformClient())
    with CaptureQueriesContext(connection) as large_queries:
        order_export_batch(requests=large, client=FakeExternalPlatformClient())

    assert OrderExport.objects.filter(status="exported").count() == 43
    assert len(large_queries) == len(small_queries)


def test_a_pending_export_from_an_earlier_failed_attempt_is_updated_with_its_attempts_counted():
    (request,) = confirmed_requests(1)
    with pytest.raises(TransientExportError):
        order_export(request=request, client=ScriptedClient(TransientExportError("503")))

    items = order_export_batch(requests=[request], client=FakeExternalPlatformClient())

    assert statuses(items) == ["exported"]
    export = OrderExport.objects.get(order_id=request.order_id)
    assert (export.status, export.attempts, export.last_error) == ("exported", 2, None)


def test_repeats_in_and_across_batches_are_duplicates_without_a_second_call():
    first, second = confirmed_requests(2)
    platform = FakeExternalPlatformClient()

    items = order_export_batch(requests=[first, first, second], client=platform)
    again = order_export_batch(requests=[second, first], client=platform)

    assert statuses(items) == ["exported", "duplicate", "exported"]
    assert statuses(again) == ["duplicate", "duplicate"]
    assert platform.received_order_ids() == [first.order_id, second.order_id]
    assert ProcessedEvent.objects.count() == 2


def test_a_dead_lettered_export_is_not_sent_again():
    (request,) = confirmed_requests(1)
    order_export_fail(order_id=request.order_id, event_id=request.event_id, reason="permanent: 422")
    platform = FakeExternalPlatformClient()

    items = order_export_batch(requests=[request], client=platform)

    assert statuses(items) == ["dead_lettered_earlier"]
    assert platform.received() == []


def test_an_unknown_order_stops_its_lane_and_not_the_others():
    a1, a2, b1 = confirmed_requests(3)
    ghost = ExportRequest(event_id=uuid.uuid4(), order_id=a1.order_id + 10_000, order={"id": a1.order_id + 10_000})
    platform = FakeExternalPlatformClient()

    items = order_export_batch(requests=[a1, ghost, a2, b1], lanes=["a", "a", "a", "b"], client=platform)

    assert statuses(items) == ["exported", None, None, "exported"]
    assert isinstance(items[1].error, UnknownOrder)
    assert items[2].error is None, "the request behind it was not tried"
    assert platform.received_order_ids() == [a1.order_id, b1.order_id]
    assert not OrderExport.objects.filter(order_id=a2.order_id).exists()


@pytest.mark.parametrize("error", [TransientExportError("HTTP 503"), PermanentExportError("HTTP 422")])
def test_after_a_platform_failure_the_attempt_is_counted_and_nothing_more_is_sent(error):
    a1, a2, b1, b2 = confirmed_requests(4)
    platform = ScriptedClient(None, error)

    items = order_export_batch(requests=[a1, b1, a2, b2], lanes=["a", "b", "a", "b"], client=platform)

    assert statuses(items) == ["exported", None, None, None]
    assert items[1].error is error
    assert (items[2].error, items[3].error) == (None, None)
    assert platform.calls == [(a1.order_id, str(a1.event_id)), (b1.order_id, str(b1.event_id))]
    failed = OrderExport.objects.get(order_id=b1.order_id)
    assert (failed.status, failed.attempts, failed.last_error) == ("pending", 1, str(error))
    assert not ProcessedEvent.objects.filter(event_id=b1.event_id).exists()
    assert set(OrderExport.objects.filter(status="exported").values_list("order_id", flat=True)) == {a1.order_id}


def test_once_asked_to_stop_it_sends_nothing_more():
    requests = confirmed_requests(3)
    platform = FakeExternalPlatformClient()

    items = order_export_batch(requests=requests, client=platform, should_stop=lambda: len(platform.received()) >= 1)

    assert statuses(items) == ["exported", None, None]
    assert platform.received_order_ids() == [requests[0].order_id]
    assert OrderExport.objects.filter(status="exported").count() == 1
