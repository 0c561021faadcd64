"""The Delivery panel on the order's admin page: the order's trace, for users who may view
exports; the record and dead letter read back only for users who may browse topics."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from orders.services import LineInput, order_confirm, order_create
from tests.support.factories import user_factory
from tests.support.helpers import wait_until
from tests.support.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

ORDER_VIEWER = ["orders.view_order"]
EXPORT_VIEWER = [*ORDER_VIEWER, "exports.view_orderexport"]
OPERATOR = [*EXPORT_VIEWER, "kafka_bridge.browse_topics"]


def exported_order(customer_id: str = "c-panel"):
    order = order_create(customer_id=customer_id, lines=[LineInput(sku="S-1", quantity=1, unit_price=Decimal("2.00"))])
    order_confirm(order_id=order.pk)
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="exported").exists(),
        timeout=30,
        message="the order was not exported",
    )
    wait_until(
        lambda: OutboxEvent.objects.filter(key=str(order.pk), sent_at__isnull=False).exists(),
        timeout=30,
        message="its event was not marked sent",
    )
    return order


def order_page(client, order, permissions) -> str:
    client.force_login(user_factory(permissions=permissions, is_staff=True))
    response = client.get(reverse("admin:orders_order_change", args=[order.pk]))
    assert response.status_code == 200
    return response.content.decode()


def step_row(page: str, step: str) -> str:
    match = re.search(rf'<tr data-step="{step}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no {step} row"
    return match.group(0)


def test_an_operator_sees_every_step_the_record_and_the_attempt(client, running_export_consumer):
    order = exported_order()
    event = OutboxEvent.objects.get(key=str(order.pk))

    page = order_page(client, order, OPERATOR)

    assert '<div class="module" id="delivery">' in page
    assert 'class="export-status" data-status="exported"' in page
    for step in ("confirmed", "outbox", "on-topic", "exported"):
        assert 'class="pending"' not in step_row(page, step)
    link = (
        reverse("kafka-topic-records", args=[event.topic])
        + f"?partition={event.partition}&amp;offset={event.offset}&amp;limit=1"
    )
    assert f'<a class="trace-record" href="{link}">' in step_row(page, "on-topic")
    assert f"Idempotency-Key {event.event_id}" in step_row(page, "exported")
    assert f'<code class="record-key">{order.pk}</code>' in page
    assert f"<code>event_id={event.event_id}</code>" in page
    assert re.findall(r'<tr class="export-attempt" data-outcome="(\w+)">', page) == ["exported"]


def test_without_the_browse_permission_the_record_is_not_read_nor_shown(client, running_export_consumer, settings):
    order = exported_order()
    # Nothing answers here: had the panel tried to read the record, it would say so.
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]

    page = order_page(client, order, EXPORT_VIEWER)

    assert 'id="delivery"' in page
    assert "trace-record" not in page and "record-key" not in page and "not read" not in page
    assert "shown to users who may browse topics" in page
    assert re.findall(r'<tr class="export-attempt" data-outcome="(\w+)">', page) == ["exported"]


def test_without_the_export_view_permission_there_is_no_panel(client, running_export_consumer):
    order = exported_order()

    page = order_page(client, order, ORDER_VIEWER)

    assert 'id="delivery"' not in page and "export-attempt" not in page


def test_without_the_order_view_permission_the_page_is_refused(client, db):
    order = order_create(customer_id="c-x", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])
    client.force_login(
        user_factory(permissions=["exports.view_orderexport", "kafka_bridge.browse_topics"], is_staff=True)
    )

    response = client.get(reverse("admin:orders_order_change", args=[order.pk]))

    assert response.status_code == 403
    assert b'id="delivery"' not in response.content


def test_an_anonymous_visitor_is_sent_to_the_login(client, db):
    order = order_create(customer_id="c-x", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])

    response = client.get(reverse("admin:orders_order_change", args=[order.pk]))

    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_a_pending_order_shows_no_step_done_after_its_creation(client, db):
    order = order_create(customer_id="c-pending", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])

    page = order_page(client, order, OPERATOR)

    assert 'data-status="none"' in page
    for step in ("confirmed", "outbox", "on-topic", "exported"):
        assert 'class="pending"' in step_row(page, step)
    assert "No call to the platform yet." in page


def test_the_records_text_is_escaped(client, running_export_consumer):
    order = exported_order(customer_id="<script>alert(1)</script>")

    page = order_page(client, order, OPERATOR)

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_dead_letter_no_longer_on_its_topic_is_reported_with_its_position(
    client, running_export_consumer, export_topics
):
    _, dlt = export_topics
    order = exported_order()
    OrderExport.objects.filter(order=order).update(
        status="failed",
        dead_letter_topic=dlt,
        dead_letter_partition=0,
        dead_letter_offset=999,
        dead_lettered_at=timezone.now(),
    )

    page = order_page(client, order, OPERATOR)

    row = step_row(page, "dead-lettered")
    assert f"{dlt}[0] offset 999" in row and 'class="pending"' not in row
    assert f"The dead letter: {dlt}[0] offset 999" in page
    assert "not on the topic any more" in page


def test_the_attempts_list_shows_failed_calls_to_users_who_may_view_them(client, running_export_consumer):
    order = exported_order()
    client.force_login(user_factory(permissions=["exports.view_exportattempt"], is_staff=True))

    exported_list = client.get("/admin/exports/exportattempt/?outcome__exact=exported")
    failed_list = client.get("/admin/exports/exportattempt/?outcome__exact=failed")

    assert exported_list.status_code == failed_list.status_code == 200
    assert f"Order #{order.pk} (confirmed)" in exported_list.content.decode()
    assert "0 export attempts" in failed_list.content.decode()
