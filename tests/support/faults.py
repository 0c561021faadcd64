"""Helpers the fault-injection, scaling and parallel-consumer tests share: making and confirming
orders, draining the outbox, counting what arrived (at the platform stub, on the topic, in the
group's commits) and checking that nothing was lost or doubled. (Their figures are reported with
`tests.support.figures.report_figures`; `platform_figures` gives the platform's.)"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

from django.db import connections

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox import publisher as producer
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.services import LineInput, order_confirm, order_create
from tests.support.helpers import wait_until
from tests.support.records import committed_offsets, end_offsets


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


class Confirmer(threading.Thread):
    """Confirms orders one by one while the consumers run, so events really flow: each confirm
    commits and hands its event to the on-commit fast path. With `ahead`, it stays at most that
    many events in front of `platform_stub`: events keep flowing before, during and after a
    rebalance, and the ones confirmed while the group rebalances wait on the topic for the new
    owners."""

    def __init__(self, order_ids: list[int], *, platform_stub=None, ahead: int | None = None):
        super().__init__(name="confirmer", daemon=True)
        self.order_ids = order_ids
        self.platform_stub = platform_stub
        self.ahead = ahead
        self.confirmed = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def in_flight(self) -> int:
        unsent = OutboxEvent.objects.filter(sent_at__isnull=True).count()
        return self.confirmed - len(self.platform_stub.exported_order_ids()) - unsent

    def run(self) -> None:
        try:
            for order_id in self.order_ids:
                if self.ahead is not None:
                    wait_until(
                        lambda: self.stop.is_set() or self.in_flight() < self.ahead,
                        timeout=60,
                        interval=0.01,
                        message=lambda: f"the platform stopped taking orders ({self.in_flight()} in flight)",
                    )
                if self.stop.is_set():
                    return
                order_confirm(order_id=order_id)
                self.confirmed += 1
        except BaseException as exc:  # surfaced by finish()
            self.error = exc
        finally:
            connections.close_all()

    def finish(self, timeout: float = 60) -> None:
        """Wait for the last confirm; fail the test if confirming stalled or failed."""
        self.join(timeout=timeout)
        assert not self.is_alive(), f"confirming stalled after {self.confirmed} orders"
        assert self.error is None, f"confirming failed: {self.error!r}"

    def stop_and_join(self) -> None:
        """Stop confirming (after the confirm under way) and wait up to 30 s for the thread."""
        self.stop.set()
        self.join(timeout=30)


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


def platform_figures(tally: dict[str, object], *, calls: bool = True, repeats: bool = True) -> dict[str, int]:
    """The platform's figures for `report_figures`, from `platform_tally`: orders lost and
    accepted twice; with `calls`, the calls it got; with `repeats`, those it answered 409 (repeats
    it deduplicated)."""
    figures = {"lost": len(tally["missing"]), "doubled_at_platform": len(tally["doubled"])}
    if calls:
        figures["platform_calls"] = sum(tally["statuses"].values())
    if repeats:
        figures["repeated_calls_409"] = tally["statuses"][409]
    return figures


def assert_exported_once(tally: dict[str, object], count: int) -> None:
    """Each of the `count` confirmed orders accepted by the platform once, under its own event id,
    and nothing else accepted; the platform's answers only 201s and 409s (repeats)."""
    assert tally["missing"] == [], f"{len(tally['missing'])} order(s) never reached the platform"
    assert tally["doubled"] == [], f"order(s) exported twice: {tally['doubled'][:20]}"
    assert tally["unexpected"] == []
    assert tally["wrong_keys"] == [], f"order(s) sent with another Idempotency-Key: {tally['wrong_keys'][:20]}"
    assert set(tally["statuses"]) <= {201, 409}, tally["statuses"]
    assert tally["statuses"][201] == count


def records_per_event(records) -> Counter:
    """How many records of the topic carry each event id (header `event_id`)."""
    return Counter(dict(record.headers)["event_id"].decode() for record in records)


def exported_count() -> int:
    return OrderExport.objects.filter(status=OrderExport.Status.EXPORTED).count()


def wait_until_exported(count: int, *, timeout: float, said: Callable[[], str] | None = None) -> None:
    """Until `count` exports are recorded as exported; on timeout the message gives how many are,
    and then what `said` returns (e.g. a consumer's last output)."""
    wait_until(
        lambda: exported_count() == count,
        timeout=timeout,
        message=lambda: f"{exported_count()} of {count} exported" + (f"; {said()}" if said else ""),
    )


def assert_committed_to_the_end(kafka_admin, group: str, topic: str) -> None:
    """`group` committed the end offset of every partition of `topic` that has records."""
    ends = end_offsets(topic)
    assert committed_offsets(kafka_admin, group, topic) == {p: end for p, end in ends.items() if end > 0}
