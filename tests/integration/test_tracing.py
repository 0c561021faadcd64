"""W3C trace context through the outbox, Kafka and the export, with OpenTelemetry
(config/tracing.py), on the real broker: spans kept in memory by the `spans` fixture; without it
the project only propagates, as a process with no OTEL_TRACES_EXPORTER does."""

from __future__ import annotations

from decimal import Decimal

import pytest
from opentelemetry.trace import SpanKind
from rest_framework.test import APIClient

from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.models import Order
from orders.permissions import ORDER_OPERATOR_PERMISSIONS
from orders.services import LineInput, order_confirm, order_create
from tests.support.factories import user_factory
from tests.support.helpers import wait_until
from tests.support.records import read_records
from tests.support.tracing import header, ids, parts, traceparent

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(db) -> APIClient:
    client = APIClient()
    client.force_authenticate(user_factory(username="tracing-api", permissions=ORDER_OPERATOR_PERMISSIONS))
    return client


def new_order() -> Order:
    return order_create(customer_id="c-trace", lines=[LineInput(sku="SKU-1", quantity=1, unit_price=Decimal("3.00"))])


def confirm_over_the_api(api: APIClient, order: Order, **headers: str) -> None:
    response = api.post(f"/api/orders/{order.pk}/confirm/", **headers)
    assert response.status_code == 200, response.content


def row_of(order: Order) -> OutboxEvent:
    return OutboxEvent.objects.get(key=str(order.pk))


def test_an_api_confirm_stores_its_context_with_the_event_and_the_fast_path_sends_it(
    api, spans, export_topics, fresh_publisher
):
    topic, _ = export_topics
    order = new_order()

    confirm_over_the_api(api, order)

    request = next(s for s in spans.of_kind(SpanKind.SERVER) if s.attributes["url.path"].endswith("/confirm/"))
    assert request.attributes["http.route"] == "/api/orders/(?P<pk>[^/.]+)/confirm/$"
    assert request.name == "POST /api/orders/(?P<pk>[^/.]+)/confirm/$"
    assert request.attributes["http.response.status_code"] == 200
    create = spans.one(SpanKind.PRODUCER)
    assert create.name == f"create {topic}"
    assert create.parent.span_id == request.context.span_id
    assert create.attributes["messaging.system"] == "kafka"
    assert create.attributes["messaging.destination.name"] == topic
    row = row_of(order)
    assert create.attributes["messaging.message.id"] == str(row.event_id)
    stored = header(row.headers, "traceparent")
    assert parts(stored) == ("00", *ids(create), True)
    assert header(row.headers, "tracestate") is None
    [record] = read_records(topic, expected=1)
    assert header(record.headers, "traceparent") == stored
    assert [name for name, _ in record.headers] == ["event_type", "event_id", "traceparent"]


def test_the_relay_sends_the_stored_context_and_tracestate(api, spans, export_topics, settings):
    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    order = new_order()
    incoming = traceparent()

    confirm_over_the_api(api, order, HTTP_TRACEPARENT=incoming, HTTP_TRACESTATE="vendor=a1,other=b2")

    relay = OutboxRelay(stop=StopFlag(), grace=0)
    try:
        wait_until(lambda: relay.run_once().sent == 1, timeout=30, message="the relay did not send the row")
    finally:
        relay.publisher.close()
    [record] = read_records(topic, expected=1)
    create = spans.one(SpanKind.PRODUCER)
    # The request continued the caller's trace; the record continues the request's.
    assert ids(create)[0] == parts(incoming)[1]
    assert parts(header(record.headers, "traceparent")) == ("00", *ids(create), True)
    assert header(record.headers, "tracestate") == "vendor=a1,other=b2"


def test_a_confirm_outside_any_span_writes_no_trace_header(spans, export_topics, fresh_publisher):
    topic, _ = export_topics
    order = new_order()

    order_confirm(order_id=order.pk)

    assert [name for name, _ in row_of(order).headers] == ["event_type", "event_id"]
    [record] = read_records(topic, expected=1)
    assert [name for name, _ in record.headers] == ["event_type", "event_id"]
    assert spans.of_kind(SpanKind.PRODUCER) == []


def test_with_no_exporter_an_incoming_traceparent_is_passed_on_unchanged(api, export_topics, fresh_publisher):
    topic, _ = export_topics
    order = new_order()
    incoming = traceparent()

    confirm_over_the_api(api, order, HTTP_TRACEPARENT=incoming)

    assert header(row_of(order).headers, "traceparent") == incoming
    [record] = read_records(topic, expected=1)
    assert header(record.headers, "traceparent") == incoming


def test_with_no_exporter_and_no_incoming_context_nothing_is_written(api, export_topics, fresh_publisher):
    order = new_order()

    confirm_over_the_api(api, order)

    assert [name for name, _ in row_of(order).headers] == ["event_type", "event_id"]


def test_a_request_not_sampled_makes_no_span_but_its_context_travels_unsampled(
    api, spans, export_topics, fresh_publisher
):
    topic, _ = export_topics
    order = new_order()
    incoming = traceparent(sampled=False)

    confirm_over_the_api(api, order, HTTP_TRACEPARENT=incoming)
    request_publisher().flush()

    assert spans.finished() == []
    version, trace_id, _, sampled = parts(header(row_of(order).headers, "traceparent"))
    assert (version, trace_id, sampled) == ("00", parts(incoming)[1], False)
    [record] = read_records(topic, expected=1)
    assert parts(header(record.headers, "traceparent"))[1:] == (trace_id, _, False)


@pytest.mark.parametrize(
    "malformed",
    [
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01-extra",  # version 00 with more after it
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # the invalid version
        "00-" + "g" * 32 + "-" + "b" * 16 + "-01",  # not hex
        "00-" + "0" * 32 + "-" + "b" * 16 + "-01",  # all zeros
    ],
)
def test_a_malformed_incoming_traceparent_is_as_if_there_were_none(api, spans, export_topics, malformed):
    order = new_order()

    confirm_over_the_api(api, order, HTTP_TRACEPARENT=malformed)

    request = next(s for s in spans.of_kind(SpanKind.SERVER) if s.attributes["url.path"].endswith("/confirm/"))
    assert request.parent is None
    assert parts(header(row_of(order).headers, "traceparent"))[1] == ids(request)[0]
