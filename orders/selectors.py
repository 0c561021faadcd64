"""Reads of the orders app."""

from __future__ import annotations

from django.db.models import QuerySet

from orders.models import Order


def order_list(*, status: str | None = None) -> QuerySet[Order]:
    """Orders, newest first, with their lines and export status loaded in two queries."""
    orders = Order.objects.prefetch_related("lines").select_related("export").order_by("-id")
    if status:
        orders = orders.filter(status=status)
    return orders


def order_get(*, order_id: int) -> Order:
    """Raises `Order.DoesNotExist`."""
    return order_list().get(pk=order_id)
