"""Small factories for tests: plain functions that go through the services, so every object they
make is one the application itself could have made."""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

from orders.models import Order
from orders.services import LineInput, order_confirm, order_create

DEFAULT_PASSWORD = "pw-for-tests"
DEFAULT_LINES = ({"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},)

_usernames = (f"user-{n}" for n in itertools.count(1))


def user_factory(*, username: str | None = None, password: str = DEFAULT_PASSWORD):
    """A saved user with a usable password (for session logins)."""
    return get_user_model().objects.create_user(username=username or next(_usernames), password=password)


def order_factory(
    *,
    customer_id: str = "c-1",
    lines: Iterable[Mapping[str, Any]] | None = None,
    confirmed: bool = False,
) -> Order:
    """An order made by `order_create` (and `order_confirm` when `confirmed`); `lines` take the
    API's shape: `{"sku": ..., "quantity": ..., "unit_price": "10.00"}`."""
    order = order_create(
        customer_id=customer_id,
        lines=[
            LineInput(sku=line["sku"], quantity=line["quantity"], unit_price=Decimal(str(line["unit_price"])))
            for line in (DEFAULT_LINES if lines is None else lines)
        ],
    )
    if confirmed:
        order = order_confirm(order_id=order.pk)
    return order
