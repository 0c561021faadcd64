"""The admin's topic browser: the topics with their record counts, one topic's records, and one
record's value as a download.

Records carry order data, so these pages need the `kafka_bridge.browse_topics` permission on top
of staff status (the status page needs staff status only). They show the apps' own topics and
those of KAFKA_BROWSE_TOPICS, never Kafka's internal ones. The reading is `kafka_bridge.console.browser.reading`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header

from kafka_bridge.connection import BrokerUnavailable
from kafka_bridge.console.browser.reading import (
    BrowseResult,
    RecordView,
    TopicNotFound,
    record_at,
    record_link,
    topic_records_read,
    topics_summarize,
)
from kafka_bridge.registry import registered_topics

BROWSE_PERMISSION = "kafka_bridge.browse_topics"
# Records a page lists when it does not say: a few screens to read, and (unfiltered, newest
# first) only this many of each partition to scan.
DEFAULT_LIMIT = 50
# The most records a page may ask for: with values cut at VALUE_CUT_AT characters, a page of
# them stays around a megabyte of HTML.
MAX_LIMIT = 500
# Records a filtered page may read before it stops and says where to continue: bounds the
# broker's and the web process's work per page, whatever the topic's size (10,000 order events
# of a few lines each are a few megabytes to fetch and match).
MAX_SCANNED = 10_000
# Characters of a value shown in the list; the record's own page shows more of it. An order's
# event, pretty-printed, is about 400 characters and 95 more per order line: orders of up to
# 16 lines show whole, and a huge value does not swamp the list. What is read of each value is
# bounded before that, in bytes (records.VALUE_HEAD_BYTES).
VALUE_CUT_AT = 2_000
# Bytes of the value the record's own page reads and shows (pretty-printed when that is all of
# it: a quarter of a megabyte of JSON takes some 20 ms). Past that, the value is a download.
FULL_VALUE_BYTES = 256 * 1024
# The longest key or text a search takes: far longer than any key the project writes or text an
# operator types, and it is looked for in every record scanned.
MAX_SEARCH_LENGTH = 1_000
# Kafka's own rule for topic names; anything else cannot be a topic, so it is not looked up.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Kafka names its internal topics so (`__consumer_offsets`, `__transaction_state`, ...); the
# broker's `is_internal` is checked too, when the topic is read.
INTERNAL_TOPIC_PREFIX = "__"
# Kafka's record timestamps count milliseconds from here; an earlier time would be a negative
# timestamp, which the offsets lookup takes for one of its special offsets (-1 latest, -2
# earliest, -3 the largest timestamp) instead of a time.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def browse_permission_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 for staff without the permission; wrap the result in `admin.site.admin_view`, which
    sends everyone who is not staff to the admin's login page first."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(BROWSE_PERMISSION):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return checked


def browsable_topics() -> set[str]:
    """The topics the browser shows: the apps' own (their event topics and the topics they have
    `ensure_topics` manage, dead-letter topics among them) and KAFKA_BROWSE_TOPICS, never an
    internal one: `__consumer_offsets` holds every group's members, hosts and offsets."""
    names = registered_topics() | set(settings.KAFKA_BROWSE_TOPICS)
    return {name for name in names if not name.startswith(INTERNAL_TOPIC_PREFIX)}


class UtcDateTimeField(forms.DateTimeField):
    """A date and time typed without a zone, taken as UTC whatever the active time zone."""

    input_formats = (
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S.%f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    )

    def to_python(self, value: Any):
        with timezone.override(UTC):
            return super().to_python(value)


class RecordQueryForm(forms.Form):
    """The records page's GET parameters; all optional: no parameters means the newest
    DEFAULT_LIMIT records of every partition."""

    partition = forms.IntegerField(min_value=0, required=False, widget=forms.NumberInput(attrs={"placeholder": "all"}))
    limit = forms.IntegerField(
        min_value=1, max_value=MAX_LIMIT, required=False, widget=forms.NumberInput(attrs={"placeholder": DEFAULT_LIMIT})
    )
    offset = forms.IntegerField(min_value=0, required=False, label="From offset")
    since = UtcDateTimeField(
        required=False,
        label="From time (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"),
    )
    key = forms.CharField(required=False, max_length=MAX_SEARCH_LENGTH, label="Key is")
    contains = forms.CharField(required=False, max_length=MAX_SEARCH_LENGTH, label="Value contains")
    header = forms.CharField(
        required=False,
        max_length=MAX_SEARCH_LENGTH,
        label="Header",
        widget=forms.TextInput(attrs={"placeholder": "any, e.g. traceparent"}),
    )
    header_contains = forms.CharField(
        required=False,
        max_length=MAX_SEARCH_LENGTH,
        label="Header value contains",
        widget=forms.TextInput(attrs={"placeholder": "a trace id, an event id"}),
    )
    full = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean_since(self) -> datetime | None:
        since = self.cleaned_data["since"]
        if since is not None and since < EARLIEST_TIME:
            raise forms.ValidationError(
                "From time must be 1970-01-01 00:00:00 UTC or later: record timestamps start there.",
                code="before_1970",
            )
        return since

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("offset") is not None and data.get("since") is not None:
            raise forms.ValidationError("Give a start offset or a start time, not both.")
        if data.get("full") and (data.get("partition") is None or data.get("offset") is None):
            raise forms.ValidationError("A whole record is named by its partition and offset.")
        return data


@browse_permission_required
def topic_list_page(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Topics"}
    try:
        context["topics"] = topics_summarize(names=browsable_topics(), timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS)
    except BrokerUnavailable as exc:
        context["kafka_error"] = str(exc)
    return render(request, "kafka_bridge/topics.html", context)


@browse_permission_required
def topic_records_page(request: HttpRequest, name: str) -> HttpResponse:
    if not TOPIC_NAME.fullmatch(name):
        raise Http404("not a topic name")
    if name not in browsable_topics():
        # Before any broker call: what the broker has beyond these is not for this page to say.
        raise Http404("not a topic the browser shows")
    form = RecordQueryForm(request.GET)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": f"Topic {name}",
        "topic": name,
        "form": form,
        "cut_at": VALUE_CUT_AT,
        "default_limit": DEFAULT_LIMIT,
    }
    status = 200
    if form.is_valid():
        query = form.cleaned_data
        try:
            if query["full"]:
                record = record_at(
                    topic=name,
                    partition=query["partition"],
                    offset=query["offset"],
                    timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS,
                    value_bytes=FULL_VALUE_BYTES,
                )
                context["full_record"] = _row(record, cut_at=None) if record else None
                context["full_wanted"] = (query["partition"], query["offset"])
            else:
                result = topic_records_read(
                    topic=name,
                    partitions=[query["partition"]] if query["partition"] is not None else None,
                    from_offset=query["offset"],
                    from_timestamp=query["since"],
                    key=query["key"] or None,
                    contains=query["contains"] or None,
                    header=query["header"] or None,
                    header_contains=query["header_contains"] or None,
                    limit=query["limit"] or DEFAULT_LIMIT,
                    max_scanned=MAX_SCANNED,
                    timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS,
                )
                context.update(_result_context(result, query=query))
        except TopicNotFound as exc:
            context["not_found"] = str(exc)
            status = 404
        except BrokerUnavailable as exc:
            context["kafka_error"] = str(exc)
    return render(request, "kafka_bridge/topics_records.html", context, status=status)


def _result_context(result: BrowseResult, *, query: dict[str, Any]) -> dict[str, Any]:
    # A continuation keeps the filters and the page size, and reads one partition forward.
    kept = {name: query[name] for name in ("key", "contains", "header", "header_contains", "limit") if query[name]}
    resume = []
    for read in result.resume_points:
        offset = read.older_search_offset if result.newest_first else read.next_offset
        resume.append(
            {
                "read": read,
                "offset": offset,
                "url": "?" + urlencode({**kept, "partition": read.partition, "offset": offset}),
            }
        )
    return {
        "result": result,
        "rows": [_row(record, cut_at=VALUE_CUT_AT) for record in result.records],
        "resume": resume,
        "timeout_s": settings.KAFKA_STATUS_TIMEOUT_MS / 1000,
        "max_scanned": MAX_SCANNED,
    }


def _row(record: RecordView, *, cut_at: int | None) -> dict[str, Any]:
    value = record.value_text
    cut_here = cut_at is not None and value is not None and len(value) > cut_at
    shown = value[:cut_at] if cut_here else value
    timestamp = record.timestamp
    return {
        "record": record,
        "timestamp": f"{timestamp:%Y-%m-%d %H:%M:%S}.{timestamp.microsecond // 1000:03d} UTC" if timestamp else None,
        "key": record.key_text,
        "value": shown,
        "value_is_json": record.value_is_json,
        "value_size": record.value_length,
        "shown_length": len(shown) if shown is not None else 0,
        # Not all of the value is on the page: cut here, or only its head was read.
        "cut": cut_here or not record.value_complete,
        # The record's own page shows more of it, unless it showed all it read already.
        "full_url": "?" + urlencode({"partition": record.partition, "offset": record.offset, "full": 1})
        if cut_at is not None
        else "",
        "download_url": record_value_url(record=record),
        "headers": record.header_texts,
        "link": record_link(record=record),
    }


def record_value_url(*, record: RecordView) -> str:
    """Where the whole of `record`'s value is downloaded (for users with BROWSE_PERMISSION)."""
    return reverse("kafka-record-value", args=[record.topic, record.partition, record.offset])


@browse_permission_required
def record_value_download(request: HttpRequest, name: str, partition: int, offset: int) -> HttpResponse:
    """The whole value of one record, byte for byte, as a file: the pages show a bounded part of
    it. It is read alone, by seeking to it, within KAFKA_STATUS_TIMEOUT_MS; it is held in memory
    once (with the batch it came in, decompressed) while it is sent."""
    if not TOPIC_NAME.fullmatch(name):
        raise Http404("not a topic name")
    if name not in browsable_topics():
        raise Http404("not a topic the browser shows")
    try:
        record = record_at(
            topic=name,
            partition=partition,
            offset=offset,
            timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS,
            value_bytes=None,
        )
    except BrokerUnavailable as exc:
        return HttpResponse(f"Kafka is unreachable: {exc}\n", status=503, content_type="text/plain; charset=utf-8")
    if record is None:
        raise Http404("no record there")
    if record.value_head is None:
        raise Http404("the record's value is null")
    response = HttpResponse(record.value_head, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=f"{name}-{partition}-{offset}.bin"
    )
    return response
