"""W3C trace context through the outbox, Kafka and the export, with OpenTelemetry
(kafka_bridge/tracing.py), on the real broker: spans kept in memory by the `spans` fixture; without it
the project only propagates, as a process with no OTEL_TRACES_EXPORTER does."""

from __future__ import annotations

import json
import re
import signal
import subprocess
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
from tests.support.consumers import export_consumer_running
from tests.support.factories import user_factory
from tests.support.helpers import wait_until
from tests.support.records import produce_records, read_records
from tests.support.tracing import header, ids, ids_of, parts, traceparent

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


def test_the_admin_action_records_the_event_in_the_requests_trace(client, spans, export_topics, fresh_publisher):
    from django.contrib.auth import get_user_model

    topic, _ = export_topics
    client.force_login(get_user_model().objects.create_superuser(username="boss", password="pw", email="b@x.org"))
    order = new_order()

    response = client.post("/admin/orders/order/", {"action": "mark_confirmed", "_selected_action": [order.pk]})

    assert response.status_code == 302
    request = next(s for s in spans.of_kind(SpanKind.SERVER) if s.attributes["http.request.method"] == "POST")
    create = spans.one(SpanKind.PRODUCER)
    assert create.parent.span_id == request.context.span_id
    [record] = read_records(topic, expected=1)
    assert parts(header(record.headers, "traceparent")) == ("00", *ids(create), True)


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
    [create] = [span for span in spans.of_kind(SpanKind.PRODUCER) if span.name.startswith("create ")]
    # The request continued the caller's trace; the record continues the request's.
    assert ids(create)[0] == parts(incoming)[1]
    assert parts(header(record.headers, "traceparent")) == ("00", *ids(create), True)
    assert header(record.headers, "tracestate") == "vendor=a1,other=b2"
    # The relay's round is a send span of its own, linked to the event's creation.
    [send] = [span for span in spans.of_kind(SpanKind.PRODUCER) if span.name == f"send {topic}"]
    assert send.parent is None
    assert [ids_of(link.context) for link in send.links] == [ids(create)]
    assert send.attributes["messaging.batch.message_count"] == 1
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.status.status_code.name == "UNSET"


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


# --- continued by the consumer, passed to the platform ---------------------------------------------


@pytest.fixture
def http_consumer(export_topics, export_group, platform_stub, fresh_publisher):
    """The export consumer calling the platform stub over HTTP; yields the stub."""
    from exports.platform.http import HttpExternalPlatformClient

    with export_consumer_running(HttpExternalPlatformClient(url=platform_stub.url, timeout=5)):
        yield platform_stub


def requests_of(stub, n: int) -> list:
    wait_until(lambda: len(stub.received()) >= n, timeout=30, message=lambda: f"{len(stub.received())} of {n} call(s)")
    return stub.received()


def process_spans(spans, n: int) -> list:
    wait_until(
        lambda: len(spans.of_kind(SpanKind.CONSUMER)) >= n,
        timeout=30,
        message=lambda: f"{len(spans.of_kind(SpanKind.CONSUMER))} of {n} process span(s) ended",
    )
    return spans.of_kind(SpanKind.CONSUMER)


def test_one_api_confirm_is_one_trace_from_the_request_to_the_platform_call(api, spans, http_consumer, export_group):
    stub = http_consumer
    order = new_order()

    confirm_over_the_api(api, order)

    [call] = requests_of(stub, 1)
    [process] = process_spans(spans, 1)
    request = next(s for s in spans.of_kind(SpanKind.SERVER) if s.attributes["url.path"].endswith("/confirm/"))
    create = spans.one(SpanKind.PRODUCER)
    client = spans.one(SpanKind.CLIENT)
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (create, process, client)} == {trace_id}
    # request -> create -> process -> the platform call
    assert create.parent.span_id == request.context.span_id
    assert process.parent.span_id == create.context.span_id
    assert client.parent.span_id == process.context.span_id
    assert [link.context.span_id for link in process.links] == [create.context.span_id]
    row = row_of(order)
    topic = row.topic
    assert process.name == f"process {topic}"
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.destination.name"] == topic
    assert process.attributes["messaging.consumer.group.name"] == export_group
    assert process.attributes["messaging.message.id"] == str(row.event_id)
    assert process.attributes["messaging.kafka.message.key"] == str(order.pk)
    record_partition = process.attributes["messaging.destination.partition.id"]
    request_publisher().flush()
    row.refresh_from_db()
    assert (record_partition, process.attributes["messaging.kafka.offset"]) == (str(row.partition), row.offset)
    assert client.name == "POST"
    assert client.attributes["http.request.method"] == "POST"
    assert client.attributes["url.full"] == stub.url
    assert client.attributes["http.response.status_code"] == 201
    assert client.attributes["http.request.header.idempotency-key"] == (str(row.event_id),)
    # The platform received the same trace, its parent the client span.
    assert parts(call.headers["traceparent"]) == ("00", *ids(client), True)


def kcat_produce(topic: str, *, key: str, value: str, headers: dict[str, str]) -> None:
    from django.conf import settings

    command = ["kcat", "-P", "-b", ",".join(settings.KAFKA_BOOTSTRAP_SERVERS), "-t", topic, "-k", key]
    for name, header_value in headers.items():
        command += ["-H", f"{name}={header_value}"]
    subprocess.run(command, input=value.encode(), check=True, timeout=30)


def unsent_event(settings) -> tuple[Order, OutboxEvent]:
    """A confirmed order whose event is in the outbox only (the fast path off), for a test to
    produce itself."""
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    order = new_order()
    order_confirm(order_id=order.pk)
    return order, row_of(order)


def test_a_record_produced_by_kcat_with_a_traceparent_is_continued(spans, http_consumer, settings):
    topic = settings.ORDER_EXPORT_TOPIC
    order, row = unsent_event(settings)
    incoming = traceparent()

    kcat_produce(
        topic,
        key=row.key,
        value=row.payload,
        headers={"event_type": row.event_type, "event_id": str(row.event_id), "traceparent": incoming},
    )

    [call] = requests_of(http_consumer, 1)
    [process] = process_spans(spans, 1)
    _, trace_id, parent_id, _ = parts(incoming)
    assert ids(process)[0] == trace_id
    assert format(process.parent.span_id, "016x") == parent_id
    assert process.parent.is_remote
    assert parts(call.headers["traceparent"])[1] == trace_id


def test_with_no_exporter_a_records_context_reaches_the_platform_unchanged(http_consumer, settings):
    order, row = unsent_event(settings)
    incoming = traceparent()

    produce_records(
        settings.ORDER_EXPORT_TOPIC,
        [{"key": row.key.encode(), "value": row.payload.encode(), "headers": [("traceparent", incoming.encode())]}],
    )

    [call] = requests_of(http_consumer, 1)
    assert call.headers["traceparent"] == incoming


def test_records_with_a_malformed_traceparent_are_exported_as_records_without_one(spans, http_consumer, settings):
    malformed = [
        f"00-{'a' * 32}-{'b' * 16}-01-{'c' * 600}",  # too long
        f"ff-{'a' * 32}-{'b' * 16}-01",  # the invalid version
        f"00-{'z' * 32}-{'b' * 16}-01",  # not hex
    ]
    rows = [unsent_event(settings)[1] for _ in malformed]

    produce_records(
        settings.ORDER_EXPORT_TOPIC,
        [
            {"key": row.key.encode(), "value": row.payload.encode(), "headers": [("traceparent", value.encode())]}
            for row, value in zip(rows, malformed)
        ],
    )

    calls = requests_of(http_consumer, 3)
    processed = process_spans(spans, 3)
    assert sorted(http_consumer.exported_order_ids()) == sorted(int(row.key) for row in rows)
    assert all(span.parent is None and not span.links for span in processed)
    assert {parts(call.headers["traceparent"])[1] for call in calls} == {ids(span)[0] for span in processed}
    assert "a" * 32 not in {parts(call.headers["traceparent"])[1] for call in calls}


def test_a_dead_letter_ends_its_span_in_error_carries_the_trace_on_and_a_redrive_keeps_it(
    api, spans, http_consumer, settings
):
    from exports.redrive import dlt_replay
    from tests.support.redrive import user_with

    stub = http_consumer
    dlt = settings.ORDER_EXPORT_DLT_TOPIC
    stub.down_status = 422
    order = new_order()

    confirm_over_the_api(api, order)

    [dead] = process_spans(spans, 1)
    trace_id = ids(spans.one(SpanKind.PRODUCER))[0]
    assert ids(dead)[0] == trace_id
    assert dead.status.status_code.name == "ERROR"
    assert [event.name for event in dead.events] == ["dead_letter"]
    [dead_letter] = read_records(dlt, expected=1)
    # The dead letter continues the trace from the span that gave the record up.
    assert parts(header(dead_letter.headers, "traceparent"))[:3] == ("00", *ids(dead))

    stub.down_status = None
    user_with("ops", may_redrive=True)
    assert len(dlt_replay(operator="ops").items) == 1
    wait_until(lambda: order.pk in stub.exported_order_ids(), timeout=30, message="the redriven order was not exported")
    redriven = process_spans(spans, 2)[-1]
    assert ids(redriven)[0] == trace_id
    assert redriven.parent.span_id == dead.context.span_id
    assert redriven.status.status_code.name == "UNSET"


def test_retries_are_events_on_the_records_span(api, spans, http_consumer, settings):
    stub = http_consumer
    stub.failure_rate = 0
    stub.down_status = 503
    order = new_order()

    confirm_over_the_api(api, order)
    wait_until(lambda: len(stub.received()) >= 2, timeout=30, message="no retry")
    stub.down_status = None

    [process] = process_spans(spans, 1)
    retries = [event for event in process.events if event.name == "retry"]
    assert retries and retries[0].attributes["attempt"] == 1
    assert "HTTP 503" in retries[0].attributes["error"]
    clients = spans.of_kind(SpanKind.CLIENT, trace_id=process.context.trace_id)
    assert len(clients) == len(retries) + 1
    assert {span.parent.span_id for span in clients} == {process.context.span_id}
    assert [span.attributes["http.response.status_code"] for span in clients][-1] == 201


# --- exported over OTLP/HTTP, as the OTEL_* variables say -----------------------------------------


def test_a_consumer_process_exports_its_spans_to_an_otlp_http_endpoint_set_by_the_standard_variables(
    export_topics, export_group, settings
):
    from tests.support.otlp_receiver import OtlpReceiver
    from tests.support.processes import ManagedProcess, command_env

    topic, dlt = export_topics
    order, row = unsent_event(settings)
    incoming = traceparent()
    produce_records(
        topic,
        [
            {
                "key": row.key.encode(),
                "value": row.payload.encode(),
                "headers": [("event_id", str(row.event_id).encode()), ("traceparent", incoming.encode())],
            }
        ],
    )
    receiver = OtlpReceiver()
    env = command_env(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=dlt,
        ORDER_EXPORT_CONSUMER_GROUP=export_group,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="orderflow-consumer",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    consumer = ManagedProcess("run_export_consumer", env)
    try:
        wait_until(
            lambda: any(span.name == f"process {topic}" for span in receiver.received()),
            timeout=30,
            message=lambda: f"no process span exported; the consumer said:\n{consumer.output()}",
        )
    finally:
        consumer.process.send_signal(signal.SIGTERM)
        exit_code = consumer.process.wait(timeout=15)
        receiver.close()
    assert exit_code == 0, consumer.output()
    [process] = [span for span in receiver.received() if span.name == f"process {topic}"]
    _, trace_id, parent_id, _ = parts(incoming)
    assert (process.service, process.trace_id, process.parent_span_id) == ("orderflow-consumer", trace_id, parent_id)
    assert process.kind == 5  # SPAN_KIND_CONSUMER
    assert process.attributes["messaging.message.id"] == str(row.event_id)
    assert receiver.content_types == {"application/x-protobuf"}


# --- seen by the operator -------------------------------------------------------------------------


def traced_confirm(api, order: Order, incoming: str) -> str:
    """Confirm `order` in the trace of `incoming` and wait for its record; its trace id."""
    confirm_over_the_api(api, order, HTTP_TRACEPARENT=incoming)
    assert request_publisher().flush(timeout=10)
    return parts(incoming)[1]


def test_order_trace_shows_the_trace_id_and_its_link(api, export_topics, fresh_publisher, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.OTEL_TRACE_URL_TEMPLATE = "https://tempo.example/trace/{trace_id}"
    order = new_order()
    trace_id = traced_confirm(api, order, traceparent())

    out = StringIO()
    call_command("order_trace", str(order.pk), stdout=out)
    text = out.getvalue()
    assert f"  trace {trace_id}: https://tempo.example/trace/{trace_id}" in text
    # The record read back shows the headers as they travelled.
    assert f"header traceparent=00-{trace_id}-" in text

    out = StringIO()
    call_command("order_trace", str(order.pk), "--json", stdout=out)
    [event] = json.loads(out.getvalue())["events"]
    assert (event["trace_id"], event["trace_url"]) == (trace_id, f"https://tempo.example/trace/{trace_id}")


def test_order_trace_of_an_event_recorded_outside_a_trace_has_no_trace_id(export_topics, fresh_publisher):
    from io import StringIO

    from django.core.management import call_command

    order = new_order()
    order_confirm(order_id=order.pk)

    out = StringIO()
    call_command("order_trace", str(order.pk), "--json", stdout=out)
    [event] = json.loads(out.getvalue())["events"]
    assert (event["trace_id"], event["trace_url"]) == (None, None)


def test_the_delivery_panel_links_the_trace_when_a_template_is_set(
    api, client, export_topics, fresh_publisher, settings
):
    from django.urls import reverse

    order = new_order()
    trace_id = traced_confirm(api, order, traceparent())
    client.force_login(
        user_factory(
            username="panel-viewer", is_staff=True, permissions=["orders.view_order", "exports.view_orderexport"]
        )
    )
    url = reverse("admin:orders_order_change", args=[order.pk])

    page = client.get(url).content.decode()
    assert f'<code class="trace-id">{trace_id}</code>' in page

    settings.OTEL_TRACE_URL_TEMPLATE = "https://tempo.example/trace/{trace_id}"
    page = client.get(url).content.decode()
    assert f'<a class="trace-link" href="https://tempo.example/trace/{trace_id}"' in page


def test_the_topic_browser_filters_by_a_header_value(api, client, export_topics, fresh_publisher):
    topic, _ = export_topics
    traced, other, untraced = new_order(), new_order(), new_order()
    trace_id = traced_confirm(api, traced, traceparent())
    traced_confirm(api, other, traceparent())
    order_confirm(order_id=untraced.pk)
    assert request_publisher().flush(timeout=10)
    client.force_login(user_factory(username="browser", is_staff=True, permissions=["kafka_bridge.browse_topics"]))

    def keys_shown(**query) -> list[str]:
        page = client.get(f"/admin/kafka/topics/{topic}/", query)
        assert page.status_code == 200
        return re.findall(r'<tr class="record" data-partition="\d+" data-offset="\d+">', page.content.decode())

    def orders_found(**query) -> set[int]:
        from kafka_bridge.console.browser.reading import topic_records_read

        result = topic_records_read(topic=topic, limit=50, max_scanned=1000, timeout_ms=10_000, **query)
        return {int(record.key) for record in result.records}

    assert orders_found(header="traceparent", header_contains=trace_id) == {traced.pk}
    assert orders_found(header_contains=trace_id) == {traced.pk}
    assert orders_found(header="traceparent") == {traced.pk, other.pk}
    event_id = str(row_of(untraced).event_id)
    assert orders_found(header="event_id", header_contains=event_id) == {untraced.pk}
    assert orders_found(header="tracestate", header_contains=trace_id) == set()
    # The page takes the same filter and keeps it on its links.
    assert len(keys_shown(header="traceparent", header_contains=trace_id)) == 1
    assert len(keys_shown(header_contains=event_id)) == 1
