"""What the exports add to other apps' admin pages: the Kafka status page's Exports panel, and
the Delivery panel on each order's admin page: the order's trace (`exports.console.trace`), for
users who may view exports. The record and the dead letter are read back from the broker only
for users who may browse topics (they show the order's data as it travelled)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse

from exports.console.trace import RecordRead, order_trace
from exports.console.trace_output import duration_text
from exports.redrive import REDRIVE_PERMISSION
from exports.selectors import export_status_panel
from kafka_bridge.console.browser.views import BROWSE_PERMISSION, record_value_url
from orders.models import Order

VIEW_EXPORTS_PERMISSION = "exports.view_orderexport"
# Characters of the record's value shown on the panel (of the first VALUE_HEAD_BYTES read); the
# topic browser and the download have the rest.
VALUE_SHOWN = 2000


def export_status_panel_html(*, user, **_) -> str:
    """The Exports panel of the Kafka status page (see `export_status_panel`)."""
    return render_to_string("exports/status_panel.html", {"panel": export_status_panel(user=user)})


def delivery_panel(request: HttpRequest, order: Order) -> str | None:
    user = request.user
    if not user.has_perm(VIEW_EXPORTS_PERMISSION):
        return None
    may_browse = user.has_perm(BROWSE_PERMISSION)
    trace = order_trace(order_id=order.pk, read_topics=may_browse)
    details = _step_details(trace, may_browse=may_browse)
    steps = [
        {
            "name": step.name,
            "label": step.label,
            "at": step.at,
            "after": duration_text(step.after) if step.after else "",
            **details.get(step.name, {}),
        }
        for step in trace.steps
    ]
    context = {
        "trace": trace,
        "steps": steps,
        "status": trace.export.status if trace.export is not None else ("pending" if trace.events else "none"),
        "confirm_to_exported": duration_text(trace.confirm_to_exported) if trace.confirm_to_exported else "",
        "may_browse": may_browse,
        "record": _record_context(trace.record),
        "dead_letter": _record_context(trace.dead_letter, same_as=trace.record),
        "dead_letters_url": reverse("admin:exports_dead_letters") if user.has_perm(REDRIVE_PERMISSION) else "",
    }
    return render_to_string("exports/delivery_panel.html", context, request=request)


def _step_details(trace, *, may_browse: bool) -> dict[str, dict]:
    event, export = trace.event, trace.export
    details: dict[str, dict] = {}
    if event is not None:
        text = f"event {event.event_id}, {event.attempts} send attempt(s)"
        if event.last_error:
            text += f"; last error: {event.last_error}"
        if event.quarantined_at:
            text += "; quarantined"
        details["outbox"] = {"detail": text}
    if trace.record is not None:
        details["on-topic"] = {
            "detail": f"{trace.record.topic}[{trace.record.partition}] offset {trace.record.offset}",
            "link": _record_url(trace.record) if may_browse else "",
            "link_class": "trace-record",
        }
    elif event is not None and event.partition is not None:
        details["on-topic"] = {"detail": f"{event.topic}[{event.partition}] offset {event.offset}"}
    if export is not None and export.exported_at is not None:
        details["exported"] = {"detail": f"Idempotency-Key {export.event_id}"}
    if export is not None and export.dead_lettered_at is not None:
        where = f"{export.dead_letter_topic}[{export.dead_letter_partition}] offset {export.dead_letter_offset}"
        read = trace.dead_letter
        details["dead-lettered"] = {
            "detail": where,
            "link": _record_url(read) if may_browse and read else "",
            "link_class": "trace-dead-letter",
        }
    return details


def _record_url(read: RecordRead) -> str:
    query = urlencode({"partition": read.partition, "offset": read.offset, "limit": 1})
    return f"{reverse('kafka-topic-records', args=[read.topic])}?{query}"


def _record_context(read: RecordRead | None, *, same_as: RecordRead | None = None) -> dict | None:
    """What the panel shows of a record; its value only once when the dead letter carries the
    record's own bytes, as it does."""
    if read is None:
        return None
    record = read.record
    if record is None:
        return {"read": read, "missing": read.missing}
    value = record.value_text
    original = same_as.record if same_as is not None else None
    return {
        "read": read,
        "record": record,
        # Compared by hash and size: neither value is kept whole (kafka_bridge.console.browser.reading).
        "same_value": original is not None
        and original.value_head is not None
        and record.value_head is not None
        and (original.value_length, original.value_sha256) == (record.value_length, record.value_sha256),
        "value": value[:VALUE_SHOWN] if value is not None else None,
        "value_size": record.value_length,
        "cut": value is not None and (len(value) > VALUE_SHOWN or not record.value_complete),
        "full_url": f"{reverse('kafka-topic-records', args=[read.topic])}?"
        + urlencode({"partition": read.partition, "offset": read.offset, "full": 1}),
        "download_url": record_value_url(record=record),
    }
