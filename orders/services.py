"""Writes of the orders app: creating and confirming orders."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from orders.events import event_record, order_export_requested
from orders.models import Order, OrderLine


class OrderError(Exception):
    """A domain rule refused the operation. `code` is stable and machine-readable."""

    code = "order_error"


class OrderNotPending(OrderError):
    code = "order_not_pending"

    def __init__(self, order: Order):
        self.order = order
        super().__init__(f"Order {order.pk} is {order.status}; only a pending order can be confirmed.")


class OrderHasNoLines(OrderError):
    code = "order_has_no_lines"

    def __init__(self, order_id: int | None = None):
        which = f"Order {order_id} has" if order_id is not None else "The order has"
        super().__init__(f"{which} no lines; an order needs at least one line.")


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal


def order_create(*, customer_id: str, lines: Iterable[LineInput]) -> Order:
    """Create a pending order with its lines (at least one: `OrderHasNoLines`)."""
    lines = list(lines)
    if not lines:
        raise OrderHasNoLines()
    with transaction.atomic():
        order = Order.objects.create(customer_id=customer_id)
        OrderLine.objects.bulk_create(
            OrderLine(order=order, sku=line.sku, quantity=line.quantity, unit_price=line.unit_price) for line in lines
        )
    return Order.objects.prefetch_related("lines").get(pk=order.pk)


def order_confirm(*, order_id: int) -> Order:
    """Confirm a pending order and record its `OrderExportRequested` event in the same
    transaction. Raises `Order.DoesNotExist`, `OrderNotPending`, or `OrderHasNoLines` (its
    event would send the platform an empty order)."""
    with transaction.atomic():
        # The row lock serialises concurrent confirms on PostgreSQL; the conditional UPDATE
        # makes the pending -> confirmed step atomic on every database, SQLite included.
        order = Order.objects.select_for_update().get(pk=order_id)
        confirmed_at = timezone.now()
        updated = Order.objects.filter(pk=order_id, status=Order.Status.PENDING).update(
            status=Order.Status.CONFIRMED, confirmed_at=confirmed_at
        )
        if not updated:
            order.refresh_from_db()
            raise OrderNotPending(order)
        order = Order.objects.prefetch_related("lines").get(pk=order_id)
        if not order.lines.all():
            raise OrderHasNoLines(order_id)  # and the status update is rolled back with it
        event_record(order_export_requested(order))
    return order
