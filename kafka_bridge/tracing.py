"""OpenTelemetry in orderflow: W3C trace context from the request that records an event, through
the outbox and Kafka, to the consumer's work and the platform call.

Everything that makes a span or moves a context is here, in one module: the request's SERVER
span (`RequestSpanMiddleware`), the outbox's creation span (its context stored with the outbox
row as the record's `traceparent`/`tracestate` headers), the consumer's process span per record
(kafka-python 3.x has no OpenTelemetry instrumentation), the trace headers on a dead letter, and
the platform client's CLIENT span and `traceparent` header. The request span is ours too:
opentelemetry-instrumentation-django 0.66b2 answers 500 to a request whose path has a character
outside Latin-1 (`GET /api/orders/١/`: its WSGI attributes quote Django's decoded PATH_INFO as
Latin-1 and raise UnicodeEncodeError), where orderflow answers 404.

Two modes, chosen once per process by `tracing_configure()` from the standard `OTEL_*` variables:

- exporting (`OTEL_TRACES_EXPORTER` names an exporter): an SDK tracer provider with the sampler,
  resource and exporter settings the SDK reads from the environment; spans are made and exported.
- propagating only (the default): no span is made and no SDK object exists. A context that came
  in (a request's `traceparent`, a record's) is passed on unchanged to the outbox row, the
  platform call and a dead letter; without one, nothing is written and nothing invented.

Malformed trace headers (too long, an unknown or invalid version, not hex, all zeros) are read as
no header at all: they never fail a record.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
# The instrumentation scope of the spans made here.
SCOPE = "orderflow"
MESSAGING_SYSTEM = "kafka"
# What OTEL_TRACES_EXPORTER may name (the SDK's own names); the OTLP exporter is the HTTP one.
EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("http/protobuf",)

_propagator = TraceContextTextMapPropagator()
_no_context = otel_context.Context()


class _Tracing:
    """The process's mode: `tracer` is None while only propagating."""

    tracer: trace.Tracer | None = None


_tracing = _Tracing()


# --- the process's set-up ---------------------------------------------------------------------


def tracing_exporters(environ: dict[str, str] | None = None) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names (none when unset: the specification's default is
    otlp, but a process that exports must be told where); raises ImproperlyConfigured, in one
    line, for a name or an OTLP protocol this deployment does not have."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ImproperlyConfigured(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}: this deployment has {', '.join(EXPORTERS)}"
        )
    names = [name for name in names if name != "none"]
    if "otlp" in names:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol.strip() not in OTLP_PROTOCOLS:
            raise ImproperlyConfigured(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the OTLP exporter installed speaks http/protobuf "
                "(a collector's port 4318)"
            )
    return names


def tracing_configure() -> trace.TracerProvider | None:
    """Once per process (the `config` app's `ready()`): with an exporter named in
    OTEL_TRACES_EXPORTER, an SDK tracer provider set globally (sampler, resource, OTLP endpoint,
    headers and batch settings as the SDK reads them from the environment) and used here."""
    provider = None
    exporters = tracing_exporters()
    if exporters:
        provider = tracer_provider_build(exporters=exporters)
        trace.set_tracer_provider(provider)
    tracing_use(provider)
    return provider


def tracer_provider_build(*, exporters: Sequence[str]) -> trace.TracerProvider:
    """An SDK tracer provider exporting to `exporters` in batches; OTEL_SERVICE_NAME (default
    `orderflow`), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_* and
    OTEL_BSP_* as the SDK reads them."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "orderflow"}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracing_use(provider: trace.TracerProvider | None) -> None:
    """Make this module's spans with `provider`, or none at all (propagating only) with None.
    `tracing_configure` calls it; the tests give an SDK provider with an in-memory exporter."""
    _tracing.tracer = provider.get_tracer(SCOPE) if provider is not None else None


# --- reading and writing the W3C headers --------------------------------------------------------


def _headers_get(headers: Iterable[tuple[str, Any]], name: str) -> list[str] | None:
    found = None
    for header, value in headers:
        if header == name and value is not None:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            found = [text] if found is None else [*found, text]
    return found


class _HeadersGetter:
    """The propagator's view of Kafka headers ([(name, bytes)]) or the outbox's ([[name, str]])."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        return _headers_get(carrier, key)

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_getter = _HeadersGetter()


def headers_context(headers: Sequence[tuple[str, Any]] | None) -> trace.SpanContext | None:
    """The valid W3C context in `headers` (Kafka's or the outbox's), or None: absent or
    malformed, never an error."""
    if not headers:
        return None
    # The common case, a record without one, costs this scan and nothing else.
    for name, _ in headers:
        if name == TRACEPARENT:
            break
    else:
        return None
    try:
        extracted = _propagator.extract(headers, context=_no_context, getter=_getter)
    except Exception:  # a malformed header is as if there were none
        return None
    span_context = trace.get_current_span(extracted).get_span_context()
    return span_context if span_context.is_valid else None


def trace_headers(span: Span | None) -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate` when there is one) of `span`'s context, as the W3C
    specification writes them; none for no span or an invalid context."""
    if span is None or not span.get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span, _no_context))
    return [(name, carrier[name]) for name in TRACE_HEADERS if name in carrier]


def trace_id_of(headers: Sequence[tuple[str, Any]] | None) -> str | None:
    """The trace id (32 hex digits) of the context in `headers`, or None."""
    span_context = headers_context(headers)
    return trace.format_trace_id(span_context.trace_id) if span_context is not None else None


def trace_url(trace_id: str | None) -> str | None:
    """The trace in the tracing UI, from OTEL_TRACE_URL_TEMPLATE; None without one."""
    template = settings.OTEL_TRACE_URL_TEMPLATE
    if not trace_id or not template:
        return None
    return template.replace("{trace_id}", trace_id)


# --- the request -------------------------------------------------------------------------------


class RequestSpanMiddleware:
    """The SERVER span of each request (first in MIDDLEWARE), child of the request's own
    `traceparent` when it has a valid one, with HTTP's semantic conventions; named after the
    route once resolved. While only propagating, a valid incoming context is made current and
    nothing else is done."""

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        meta = request.META
        incoming = meta.get("HTTP_TRACEPARENT")
        parent = (
            headers_context([(TRACEPARENT, incoming), (TRACESTATE, meta.get("HTTP_TRACESTATE"))])
            if incoming is not None
            else None
        )
        tracer = _tracing.tracer
        if tracer is None:
            if parent is None:
                return self.get_response(request)
            with trace.use_span(NonRecordingSpan(parent), end_on_exit=False):
                return self.get_response(request)
        method = request.method
        span = tracer.start_span(
            method,
            context=trace.set_span_in_context(NonRecordingSpan(parent), _no_context) if parent else _no_context,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "network.protocol.version": meta.get("SERVER_PROTOCOL", "").rpartition("/")[2],
            },
        )
        with trace.use_span(span, end_on_exit=True):
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            if match is not None and match.route:
                route = f"/{match.route}"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
            return response


# --- the producer side: where the event is born -----------------------------------------------


def message_create_headers(*, destination: str, message_id: str, key: str | None) -> list[list[str]]:
    """The trace headers of a message recorded now, as the outbox stores them ([[name, value]]):
    the context of a PRODUCER span `create <destination>` child of the active span when spans are
    made, the active span's own context when only propagating; none without an active span."""
    current = trace.get_current_span()
    if not current.get_span_context().is_valid:
        return []
    tracer = _tracing.tracer
    if tracer is None:
        return [[name, value] for name, value in trace_headers(current)]
    span = tracer.start_span(
        f"create {destination}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": "create",
            "messaging.operation.type": "create",
            "messaging.destination.name": destination,
            "messaging.message.id": message_id,
            **({"messaging.kafka.message.key": key} if key is not None else {}),
        },
    )
    try:
        return [[name, value] for name, value in trace_headers(span)]
    finally:
        span.end()


def messages_send_span(*, destinations: Sequence[str], headers: Sequence[Sequence[Any]]) -> Span | None:
    """A PRODUCER span `send <destination>` for messages sent together now (a relay's round),
    linked to each one's creation context, as the messaging conventions link a batch send; None
    while only propagating or with nothing to send."""
    tracer = _tracing.tracer
    if tracer is None or not destinations:
        return None
    topics = sorted(set(destinations))
    links = [Link(found) for found in map(headers_context, headers) if found is not None]
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.batch.message_count": len(destinations),
    }
    if len(topics) == 1:
        attributes["messaging.destination.name"] = topics[0]
    name = f"send {topics[0]}" if len(topics) == 1 else "send"
    return tracer.start_span(name, context=_no_context, kind=SpanKind.PRODUCER, attributes=attributes, links=links)


def messages_send_span_end(span: Span | None, *, failed: int) -> None:
    """End a send's span: in error when `failed` of its messages were not acknowledged."""
    if span is None:
        return
    if failed:
        span.set_attribute("error.type", "send_failed")
        span.set_status(Status(StatusCode.ERROR, f"{failed} message(s) not acknowledged"))
    span.end()


# --- the consumer side ------------------------------------------------------------------------


def message_process_span(
    *,
    destination: str,
    partition: int,
    offset: int,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    consumer_group: str,
    message_id: str | None = None,
) -> Span | None:
    """The CONSUMER span `process <destination>` of one record, child of (and linked to) the
    context in its headers; while only propagating, that context itself as a span that makes
    nothing (so the platform call and a dead letter carry it on), or None without one."""
    parent = headers_context(headers)
    tracer = _tracing.tracer
    if tracer is None:
        return NonRecordingSpan(parent) if parent is not None else None
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": destination,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": consumer_group,
    }
    if message_id is None:
        found = _headers_get(headers or (), "event_id")
        message_id = found[0] if found else None
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    if parent is None:
        return tracer.start_span(
            f"process {destination}", context=_no_context, kind=SpanKind.CONSUMER, attributes=attributes
        )
    return tracer.start_span(
        f"process {destination}",
        context=trace.set_span_in_context(NonRecordingSpan(parent), _no_context),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        # The messaging conventions link a process span to the message's creation context; it is
        # its parent too, so that one trace runs from the request to the platform's answer.
        links=[Link(parent)],
    )


def span_retry(span: Span | None, *, attempt: int, error: str, delay: float) -> None:
    """A `retry` event on a record's span: which attempt failed, why, and the wait before the next."""
    if span is not None and span.is_recording():
        span.add_event("retry", {"attempt": attempt, "error": error, "delay_s": round(delay, 3)})


def span_dead_lettered(span: Span | None, *, error: str) -> None:
    """A record given up on: its span's status is an error, with a `dead_letter` event."""
    if span is not None and span.is_recording():
        span.set_status(Status(StatusCode.ERROR, error))
        span.add_event("dead_letter", {"error": error})


def span_let_go(span: Span | None) -> None:
    """A record left to its partition's next owner (the partition was revoked before the record
    was done with): a `partition_revoked` event, and the span ends; the next owner reads the
    record again under a span of its own."""
    if span is not None:
        if span.is_recording():
            span.add_event("partition_revoked")
        span.end()


def call_in_span(call: Callable[[], Any], span: Span | None) -> Callable[[], Any]:
    """`call` made with `span` current, so that what it calls (the platform client) continues
    the trace; `call` itself when there is no span. A coroutine function stays one."""
    if span is None:
        return call
    if inspect.iscoroutinefunction(call):

        async def in_span() -> Any:
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                return await call()
            finally:
                otel_context.detach(token)

        return in_span

    @functools.wraps(call)
    def in_span_blocking() -> Any:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            return call()

    return in_span_blocking


# --- an HTTP client's call --------------------------------------------------------------------


def http_client_span(
    *, method: str, url: str, host: str, port: int, idempotency_key: str | None = None
) -> tuple[Span | None, bytes]:
    """For an HTTP call about to be made: its CLIENT span (None while only propagating) and the
    `traceparent`/`tracestate` header lines to send (b"" without a context)."""
    current = trace.get_current_span()
    tracer = _tracing.tracer
    if tracer is None:
        span = None
        headers = trace_headers(current) if current.get_span_context().is_valid else []
    else:
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": url,
            "server.address": host,
            "server.port": port,
        }
        if idempotency_key is not None:
            attributes["http.request.header.idempotency-key"] = (idempotency_key,)
        span = tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        headers = trace_headers(span)
    return span, b"".join(f"{name}: {value}\r\n".encode("ascii", "replace") for name, value in headers)


def http_client_span_end(span: Span | None, *, status: int | None = None, error: BaseException | None = None) -> None:
    """End an HTTP call's span with the response's status, or the error it ended with."""
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
    span.end()
