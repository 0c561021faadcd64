"""Dead letters made the way users make them, for the redrive tests: a user who may (or may
not) redrive, an order whose export the platform refused, where its dead letter is."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from exports.models import OrderExport
from orders.services import LineInput, order_confirm, order_create
from tests.support.helpers import wait_until
from tests.support.records import read_records

DEAD_LETTERS_URL = "/admin/exports/orderexport/dead-letters/"


def user_with(username: str, *, may_redrive: bool, staff: bool = True):
    user = get_user_model().objects.create_user(username=username, password="pw", is_staff=staff)
    perms = ["view_orderexport"] + (["redrive_orderexport"] if may_redrive else [])
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="exports", codename__in=perms))
    return user


def dead_lettered_order():
    """An order whose export the platform refused, so its event sits on the DLT."""
    order = order_create(customer_id="c-dlt", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("5.00"))])
    order_confirm(order_id=order.pk)
    wait_until(
        lambda: OrderExport.objects.filter(order=order, status="failed").exists(),
        timeout=30,
        message="the refused export was not marked failed",
    )
    return order


def dead_letter_position(dlt: str, order, *, records_on_the_dlt: int) -> str:
    """`P:O` of the order's record on the DLT."""
    [record] = [r for r in read_records(dlt, expected=records_on_the_dlt) if r.key == str(order.pk).encode()]
    return f"{record.partition}:{record.offset}"
