"""Scaling out: several `run_export_consumer` processes in one group share the topic's
partitions, and when one leaves its partition moves to the others, with nothing lost or
doubled at the platform.

The consumers are real processes (what an operator runs), each with a client id of its own so
that the group's members can be told apart: the broker's view of who owns what is read with
`kafka_status` and must agree with what each consumer logged ("partitions assigned: ...").
Orders are counted at the platform stub: each confirmed order accepted once, under its one
event id. Each test reports one `faults:` line with its counts (`report_figures`; `pytest -rP`
shows it).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from django.core.management import call_command

from kafka_bridge.cluster.status import kafka_status
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import reset_request_publisher
from orders.services import order_confirm
from tests.support.faults import (
    Confirmer,
    assert_committed_to_the_end,
    assert_exported_once,
    orders_create,
    outbox_backlog_publish,
    platform_figures,
    platform_tally,
    records_per_event,
    wait_until_exported,
)
from tests.support.figures import report_figures
from tests.support.helpers import wait_until
from tests.support.processes import ManagedProcess, export_consumer_env
from tests.support.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

PARTITIONS = 3
# A member that stops heartbeating is noticed within the broker's minimum session; members
# learn of a rebalance at their next heartbeat.
QUICK_REBALANCE = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

EXPORT_LINE = re.compile(r"export: order (\d+) event \S+ partition (\d+) offset \d+: (\w+)$", re.M)
ASSIGNED_LINE = re.compile(r"partitions assigned: (.*)$", re.M)


# --- consumers as processes -------------------------------------------------------------------


class ConsumerProcess(ManagedProcess):
    """`manage.py run_export_consumer` with its own client id."""

    def __init__(self, name: str, env: dict[str, str]):
        options = {**json.loads(env.get("KAFKA_CONSUMER_OPTIONS", "{}")), "client_id": name}
        super().__init__("run_export_consumer", {**env, "KAFKA_CONSUMER_OPTIONS": json.dumps(options)}, name=name)

    def exports(self) -> list[tuple[int, int, str]]:
        """(order id, partition, outcome) of each record this consumer handled."""
        return [(int(o), int(p), outcome) for o, p, outcome in EXPORT_LINE.findall(self.output())]

    def assigned(self) -> list[int] | None:
        """The partitions this consumer last said it was given; None before its first assignment."""
        found = ASSIGNED_LINE.findall(self.output())
        if not found:
            return None
        return sorted(int(p) for p in re.findall(r"\[(\d+)\]", found[-1]))


@pytest.fixture
def start_consumer(export_topics, export_group, platform_stub) -> Iterator[Callable[[str], ConsumerProcess]]:
    """`start_consumer(name)` runs a consumer of this test's topic and group, exporting to the
    platform stub; whatever still runs after the test is killed."""
    env = export_consumer_env(
        export_topics,
        export_group,
        platform_stub.url,
        KAFKA_CONSUMER_OPTIONS=json.dumps(QUICK_REBALANCE),
        # The assertions read the consumers' plain log lines, the line per export (DEBUG) included.
        LOG_FORMAT="plain",
        LOG_LEVELS="root=INFO,exports.consumer=DEBUG",
    )
    started: list[ConsumerProcess] = []

    def start(name: str) -> ConsumerProcess:
        consumer = ConsumerProcess(name, env)
        started.append(consumer)
        return consumer

    try:
        yield start
    finally:
        for consumer in started:
            consumer.stop_if_running()


# --- who owns what ----------------------------------------------------------------------------


@dataclass
class GroupView:
    state: str
    owners: dict[str, list[int]]  # client id -> partitions of the topic, as the broker assigned them

    def __str__(self) -> str:
        return f"{self.state} {self.owners}"


def group_view(group: str, topic: str) -> GroupView:
    [described] = kafka_status(topics=[topic], group_ids=[group])["consumer_groups"]
    return GroupView(
        state=described["state"],
        owners={
            member["client_id"]: sorted(a["partition"] for a in member["assignments"] if a["topic"] == topic)
            for member in described["members"]
        },
    )


def wait_for_assignment(
    group: str, topic: str, consumers: list[ConsumerProcess], *, partitions: int = PARTITIONS, timeout: float = 30
) -> GroupView:
    """Until the group is Stable with exactly `consumers` as members, the broker's assignment
    covers every partition once, and each consumer's own log agrees with it."""
    last: list[GroupView] = []

    def settled() -> GroupView | None:
        view = group_view(group, topic)
        last[:] = [view]
        owned = sorted(p for parts in view.owners.values() for p in parts)
        if view.state != "Stable" or set(view.owners) != {c.name for c in consumers}:
            return None
        if owned != list(range(partitions)):
            return None
        if any(c.assigned() != view.owners[c.name] for c in consumers):
            return None
        return view

    return wait_until(
        settled,
        timeout=timeout,
        interval=0.2,
        message=lambda: (
            f"the group did not settle on {[c.name for c in consumers]}: last seen {last[0] if last else '-'}; "
            + "; ".join(f"{c.name} said it has {c.assigned()}" for c in consumers)
        ),
    )


# --- the tests --------------------------------------------------------------------------------


def test_three_consumers_own_one_partition_each_and_a_fourth_sits_idle(
    export_topics, export_group, start_consumer, platform_stub, fresh_publisher, kafka_admin
):
    topic, _ = export_topics
    consumers = [start_consumer(f"scaling-{n}") for n in (1, 2, 3)]
    three = wait_for_assignment(export_group, topic, consumers, timeout=45)
    assert sorted(map(len, three.owners.values())) == [1, 1, 1], three

    consumers.append(start_consumer("scaling-4"))
    four = wait_for_assignment(export_group, topic, consumers)
    # More consumers than partitions: three own one each, the one left over owns none.
    assert sorted(map(len, four.owners.values())) == [0, 1, 1, 1], four
    [idle] = [c for c in consumers if not four.owners[c.name]]
    assert "partitions assigned: none" in idle.output()

    orders = 90
    order_ids = orders_create(orders)
    for order_id in order_ids:
        order_confirm(order_id=order_id)
    relayed = outbox_backlog_publish()
    wait_until(
        lambda: len(platform_stub.exported_order_ids()) >= orders,
        timeout=45,
        message=lambda: f"the platform has {len(platform_stub.exported_order_ids())} of {orders} orders",
    )
    wait_until_exported(orders, timeout=30)

    # Each consumer exported only what its own partition holds; the idle one nothing.
    partition_of = {int(key): partition for key, partition in OutboxEvent.objects.values_list("key", "partition")}
    for consumer in consumers:
        handled = consumer.exports()
        assert {p for _, p, _ in handled} <= set(four.owners[consumer.name]), (consumer.name, four.owners)
        assert all(partition_of[o] == p for o, p, _ in handled)
    assert idle.exports() == []
    busy = [c for c in consumers if c is not idle]
    assert all(c.exports() for c in busy), "a partition got no orders: the test proves less than it says"
    assert Counter(o for c in consumers for o, _, outcome in c.exports() if outcome == "exported") == Counter(order_ids)

    stops = {c.name: c.terminate() for c in consumers}
    for consumer in consumers:
        assert stops[consumer.name][0] == 0, consumer.output()[-3000:]
    assert "stopped after 0 record(s)" in idle.output()

    tally = platform_tally(platform_stub, order_ids)
    records = read_records(topic, expected=orders, timeout=30)
    report_figures(
        "four consumers, three partitions",
        assignment=dict(sorted(four.owners.items())),
        idle=idle.name,
        events_flowed=len(records),
        relayed_after_fast_path=relayed,
        exported_per_consumer={c.name: len(c.exports()) for c in consumers},
        **platform_figures(tally, repeats=False),
    )
    assert_exported_once(tally, orders)
    assert len(records) == orders
    assert_committed_to_the_end(kafka_admin, export_group, topic)


def test_when_a_consumer_leaves_its_partition_moves_to_the_others_and_nothing_is_lost_or_doubled(
    settings, export_topics, export_group, start_consumer, platform_stub, fresh_publisher, kafka_admin
):
    topic, _ = export_topics
    # The fast path waits longer for its ack than by default, so a busy 2-core machine leaves
    # (almost) nothing for the relay: the events really flow through the rebalance.
    settings.KAFKA_PUBLISH_TIMEOUT_MS = 10_000
    # Enough orders that confirms still flow after the group settles (about 3 s): 450 were all
    # confirmed and exported within the rebalance once the fast path and the consumer got faster.
    orders = 1200
    order_ids = orders_create(orders)
    consumers = [start_consumer(f"scaling-{n}") for n in (1, 2, 3)]
    before = wait_for_assignment(export_group, topic, consumers, timeout=45)

    flow = Confirmer(order_ids, platform_stub=platform_stub, ahead=30)
    flow.start()
    try:
        exported = lambda: len(platform_stub.exported_order_ids())  # noqa: E731
        wait_until(lambda: exported() >= 150, timeout=45, message=lambda: f"{exported()} exported before the leave")

        # The consumer owning partition 1 leaves the way an operator stops it.
        leaver = next(c for c in consumers if before.owners[c.name] == [1])
        survivors = [c for c in consumers if c is not leaver]
        confirmed_at_leave, exported_at_leave = flow.confirmed, exported()
        leave_code, leave_seconds = leaver.terminate()
        assert leave_code == 0, leaver.output()[-3000:]
        assert f"left group {export_group}" in leaver.output()
        rebalance_started = time.monotonic()
        after = wait_for_assignment(export_group, topic, survivors)
        rebalance_seconds = time.monotonic() - rebalance_started + leave_seconds
        confirmed_during = flow.confirmed - confirmed_at_leave
        exported_at_settled = exported()

        # Two consumers, three partitions: the leaver's partition went to one of them.
        assert sorted(map(len, after.owners.values())) == [1, 2], after
        [new_owner] = [c for c in survivors if 1 in after.owners[c.name]]
        wait_until(
            lambda: (
                any(p == 1 for _, p, _ in new_owner.exports()) and exported() >= min(orders, exported_at_settled + 100)
            ),
            timeout=45,
            message=lambda: f"{new_owner.name} exported nothing from partition 1 ({exported()} exported)",
        )
        flow.finish()
    finally:
        flow.stop_and_join()

    relayed = outbox_backlog_publish()
    wait_until_exported(orders, timeout=45)
    stops = [c.terminate() for c in survivors]
    for consumer, (code, _) in zip(survivors, stops):
        assert code == 0, consumer.output()[-3000:]

    tally = platform_tally(platform_stub, order_ids)
    records = read_records(topic, expected=orders, timeout=30)
    per_event = records_per_event(records)
    handled = [entry for c in consumers for entry in c.exports()]
    report_figures(
        "one of three leaves",
        events_flowed=len(records),
        confirmed_before_leave=confirmed_at_leave,
        confirmed_during_rebalance=confirmed_during,
        confirmed_after=orders - confirmed_at_leave - confirmed_during,
        exported_before_leave=exported_at_leave,
        exported_after_settled=orders - exported_at_settled,
        relayed_after_fast_path=relayed,
        rebalance_seconds=round(rebalance_seconds, 1),
        assignment_before=before.owners,
        assignment_after=after.owners,
        doubled_on_topic=sum(n - 1 for n in per_event.values()),
        **platform_figures(tally),
        redeliveries_deduplicated_locally=sum(1 for *_, outcome in handled if outcome == "duplicate"),
    )
    assert_exported_once(tally, orders)
    assert confirmed_at_leave > 0 and confirmed_during > 0 and exported_at_settled < orders, (
        "events must flow before, during and after the rebalance"
    )
    # The leaver only ever handled its own partition; the new owner took it over.
    assert {p for _, p, _ in leaver.exports()} == {1}
    assert {o for o, p, _ in new_owner.exports() if p == 1}
    assert_committed_to_the_end(kafka_admin, export_group, topic)


def test_growing_the_topic_gives_an_idle_consumer_a_partition_at_the_next_rebalance(
    settings, export_topics, export_group, start_consumer, platform_stub, fresh_publisher, kafka_admin
):
    topic, dlt = export_topics
    consumers = [start_consumer(f"scaling-{n}") for n in (1, 2, 3, 4)]
    before = wait_for_assignment(export_group, topic, consumers, timeout=45)
    [idle] = [c for c in consumers if not before.owners[c.name]]

    settings.ORDER_EXPORT_PARTITIONS = 4
    out = io.StringIO()
    call_command("ensure_topics", stdout=out)
    assert out.getvalue().splitlines() == [
        f"{topic}: grown from 3 to 4 partition(s)",
        f"{dlt}: grown from 3 to 4 partition(s)",
    ]
    # Running members learn of the new partition only with their next metadata refresh
    # (kafka-python: every 5 minutes); any rebalance picks it up at once. A rolling restart of
    # one consumer (here the idle one) is such a rebalance.
    code, _ = idle.terminate()
    assert code == 0, idle.output()[-3000:]
    consumers = [c for c in consumers if c is not idle] + [start_consumer(idle.name)]
    after = wait_for_assignment(export_group, topic, consumers, partitions=4)
    assert sorted(map(len, after.owners.values())) == [1, 1, 1, 1], after

    # The web process's producer, too, sees the 4th partition after its next metadata refresh;
    # a new one sees it at once.
    reset_request_publisher()
    orders = 80
    order_ids = orders_create(orders)
    for order_id in order_ids:
        order_confirm(order_id=order_id)
    relayed = outbox_backlog_publish()
    wait_until_exported(orders, timeout=45)
    [owner_of_3] = [c for c in consumers if after.owners[c.name] == [3]]
    on_3 = OutboxEvent.objects.filter(partition=3).count()
    stops = [c.terminate() for c in consumers]
    for consumer, (code, _) in zip(consumers, stops):
        assert code == 0, consumer.output()[-3000:]

    tally = platform_tally(platform_stub, order_ids)
    report_figures(
        "grown from 3 to 4 partitions",
        assignment_before=before.owners,
        assignment_after=after.owners,
        events_flowed=orders,
        events_on_new_partition=on_3,
        relayed_after_fast_path=relayed,
        **platform_figures(tally, calls=False, repeats=False),
    )
    assert_exported_once(tally, orders)
    assert on_3 > 0, "no order landed on the new partition: the test proves less than it says"
    assert sorted(o for o, p, _ in owner_of_3.exports() if p == 3) == sorted(
        int(key) for key in OutboxEvent.objects.filter(partition=3).values_list("key", flat=True)
    )
    assert_committed_to_the_end(kafka_admin, export_group, topic)
