"""The HTTP client passes the trace on: `traceparent` (and `tracestate`) on the platform call,
under a CLIENT span with HTTP's semantic conventions when spans are made."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanKind

from exports.platform.client import PermanentExportError
from exports.platform.http import HttpExternalPlatformClient
from kafka_bridge.tracing import call_in_span, headers_context
from tests.support.platform_stub import PlatformServer, PlatformStub
from tests.support.tracing import ids, parts, traceparent

ORDER = {"id": 7, "customer_id": "c-1"}


@pytest.fixture
def stub() -> Iterator[PlatformStub]:
    server = PlatformServer(PlatformStub())
    yield server.stub
    server.close()


def send_in(span, stub: PlatformStub, *, key: str = "key-1") -> None:
    """One call on an event loop of its own, with `span` current as the consumer makes it."""
    client = HttpExternalPlatformClient(url=stub.url.replace("http://", "http://user:secret@") + "?token=t", timeout=5)

    async def call() -> None:
        try:
            await call_in_span(functools.partial(client.send_async, order=ORDER, idempotency_key=key), span)()
        finally:
            await client.aclose()

    asyncio.run(call())


def span_of(value: str, tracestate: bytes | None = None) -> NonRecordingSpan:
    return NonRecordingSpan(
        headers_context([("traceparent", value.encode())] + ([("tracestate", tracestate)] if tracestate else []))
    )


def test_without_a_context_no_trace_header_goes_out(stub):
    send_in(None, stub)

    [request] = stub.received()
    assert "traceparent" not in request.headers and "tracestate" not in request.headers


def test_while_only_propagating_the_records_context_goes_out_unchanged(stub):
    incoming = traceparent()

    send_in(span_of(incoming, b"vendor=x"), stub)

    [request] = stub.received()
    assert request.headers["traceparent"] == incoming
    assert request.headers["tracestate"] == "vendor=x"


def test_with_spans_the_call_is_a_client_span_and_the_platform_gets_its_context(stub, spans):
    incoming = traceparent()

    send_in(span_of(incoming), stub)

    [request] = stub.received()
    [client] = spans.of_kind(SpanKind.CLIENT)
    assert parts(request.headers["traceparent"]) == ("00", *ids(client), True)
    assert ids(client)[0] == parts(incoming)[1]
    assert format(client.parent.span_id, "016x") == parts(incoming)[2]
    assert client.name == "POST"
    # The URL without its credentials or query string.
    assert client.attributes["url.full"] == stub.url
    assert client.attributes["server.port"] == int(stub.url.rsplit(":", 1)[1].split("/")[0])
    assert client.attributes["http.response.status_code"] == 201
    assert client.attributes["http.request.header.idempotency-key"] == ("key-1",)
    assert client.status.status_code.name == "UNSET"


def test_a_refused_call_ends_its_span_in_error_with_the_status(stub, spans):
    stub.down_status = 422

    with pytest.raises(PermanentExportError):
        send_in(span_of(traceparent()), stub)

    [client] = spans.of_kind(SpanKind.CLIENT)
    assert client.attributes["http.response.status_code"] == 422
    assert client.attributes["error.type"] == "422"
    assert client.status.status_code.name == "ERROR"


def test_a_blocking_call_in_a_span_sees_it_as_current():
    from opentelemetry import trace

    span = span_of(traceparent())
    seen = call_in_span(lambda: trace.get_current_span(), span)()

    assert seen is span
    assert trace.get_current_span() is not span
