"""Who may use the operator's console: every page and action of it, for each kind of user.

Four kinds of user meet each page and action:
- anonymous: nobody logged in;
- not-staff: logged in and holding the page's permission, but not staff;
- staff-without: staff holding every other console permission, but not the page's;
- staff-with: staff holding the page's permission and no other console permission.
The first two are sent to the admin's login, the third is refused with a 403, the fourth gets in
and sees what the others must not (a record's value, a dead letter's error, a topic's name).
The outbox's pages are for staff who may view the outbox; of them, only those who may browse the
topics see an event's record (its payload and headers), as on the topic.

Admin actions refuse differently: Django runs only the actions it offers the user, and staff
without the permission are offered none on these changelists, so their post is answered with the
changelist (200) as if no action had been asked for. For them the proof is that nothing changed:
every action case checks the whole console's state after the post, which a refused post leaves
as the `console` fixture made it and an allowed one changes in its own part only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils.html import escape
from kafka import KafkaAdminClient, TopicPartition
from kafka.structs import OffsetAndMetadata

from exports.models import OrderExport, RedriveAudit
from exports.services import order_export_fail
from kafka_bridge.consumer.dead_letters import dead_letter_headers
from kafka_bridge.models import OutboxEvent
from orders.models import Order
from tests.support.factories import consumer_record_factory, order_factory, user_factory
from tests.support.records import committed_offsets, end_offsets, produce_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db]

BROWSE = "kafka_bridge.browse_topics"
REDRIVE = "exports.redrive_orderexport"
CONFIRM = "orders.confirm_order"
VIEW_EXPORTS = "exports.view_orderexport"
VIEW_OUTBOX = "kafka_bridge.view_outboxevent"
CONSOLE_PERMISSIONS = (BROWSE, REDRIVE, CONFIRM)

ADMIN_LOGIN = "/admin/login/"


@dataclass(frozen=True)
class Console:
    """What the console shows and acts on, made for one test: the event topic with one record
    (committed past by the export group) and its DLT with one dead letter, a failed export
    whose event is in the outbox, and a pending order."""

    topic: str
    group: str
    record_value: str
    dead_letter_position: str  # "P:O" on the DLT
    dead_letter_error: str
    failed_export: OrderExport
    pending_order: Order


# --- the table --------------------------------------------------------------------------------

Url = str | Callable[[Console], str]


@dataclass(frozen=True)
class Page:
    url: Url
    permission: str | None  # on top of staff status; None: staff status is enough
    shows: Callable[[Console], str]  # what only those let in see


@dataclass(frozen=True)
class Action:
    url: Url
    data: Callable[[Console], dict]
    permission: str
    changes: Mapping[str, Any]  # the part of `console_state` an allowed post changes, as it becomes
    done: str  # how an allowed post is answered
    refused: str  # how staff without the permission are answered
    needs: tuple[str, ...] = ()  # what it takes to reach the page the action is on


@dataclass(frozen=True)
class Offer:
    url: Url
    permission: str
    offered: tuple[str, ...]  # links, actions and parts of the page shown only with the permission
    needs: tuple[str, ...] = ()


def records_url(console: Console) -> str:
    return f"/admin/kafka/topics/{console.topic}/"


PAGES = {
    "kafka-status": Page("/admin/kafka-status/", None, lambda c: f"<strong>{c.topic}</strong>"),
    "topic-list": Page("/admin/kafka/topics/", BROWSE, lambda c: f'data-topic="{c.topic}"'),
    "topic-records": Page(records_url, BROWSE, lambda c: c.record_value),
    "one-record": Page(lambda c: f"{records_url(c)}?partition=0&offset=0&full=1", BROWSE, lambda c: c.record_value),
    "record-value-download": Page(lambda c: f"{records_url(c)}0/0/value", BROWSE, lambda c: c.record_value),
    "dead-letters": Page("/admin/exports/orderexport/dead-letters/", REDRIVE, lambda c: c.dead_letter_error),
    "reset-offsets": Page("/admin/exports/orderexport/reset-offsets/", REDRIVE, lambda c: 'name="target"'),
}

ACTIONS = {
    "redrive-dead-letter": Action(
        "/admin/exports/orderexport/dead-letters/",
        lambda c: {"position": [c.dead_letter_position]},
        REDRIVE,
        changes={"audits": ["replay_dlt"], "event_records": 2},
        done="302 /admin/exports/orderexport/dead-letters/",
        refused="403",
    ),
    "reset-offsets": Action(
        "/admin/exports/orderexport/reset-offsets/",
        lambda c: {"target": "earliest", "previewed": "earliest", "apply": "Reset offsets"},
        REDRIVE,
        changes={"audits": ["reset_offsets"], "committed": {0: 0, 1: 0, 2: 0}},
        done="302 /admin/exports/orderexport/",
        refused="403",
    ),
    "retry-failed-export": Action(
        "/admin/exports/orderexport/",
        lambda c: {"action": "retry_failed", "_selected_action": [c.failed_export.pk]},
        REDRIVE,
        changes={"audits": ["admin_retry"], "failed_export": ("pending", 1)},
        done="302 /admin/exports/orderexport/",
        refused="200",
        needs=("exports.view_orderexport",),
    ),
    "mark-order-confirmed": Action(
        "/admin/orders/order/",
        lambda c: {"action": "mark_confirmed", "_selected_action": [c.pending_order.pk]},
        CONFIRM,
        changes={"pending_order": ("confirmed", 1)},
        done="302 /admin/orders/order/",
        refused="200",
        needs=("orders.view_order", "orders.change_order"),
    ),
}

OFFERS = {
    "admin-index": Offer("/admin/", BROWSE, ('<a href="/admin/kafka/topics/" id="kafka-topics-link">',)),
    "exports-changelist": Offer(
        "/admin/exports/orderexport/",
        REDRIVE,
        (
            '<a href="/admin/exports/orderexport/dead-letters/">',
            '<a href="/admin/exports/orderexport/reset-offsets/">',
            '<option value="retry_failed">',
        ),
        needs=("exports.view_orderexport",),
    ),
    "orders-changelist": Offer(
        "/admin/orders/order/",
        CONFIRM,
        ('<option value="mark_confirmed">',),
        needs=("orders.view_order", "orders.change_order"),
    ),
    # The status page is for all staff; the orders and errors of failed exports are not.
    "status-failed-exports": Offer("/admin/kafka-status/", VIEW_EXPORTS, ('<table class="failed-exports">',)),
    "outbox-event-record": Offer(
        lambda c: f"/admin/kafka_bridge/outboxevent/{outbox_event(c).pk}/change/",
        BROWSE,
        ('class="form-row field-payload"', 'class="form-row field-headers"'),
        needs=(VIEW_OUTBOX,),
    ),
    "order-delivery-panel": Offer(
        lambda c: f"/admin/orders/order/{c.failed_export.order_id}/change/",
        VIEW_EXPORTS,
        ('<div class="module" id="delivery">', 'class="export-status" data-status="failed"'),
        needs=("orders.view_order",),
    ),
}

# What the `console` fixture leaves; each action case compares against it.
INITIAL_STATE = {
    "audits": [],
    "event_records": 1,
    "committed": {0: 1},
    "failed_export": ("failed", 0),  # (status, times its event was queued again)
    "pending_order": ("pending", 0),  # (status, outbox events)
}

ANONYMOUS, NOT_STAFF, STAFF_WITHOUT, STAFF_WITH = "anonymous", "not-staff", "staff-without", "staff-with"
KINDS = (ANONYMOUS, NOT_STAFF, STAFF_WITHOUT, STAFF_WITH)


def matrix(cases: Mapping[str, Page | Action | Offer], kinds=KINDS) -> list:
    """One case per (page or action, user kind); a page that needs no permission has no
    staff-without case."""
    return [
        pytest.param(case, kind, id=f"{name}-{kind}")
        for name, case in cases.items()
        for kind in kinds
        if not (case.permission is None and kind == STAFF_WITHOUT)
    ]


# --- helpers ----------------------------------------------------------------------------------


def url_of(case: Page | Action | Offer, console: Console) -> str:
    return case.url(console) if callable(case.url) else case.url


def log_in(client, kind: str, *, permission: str | None, needs: tuple[str, ...] = ()) -> None:
    if kind == ANONYMOUS:
        return
    if kind == STAFF_WITHOUT:
        granted = [p for p in CONSOLE_PERMISSIONS if p != permission]
    else:
        granted = [permission] if permission else []
    client.force_login(user_factory(is_staff=kind != NOT_STAFF, permissions=[*needs, *granted]))


def answer(response, url: str) -> str:
    """What a response amounts to: `login` for a redirect to the admin's login page that comes
    back to `url`, else the status code, with the path of any other redirect."""
    if response.status_code == 302:
        location = urlsplit(response["Location"])
        if location.path == ADMIN_LOGIN and parse_qs(location.query) == {"next": [url]}:
            return "login"
        return f"302 {location.path}"
    return str(response.status_code)


def outbox_event(console: Console) -> OutboxEvent:
    """The failed export's event in the outbox."""
    return OutboxEvent.objects.get(event_id=console.failed_export.event_id)


def console_state(console: Console, admin: KafkaAdminClient) -> dict[str, Any]:
    """Everything a console action could change."""
    failed = OrderExport.objects.get(pk=console.failed_export.pk)
    pending = Order.objects.get(pk=console.pending_order.pk)
    return {
        "audits": list(RedriveAudit.objects.order_by("pk").values_list("action", flat=True)),
        "event_records": sum(end_offsets(console.topic).values()),
        "committed": committed_offsets(admin, console.group, console.topic),
        "failed_export": (failed.status, OutboxEvent.objects.get(event_id=failed.event_id).resends),
        "pending_order": (pending.status, OutboxEvent.objects.filter(key=str(pending.pk)).count()),
    }


@pytest.fixture
def console(export_topics, export_group, kafka_admin) -> Console:
    topic, dlt = export_topics
    token = uuid.uuid4().hex
    record_value = f"record-value-{token}"
    original = consumer_record_factory(topic=topic, partition=0, offset=0, key=b"k", value=record_value.encode())
    dead_letter_error = f"HTTP 422 from the platform: dead-letter-{token}"
    produce_records(topic, [{"partition": 0, "key": original.key, "value": original.value}])
    [dead_letter_at] = produce_records(
        dlt,
        [
            {
                "partition": 0,
                "key": original.key,
                "value": original.value,
                "headers": dead_letter_headers(original, error=dead_letter_error, attempts=1),
            }
        ],
    )
    kafka_admin.alter_group_offsets(export_group, {TopicPartition(topic, 0): OffsetAndMetadata(1, "", None)})

    failed_order = order_factory(confirmed=True)
    event = OutboxEvent.objects.get(key=str(failed_order.pk))
    failed_export = order_export_fail(
        order_id=failed_order.pk, event_id=event.event_id, reason="HTTP 422 from the platform"
    )
    return Console(
        topic=topic,
        group=export_group,
        record_value=record_value,
        dead_letter_position=f"{dead_letter_at.partition}:{dead_letter_at.offset}",
        dead_letter_error=dead_letter_error,
        failed_export=failed_export,
        pending_order=order_factory(),
    )


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "kind"), matrix(PAGES))
def test_a_console_page_is_shown_only_to_staff_with_its_permission(client, console, page, kind):
    url = url_of(page, console)
    log_in(client, kind, permission=page.permission)

    response = client.get(url)

    assert (
        answer(response, url) == {ANONYMOUS: "login", NOT_STAFF: "login", STAFF_WITHOUT: "403", STAFF_WITH: "200"}[kind]
    )
    assert (page.shows(console) in response.content.decode()) == (kind == STAFF_WITH)


@pytest.mark.parametrize(("action", "kind"), matrix(ACTIONS))
def test_a_console_action_changes_something_only_for_staff_with_its_permission(
    client, console, kafka_admin, action, kind
):
    url = url_of(action, console)
    log_in(client, kind, permission=action.permission, needs=action.needs)

    response = client.post(url, action.data(console))

    expected = {ANONYMOUS: "login", NOT_STAFF: "login", STAFF_WITHOUT: action.refused, STAFF_WITH: action.done}[kind]
    assert answer(response, url) == expected
    assert console_state(console, kafka_admin) == (
        {**INITIAL_STATE, **action.changes} if kind == STAFF_WITH else INITIAL_STATE
    )


@pytest.mark.parametrize(("offer", "kind"), matrix(OFFERS, kinds=(STAFF_WITHOUT, STAFF_WITH)))
def test_the_console_links_to_a_page_or_offers_an_action_only_with_its_permission(client, console, offer, kind):
    # `console` gives the changelists rows: with none, Django shows no actions to anyone.
    log_in(client, kind, permission=offer.permission, needs=offer.needs)

    response = client.get(url_of(offer, console))

    assert response.status_code == 200
    text = response.content.decode()
    assert {item: item in text for item in offer.offered} == dict.fromkeys(offer.offered, kind == STAFF_WITH)


@pytest.mark.parametrize("kind", KINDS)
def test_an_outbox_events_record_is_shown_only_to_staff_who_may_browse_the_topics(client, console, kind):
    event = outbox_event(console)
    url = f"/admin/kafka_bridge/outboxevent/{event.pk}/change/"
    log_in(client, kind, permission=BROWSE, needs=(VIEW_OUTBOX,))

    response = client.get(url)

    text = response.content.decode()
    assert (
        answer(response, url) == {ANONYMOUS: "login", NOT_STAFF: "login", STAFF_WITHOUT: "200", STAFF_WITH: "200"}[kind]
    )
    assert (escape(event.payload) in text) == (kind == STAFF_WITH)
    assert (escape(json.dumps(event.headers, ensure_ascii=False)) in text) == (kind == STAFF_WITH)
    if kind == STAFF_WITHOUT:
        assert f"OrderExportRequested {event.event_id}" in text  # the row, without its record


@pytest.mark.parametrize("lookup", ["payload__contains", "headers__icontains", "payload"])
@pytest.mark.parametrize("kind", (STAFF_WITHOUT, STAFF_WITH))
def test_the_outbox_list_filters_on_an_events_record_only_for_staff_who_may_browse_the_topics(
    client, console, kind, lookup
):
    """Rows found or not by a filter on the payload would tell what it holds, one guess at a time."""
    event = outbox_event(console)
    value = event.payload if lookup == "payload" else "OrderExportRequested"
    log_in(client, kind, permission=BROWSE, needs=(VIEW_OUTBOX,))

    response = client.get("/admin/kafka_bridge/outboxevent/", {lookup: value})

    if kind == STAFF_WITH:
        assert response.status_code == 200
        assert [row.pk for row in response.context["cl"].result_list] == [event.pk]
    else:
        assert response.status_code == 400
