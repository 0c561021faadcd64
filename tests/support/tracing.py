"""Spans kept in memory for the tracing tests: an SDK tracer provider with the in-memory exporter
that `kafka_bridge.tracing` makes its spans with while the test runs; and W3C `traceparent` values."""

from __future__ import annotations

import secrets

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from kafka_bridge.tracing import tracing_use


def traceparent(*, trace_id: str | None = None, span_id: str | None = None, sampled: bool = True) -> str:
    """A valid W3C traceparent, of new random ids unless given."""
    trace_id = trace_id or secrets.token_hex(16)
    span_id = span_id or secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


class SpanRecorder:
    """While started, `kafka_bridge.tracing` makes spans with an SDK provider of its own (`sampler`:
    the SDK's default, parent-based always-on, unless given) whose finished spans are kept here."""

    def __init__(self, *, sampler: Sampler | None = None):
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def start(self) -> SpanRecorder:
        tracing_use(self.provider)
        return self

    def stop(self) -> None:
        tracing_use(None)
        self.provider.shutdown()

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def of_kind(self, kind: SpanKind, *, trace_id: int | None = None) -> list[ReadableSpan]:
        return [
            span
            for span in self.finished()
            if span.kind == kind and (trace_id is None or span.context.trace_id == trace_id)
        ]

    def one(self, kind: SpanKind, *, trace_id: int | None = None) -> ReadableSpan:
        found = self.of_kind(kind, trace_id=trace_id)
        assert len(found) == 1, f"{len(found)} {kind.name} span(s): {[s.name for s in self.finished()]}"
        return found[0]


def ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of `span` as a traceparent writes them."""
    return ids_of(span.context)


def ids_of(context) -> tuple[str, str]:
    """(trace id, span id) of a span context as a traceparent writes them."""
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


def parts(value: str) -> tuple[str, str, str, bool]:
    """(version, trace id, parent id, sampled) of a traceparent."""
    version, trace_id, parent_id, flags = value.split("-")
    return version, trace_id, parent_id, bool(int(flags, 16) & 1)


def header(headers, name: str) -> str | None:
    """The value of header `name` in a record's headers ([(name, bytes)]) or an outbox row's
    ([[name, str]]), or None."""
    for key, value in headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None
