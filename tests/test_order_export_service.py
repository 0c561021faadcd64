"""order_export: a confirmed order goes to the platform once, and its OrderExport row says how
that went."""
from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from exports.clients import (
    ExternalPlatformClient,
    FakeExternalPlatformClient,
    PermanentExportError,
    TransientExportError,
)
from exports.events import ExportRequest
from exports.models import OrderExport, ProcessedEvent
from exports.services import UnknownOrder, order_export, order_export_fail
from orders.serializers import order_snapshot
from orders.services import LineInput, order_confirm, order_create

pytestmark = pytest.mark.django_db


class ScriptedClient(ExternalPlatformClient):
    """Answers each send with the next outcome: an exception to raise, or None for success."""

    def __init__(self, *outcomes: Exception | None):
        self.outcomes = list(outcomes)
        self.calls: list[tuple[int, str]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        self.calls.append((order["id"], idempotency_key))
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


@pytest.fixture
def platform() -> FakeExternalPlatformClient:
    return FakeExternalPlatformClient()


@pytest.fixture
def export_request() -> ExportRequest:
    """The export request of a freshly confirmed order."""
    order = order_create(customer_id="c-1", lines=[LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("10.00"))])
    order = order_confirm(order_id=order.pk)
    return ExportRequest(event_id=uuid.uuid4(), order_id=order.pk, order=order_snapshot(order))


def export_of(request: ExportRequest) -> OrderExport:
    return OrderExport.objects.get(order_id=request.order_id)


def test_order_export_sends_the_order_once_and_records_it_exported(export_request, platform):
    outcome = order_export(request=export_request, client=platform)

    export = export_of(export_request)
    assert outcome.status == "exported"
    assert outcome.export == export
    assert export.status == OrderExport.Status.EXPORTED
    assert export.attempts == 1
    assert export.exported_at is not None
    assert export.event_id == export_request.event_id
    assert export.last_error is None
    assert platform.received() == [(export_request.order_id, str(export_request.event_id))]


def test_order_export_of_an_exported_order_is_a_duplicate_that_does_not_send_again(export_request, platform):
    order_export(request=export_request, client=platform)

    outcome = order_export(request=export_request, client=platform)

    assert outcome.status == "duplicate"
    assert export_of(export_request).attempts == 1
    assert platform.received() == [(export_request.order_id, str(export_request.event_id))]


def test_order_export_records_a_transient_failure_as_pending_and_raises_it(export_request):
    client = ScriptedClient(TransientExportError("HTTP 503 from the platform"))

    with pytest.raises(TransientExportError, match="503"):
        order_export(request=export_request, client=client)

    export = export_of(export_request)
    assert export.status == OrderExport.Status.PENDING
    assert export.attempts == 1
    assert export.last_error == "HTTP 503 from the platform"
    assert export.exported_at is None
    assert export.event_id == export_request.event_id
    assert not ProcessedEvent.objects.exists()


def test_order_export_after_a_transient_failure_succeeds_on_the_next_attempt(export_request):
    client = ScriptedClient(TransientExportError("timeout after 5 s"), None)
    with pytest.raises(TransientExportError):
        order_export(request=export_request, client=client)

    outcome = order_export(request=export_request, client=client)

    export = export_of(export_request)
    assert outcome.status == "exported"
    assert export.status == OrderExport.Status.EXPORTED
    assert export.attempts == 2
    assert export.last_error is None
    assert export.exported_at is not None
    assert export.event_id == export_request.event_id
    # Both attempts carried the same Idempotency-Key.
    assert client.calls == [(export_request.order_id, str(export_request.event_id))] * 2


def test_order_export_records_a_permanent_refusal_and_raises_it_for_the_dead_letter_topic(export_request):
    client = ScriptedClient(PermanentExportError("HTTP 422 from the platform"))

    with pytest.raises(PermanentExportError, match="422"):
        order_export(request=export_request, client=client)

    export = export_of(export_request)
    # Failed only once the record is on the DLT (order_export_fail, called by the consumer).
    assert export.status == OrderExport.Status.PENDING
    assert export.attempts == 1
    assert export.last_error == "HTTP 422 from the platform"
    assert export.exported_at is None


def test_a_dead_lettered_export_is_not_sent_again_on_redelivery(export_request):
    client = ScriptedClient(PermanentExportError("HTTP 422 from the platform"))
    with pytest.raises(PermanentExportError):
        order_export(request=export_request, client=client)
    order_export_fail(order_id=export_request.order_id, event_id=export_request.event_id, reason="HTTP 422")

    again = order_export(request=export_request, client=client)

    assert again.status == "dead_lettered_earlier"
    assert len(client.calls) == 1
    assert export_of(export_request).status == OrderExport.Status.FAILED
    assert export_of(export_request).last_error == "HTTP 422"


def test_the_processed_event_is_recorded_with_the_success(export_request, platform):
    order_export(request=export_request, client=platform)

    assert list(ProcessedEvent.objects.values_list("event_id", "order_id")) == [
        (export_request.event_id, export_request.order_id)
    ]


def test_a_processed_event_is_acknowledged_without_a_platform_call(export_request, platform):
    order_export(request=export_request, client=platform)
    # Even if the export row were reset, the processed event id alone stops a second call.
    OrderExport.objects.update(status=OrderExport.Status.PENDING)

    again = order_export(request=export_request, client=platform)

    assert again.status == "duplicate"
    assert platform.received_order_ids() == [export_request.order_id]


def test_order_export_of_an_unknown_order_raises_and_records_nothing(export_request, platform):
    missing_id = export_request.order_id + 1000
    unknown = ExportRequest(event_id=uuid.uuid4(), order_id=missing_id, order={**export_request.order, "id": missing_id})

    with pytest.raises(UnknownOrder):
        order_export(request=unknown, client=platform)

    assert not OrderExport.objects.exists()
    assert platform.received() == []
