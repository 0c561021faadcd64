"""Helpers the fault-injection, scaling and parallel-consumer tests share: making orders, draining
the outbox, and counting at the platform stub what arrived. (Their figures are reported with
`tests.support.figures.report_figures`.)"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from kafka_bridge import producer
from kafka_bridge.models import OutboxEvent
from kafka_bridge.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.services import LineInput, order_confirm, order_create
from tests.support.helpers import wait_until


def orders_create(count: int) -> list[int]:
    return [
        order_create(
            customer_id=f"c-{n}", lines=[LineInput(sku="SKU-1", quantity=1 + n % 3, unit_price=Decimal("9.99"))]
        ).pk
        for n in range(count)
    ]


def orders_confirmed_on_the_topic(count: int) -> list[int]:
    """`count` new orders confirmed and their events on the topic, sent by a relay of this
    process: a backlog for a consumer started afterwards. The test turns the on-commit send off
    first (`KAFKA_PUBLISH_ON_COMMIT`), so that every event is sent by the relay, once."""
    order_ids = orders_create(count)
    for order_id in order_ids:
        order_confirm(order_id=order_id)
    outbox_backlog_publish()
    return order_ids


def unsent_rows():
    return OutboxEvent.objects.filter(sent_at__isnull=True)


def outbox_backlog_publish(*, timeout: float = 60) -> int:
    """Send every unsent outbox row with a relay of this process (no grace), as
    `run_outbox_relay` would: what a fast-path send left behind on a busy machine. Returns how
    many it sent."""
    # Rows the fast path handed to the producer are marked sent when their acks are written; a
    # relay with no grace must not take them for unsent before that (in production the grace
    # outlasts the producer's delivery timeout).
    fast_path = producer._request_publisher
    if fast_path is not None:
        fast_path.flush(timeout=timeout)
    relay = OutboxRelay(stop=StopFlag(), grace=0)

    def all_sent() -> bool:
        relay.run_once()
        return not unsent_rows().exists()

    try:
        wait_until(all_sent, timeout=timeout, message=lambda: f"{unsent_rows().count()} outbox row(s) still unsent")
    finally:
        relay.publisher.close()
    return relay.total_sent


def event_ids_by_order() -> dict[int, str]:
    return {int(key): str(event_id) for key, event_id in OutboxEvent.objects.values_list("key", "event_id")}


def platform_tally(stub, order_ids: list[int], event_ids: dict[int, str] | None = None) -> dict[str, object]:
    """What the platform saw, per confirmed order: missing, accepted twice, accepted though never
    confirmed, or sent with another Idempotency-Key than the order's one event id."""
    event_ids = event_ids if event_ids is not None else event_ids_by_order()
    accepted = Counter(stub.exported_order_ids())
    keys = stub.keys_by_order()
    with stub.lock:
        statuses = Counter(call.status for call in stub.calls)
        calls_per_order = Counter(call.order_id for call in stub.calls)
    return {
        "missing": sorted(set(order_ids) - set(accepted)),
        "doubled": sorted(order_id for order_id, n in accepted.items() if n > 1),
        "unexpected": sorted(set(accepted) - set(order_ids)),
        "wrong_keys": sorted(order_id for order_id in order_ids if keys.get(order_id, set()) != {event_ids[order_id]}),
        "statuses": statuses,
        "calls_per_order": calls_per_order,
    }
