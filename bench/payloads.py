"""The benchmark's orders and event payloads (worker side).

Every order has the same three lines, so every `OrderExportRequested` event has the same size,
and the ceilings send payloads of exactly that shape and size.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from orders.events import OrderExportRequested
from orders.models import Order, OrderLine

BENCH_LINES = (
    ("SKU-1001", 2, Decimal("19.90")),
    ("SKU-2002", 1, Decimal("5.00")),
    ("SKU-3003", 3, Decimal("12.50")),
)
CHUNK = 500


def orders_create(count: int) -> list[int]:
    """`count` pending orders with BENCH_LINES, created in bulk (the same rows `order_create`
    writes, without its per-order round trips: setting up is not what is measured)."""
    ids: list[int] = []
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        with transaction.atomic():
            orders = Order.objects.bulk_create(Order(customer_id=f"bench-{start + i}") for i in range(size))
            OrderLine.objects.bulk_create(
                OrderLine(order=order, sku=sku, quantity=quantity, unit_price=price)
                for order in orders
                for sku, quantity, price in BENCH_LINES
            )
        ids.extend(order.pk for order in orders)
    if any(pk is None for pk in ids):
        raise RuntimeError("the database did not return the ids of bulk-created orders")
    return ids


def bench_snapshot(order_id: int, now) -> dict:
    """What `orders.events.order_payload_v1` gives for a confirmed bench order."""
    moment = now.isoformat().replace("+00:00", "Z")
    total = sum(quantity * price for _, quantity, price in BENCH_LINES)
    return {
        "id": order_id,
        "customer_id": f"bench-{order_id}",
        "status": "confirmed",
        "total_amount": f"{total:.2f}",
        "lines": [
            {"sku": sku, "quantity": quantity, "unit_price": f"{price:.2f}"} for sku, quantity, price in BENCH_LINES
        ],
        "created_at": moment,
        "confirmed_at": moment,
    }


def event_payloads(count: int, *, first_id: int = 1_000_000) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of `count` distinct events, byte for byte what the outbox would send
    for bench orders (compact JSON, key = order id)."""
    now = timezone.now()
    pairs = []
    for order_id in range(first_id, first_id + count):
        event = OrderExportRequested(order_id=order_id, order=bench_snapshot(order_id, now))
        value = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
        pairs.append((event.key.encode(), value))
    return pairs


def payload_file_write(*, path: str, count: int = 1000) -> dict:
    """Event payloads, one per line, for ProducerPerformance's --payload-file."""
    values = [value for _, value in event_payloads(count)]
    random.shuffle(values)
    Path(path).write_bytes(b"\n".join(values) + b"\n")
    return {"payloads": len(values), "event_bytes": round(sum(map(len, values)) / len(values))}
