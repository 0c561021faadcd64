"""kafka_bridge/tracing.py without a broker: reading W3C headers (a malformed one is no header), the
exporters OTEL_TRACES_EXPORTER may name, and the request span."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from kafka_bridge.tracing import headers_context, message_create_headers, trace_headers, tracing_exporters
from tests.support.tracing import traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def test_a_valid_traceparent_and_tracestate_are_read_from_kafka_headers():
    found = headers_context(
        [("event_id", b"x"), ("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01".encode()), ("tracestate", b"congo=t61")]
    )
    assert format_trace_id(found.trace_id) == TRACE_ID
    assert format_span_id(found.span_id) == SPAN_ID
    assert found.trace_flags.sampled
    assert found.trace_state.to_header() == "congo=t61"
    assert found.is_remote


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE_ID}-{SPAN_ID}-01-{'a' * 600}".encode(),  # too long
        f"00-{TRACE_ID}-{SPAN_ID}-01-more".encode(),  # version 00 has nothing after the flags
        f"ff-{TRACE_ID}-{SPAN_ID}-01".encode(),  # the invalid version
        f"0g-{TRACE_ID}-{SPAN_ID}-01".encode(),  # not hex
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01".encode(),  # upper case is not the spec's hex
        f"00-{'0' * 32}-{SPAN_ID}-01".encode(),  # an all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01".encode(),  # an all-zero parent id
        f"00-{TRACE_ID}-{SPAN_ID}".encode(),  # no flags
        b"\xff\xfe not utf-8",
        b"",
        None,
    ],
)
def test_a_malformed_traceparent_is_read_as_no_context_never_an_error(value):
    assert headers_context([("traceparent", value), ("tracestate", b"a=b")]) is None


def test_records_without_trace_headers_have_no_context():
    assert headers_context(None) is None
    assert headers_context([]) is None
    assert headers_context([("event_id", b"1")]) is None


def test_a_later_version_is_read_by_the_rules_of_version_00():
    found = headers_context([("traceparent", f"01-{TRACE_ID}-{SPAN_ID}-01-future".encode())])
    assert format_trace_id(found.trace_id) == TRACE_ID


def test_the_headers_written_are_the_w3c_ones_and_read_back_the_same():
    value = traceparent()
    found = headers_context([("traceparent", value.encode())])
    from opentelemetry.trace import NonRecordingSpan

    assert trace_headers(NonRecordingSpan(found)) == [("traceparent", value)]


def test_outside_any_span_a_message_gets_no_trace_headers(spans):
    assert message_create_headers(destination="t", message_id="1", key="1") == []
    assert spans.finished() == []


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_exporters_are_those_otel_traces_exporter_names(environ, expected):
    assert tracing_exporters(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER names jaeger"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'",
        ),
    ],
)
def test_an_exporter_or_protocol_this_deployment_lacks_is_refused_in_one_line(environ, named):
    with pytest.raises(ImproperlyConfigured, match=named.replace("(", r"\(")) as refused:
        tracing_exporters(environ)
    assert "\n" not in str(refused.value)


@pytest.mark.django_db
def test_the_request_span_of_a_path_outside_latin_1_is_made_and_the_answer_is_still_a_404(spans, client):
    response = client.get("/api/orders/\u0661/")

    assert response.status_code in (401, 404)
    [request] = [span for span in spans.finished() if span.kind == SpanKind.SERVER]
    assert request.attributes["url.path"] == "/api/orders/\u0661/"
    assert request.attributes["http.response.status_code"] == response.status_code
