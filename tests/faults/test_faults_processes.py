"""Fault injection on real processes: `run_export_consumer` SIGKILLed while events flow with 64
calls in flight, and with 256 against a slow platform, SIGTERMed during a slow platform call and
with 32 calls in flight, PostgreSQL restarted under it, and two `run_outbox_relay` processes over
one backlog.

What is counted, and where: the platform stub counts exports (one accepted Idempotency-Key per
order, none missing) and the repeats it deduplicated (409); the topic counts events sent (one
record per outbox row, none missing). Each test reports one `faults:` line (`report_figures`) with
how many events flowed, were lost and were doubled (`pytest -rP` shows it).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from orders.services import order_confirm
from tests.support.faults import (
    Confirmer,
    assert_committed_to_the_end,
    assert_exported_once,
    orders_confirmed_on_the_topic,
    orders_create,
    outbox_backlog_publish,
    platform_figures,
    platform_tally,
    records_per_event,
    wait_until_exported,
)
from tests.support.figures import report_figures
from tests.support.helpers import wait_until
from tests.support.processes import ManagedProcess, command_env, export_consumer_env
from tests.support.records import end_offsets, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

ORDERS = 1000
# The SIGKILL tests: enough orders that each kill lands among the calls in flight.
KILLED_ORDERS = 2000


# --- processes --------------------------------------------------------------------------------


@pytest.fixture
def consumer_env(export_topics, export_group, platform_stub) -> dict[str, str]:
    return export_consumer_env(export_topics, export_group, platform_stub.url)


@pytest.fixture
def sigkilled_run(export_topics, export_group, consumer_env, fresh_publisher, platform_stub, kafka_admin, spawn):
    """`sigkilled_run(...)` confirms KILLED_ORDERS orders one by one (`Confirmer`) while
    `run_export_consumer` exports them with `concurrency` calls at once to a platform answering
    after `delay` seconds. The consumer is SIGKILLed once the platform has accepted each of
    `kills_at` orders (and has at least `kill_among` calls in flight), a new one started in its
    place each time; the last drains the rest and is stopped with SIGTERM. Then every order must
    have been exported once under its own Idempotency-Key and sent once on the topic, nothing
    dead-lettered, the group committed to the end. Reports the figures under `name`.

    The confirms alone give a slow platform only a few dozen calls at once (a few hundred a
    second): with `confirmed_first`, the first consumer starts once that many are confirmed, a
    backlog to fill its calls; each restart waits out the killed member's session, which builds
    one for the next."""
    topic, dlt = export_topics

    def run(
        *,
        name: str,
        concurrency: int,
        delay: float,
        kills_at: tuple[int, ...],
        kill_among: int = 0,
        confirmed_first: int = 0,
    ) -> None:
        platform_stub.delay = delay
        # A SIGKILLed member stays in the group until its session runs out, and its partitions
        # with it: the broker's minimum session keeps each restart's wait short.
        env = {
            **consumer_env,
            "TEST_SETTINGS": json.dumps({"EXPORT_CONCURRENCY": concurrency}),
            "KAFKA_CONSUMER_OPTIONS": '{"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}',
        }
        order_ids = orders_create(KILLED_ORDERS)

        def accepted() -> int:
            return len(platform_stub.exported_order_ids())

        def kill_due(threshold: int) -> tuple[int] | None:
            """(calls in flight) once the platform has accepted `threshold` orders and has at
            least `kill_among` calls in flight: a tuple, true even with none in flight."""
            in_flight = platform_stub.in_flight
            return (in_flight,) if in_flight >= kill_among and accepted() >= threshold else None

        confirmer = Confirmer(order_ids)
        consumers: list[ManagedProcess] = []
        killed_at: list[int] = []
        in_flight_at_kills: list[int] = []
        confirmer.start()
        try:
            wait_until(
                lambda: confirmer.confirmed >= confirmed_first or not confirmer.is_alive(),
                timeout=60,
                message=lambda: f"{confirmer.confirmed} of {confirmed_first} orders confirmed",
            )
            consumers.append(spawn("run_export_consumer", env))
            for threshold in kills_at:
                # wait_until calls these before the loop moves on: they see this round's values.
                # Polled often: a slow platform's calls come and go in rounds, each in flight for
                # `delay`.
                (in_flight,) = wait_until(
                    lambda: kill_due(threshold),  # noqa: B023
                    timeout=60,
                    interval=0.01,
                    message=lambda: (
                        f"the platform has {accepted()} of {threshold} orders and {platform_stub.in_flight} "  # noqa: B023
                        f"call(s) in flight ({confirmer.confirmed} confirmed); the consumer said:\n"
                        f"{consumers[-1].output()[-3000:]}"
                    ),
                )
                consumers[-1].kill()
                killed_at.append(accepted())
                in_flight_at_kills.append(in_flight)
                # The calls the kill cut off are answered (to no one) before the next consumer
                # starts, so that its kill counts only calls of its own.
                wait_until(
                    lambda: platform_stub.in_flight == 0, timeout=10, message="the platform kept calls in flight"
                )
                consumers.append(spawn("run_export_consumer", env))
            confirmer.finish()
        finally:
            confirmer.stop_and_join()
        consumer = consumers[-1]

        relayed = outbox_backlog_publish()
        wait_until_exported(
            KILLED_ORDERS, timeout=90, said=lambda: f"the last consumer said:\n{consumer.output()[-3000:]}"
        )
        exit_code, stop_seconds = consumer.terminate()

        output = consumer.output()
        assert exit_code == 0, output
        assert f"left group {export_group}" in output
        event_ids = {int(key): str(event_id) for key, event_id in OutboxEvent.objects.values_list("key", "event_id")}
        tally = platform_tally(platform_stub, order_ids, event_ids)
        records = read_records(topic, expected=KILLED_ORDERS, timeout=60)
        per_event = records_per_event(records)
        # A redelivery of a record whose export had committed is dropped before any platform
        # call; one killed between the platform's answer and the local commit reaches the platform
        # again, which answers 409.
        duplicate_line = re.compile(r"export: order \d+ event \S+ partition \d+ offset \d+: duplicate$", re.M)
        redelivered_locally = sum(len(duplicate_line.findall(process.output())) for process in consumers)
        report_figures(
            name,
            events_flowed=len(records),
            doubled_on_topic=sum(n - 1 for n in per_event.values()),
            relayed_after_fast_path=relayed,
            **platform_figures(tally),
            redeliveries_deduplicated_locally=redelivered_locally,
            kills=len(killed_at),
            most_calls_in_flight_at_platform=platform_stub.max_in_flight,
            calls_in_flight_at_kills=in_flight_at_kills,
            killed_at_accepted=killed_at,
            consumer_runs=len(consumers),
            sigterm_exit_seconds=round(stop_seconds, 1),
        )

        assert len(killed_at) == len(kills_at) and all(n < KILLED_ORDERS for n in killed_at), killed_at
        assert_exported_once(tally, KILLED_ORDERS)
        assert set(per_event) == set(event_ids.values())
        assert OrderExport.objects.filter(status=OrderExport.Status.EXPORTED).count() == KILLED_ORDERS
        assert not OrderExport.objects.exclude(status=OrderExport.Status.EXPORTED).exists()
        assert end_offsets(dlt) == {0: 0, 1: 0, 2: 0}
        assert_committed_to_the_end(kafka_admin, export_group, topic)

    return run


# --- the tests --------------------------------------------------------------------------------


def test_consumer_sigkilled_three_times_with_64_calls_in_flight_every_order_exported_once(sigkilled_run):
    # A platform with a real platform's latency, so that each kill catches calls in flight.
    sigkilled_run(
        name="consumer SIGKILLed with 64 calls in flight", concurrency=64, delay=0.02, kills_at=(200, 700, 1300)
    )


def test_consumer_sigkilled_twice_with_256_calls_in_flight_against_a_100_ms_platform_every_order_exported_once(
    sigkilled_run, platform_stub
):
    sigkilled_run(
        name="consumer SIGKILLed with 256 calls in flight against a 100 ms platform",
        concurrency=256,
        delay=0.1,
        # A consumer with a backlog has rounds of 256 calls answered every 100 ms or so, about
        # 2,000 orders a second: the first kill lands in the first consumer's second round (or its
        # third), the second among the second consumer's first rounds, 1,200 orders from the end.
        kills_at=(200, 800),
        # Each kill among far more calls than the 64 of the test above.
        kill_among=129,
        # The first consumer starts with three rounds of calls waiting: 800 orders confirmed
        # first (2 to 5 s), and a few more during its start-up.
        confirmed_first=800,
    )
    assert platform_stub.max_in_flight > 128


def test_sigterm_during_a_slow_platform_call_completes_and_commits_the_export(
    export_topics, export_group, consumer_env, fresh_publisher, platform_stub, kafka_admin, spawn
):
    topic, _ = export_topics
    platform_stub.delay = 3
    [order_id] = orders_create(1)
    order_confirm(order_id=order_id)
    outbox_backlog_publish()
    row = OutboxEvent.objects.get(key=str(order_id))

    # The line per export is at DEBUG.
    consumer = spawn("run_export_consumer", {**consumer_env, "LOG_LEVELS": "exports.consumer=DEBUG"})
    wait_until(
        platform_stub.call_arrived.is_set,
        timeout=60,
        message=lambda: f"no call reached the platform; the consumer said:\n{consumer.output()}",
    )
    assert platform_stub.call_count() == 0, "the call was meant to be in flight, not answered"
    exit_code, stop_seconds = consumer.terminate(timeout=15)

    output = consumer.output()
    assert exit_code == 0, output
    assert "received SIGTERM" in output
    assert (
        f"export: order {order_id} event {row.event_id} partition {row.partition} offset {row.offset}: exported"
        in output
    )
    assert f"left group {export_group}" in output
    assert platform_stub.exported_order_ids() == [order_id]
    export = OrderExport.objects.get(order_id=order_id)
    assert (export.status, export.attempts, str(export.event_id)) == ("exported", 1, str(row.event_id))
    assert_committed_to_the_end(kafka_admin, export_group, topic)

    # A new member of the group starts from the commit: nothing to redeliver.
    successor = spawn("run_export_consumer", {**consumer_env, "TEST_SETTINGS": '{"KAFKA_CONSUMER_STATS_INTERVAL": 1}'})

    def polled_twice_since_assignment() -> bool:
        _, assigned, after = successor.output().partition("partitions assigned:")
        return bool(assigned) and after.count(" since start") >= 2

    wait_until(
        polled_twice_since_assignment,
        timeout=60,
        message=lambda: f"the second consumer did not get its partitions; it said:\n{successor.output()}",
    )
    successor_exit, _ = successor.terminate(timeout=15)
    successor_output = successor.output()
    assert successor_exit == 0, successor_output
    assert "stopped after 0 record(s)" in successor_output, successor_output
    with platform_stub.lock:
        calls = [(call.order_id, call.status) for call in platform_stub.calls]
    report_figures(
        "SIGTERM during a slow call",
        events_flowed=1,
        lost=0 if platform_stub.exported_order_ids() == [order_id] else 1,
        doubled=len(calls) - 1,
        sigterm_exit_seconds=round(stop_seconds, 1),
        redelivered_to_successor=0 if "stopped after 0 record(s)" in successor_output else "some",
    )
    assert calls == [(order_id, 201)], calls


def test_sigterm_with_32_calls_in_flight_exits_0_within_15_s_after_recording_them_and_doubles_nothing(
    settings, export_topics, export_group, consumer_env, platform_stub, kafka_admin, spawn
):
    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    platform_stub.delay = 3
    order_ids = orders_confirmed_on_the_topic(100)

    consumer = spawn("run_export_consumer", {**consumer_env, "TEST_SETTINGS": '{"EXPORT_CONCURRENCY": 32}'})
    wait_until(
        lambda: platform_stub.in_flight == 32,
        timeout=60,
        message=lambda: f"{platform_stub.in_flight} call(s) in flight; the consumer said:\n{consumer.output()[-3000:]}",
    )
    exit_code, stop_seconds = consumer.terminate(timeout=15)
    output = consumer.output()
    assert exit_code == 0, output
    assert f"left group {export_group}" in output
    # The 32 calls were answered, and recorded before the consumer left.
    answered = platform_stub.exported_order_ids()
    assert len(answered) == 32
    exported = set(OrderExport.objects.filter(status=OrderExport.Status.EXPORTED).values_list("order_id", flat=True))
    assert exported == set(answered)

    platform_stub.delay = 0
    successor = spawn("run_export_consumer", consumer_env)
    wait_until_exported(len(order_ids), timeout=60, said=lambda: f"the successor said:\n{successor.output()[-3000:]}")
    successor.terminate(timeout=15)
    tally = platform_tally(platform_stub, order_ids)
    report_figures(
        "SIGTERM with 32 calls in flight",
        events_flowed=len(order_ids),
        in_flight_at_sigterm=32,
        lost=len(tally["missing"]),
        doubled=len(tally["doubled"]),
        repeated_calls_409=tally["statuses"][409],
        sigterm_exit_seconds=round(stop_seconds, 1),
    )
    assert tally["missing"] == [] and tally["doubled"] == [] and tally["wrong_keys"] == []
    # Nothing the first consumer recorded was sent again.
    assert tally["statuses"] == Counter({201: len(order_ids)}), tally["statuses"]
    assert_committed_to_the_end(kafka_admin, export_group, topic)


# Restarts the server every test database lives on: run alone (`make test` runs the serial
# tests first, then the rest in parallel).
@pytest.mark.serial
@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="restarts the project's PostgreSQL"
)
def test_postgresql_restarted_under_a_running_consumer_which_keeps_running_and_loses_nothing(
    settings, export_topics, export_group, consumer_env, platform_stub, spawn
):
    import subprocess

    from config.env import BASE_DIR

    settings.KAFKA_PUBLISH_ON_COMMIT = False
    # Slow enough that the restart lands in the middle of the drain.
    platform_stub.delay = 0.05
    order_ids = orders_confirmed_on_the_topic(300)
    exported = OrderExport.objects.filter(status=OrderExport.Status.EXPORTED)

    consumer = spawn("run_export_consumer", {**consumer_env, "TEST_SETTINGS": '{"EXPORT_CONCURRENCY": 4}'})
    wait_until(lambda: exported.count() >= 30, timeout=60, message=lambda: consumer.output()[-3000:])
    postgres = BASE_DIR / "scripts" / "postgres.sh"
    connections.close_all()
    subprocess.run([postgres, "down"], check=True, capture_output=True)
    try:
        wait_until(
            lambda: "unexpected error" in consumer.output(),
            timeout=30,
            message=lambda: f"the consumer did not notice; it said:\n{consumer.output()[-3000:]}",
        )
        calls_while_down = platform_stub.call_count()
    finally:
        subprocess.run([postgres, "up"], check=True, capture_output=True)
    wait_until(
        lambda: exported.count() == len(order_ids),
        timeout=120,
        message=lambda: (
            f"{exported.count()} of {len(order_ids)} exported; the consumer said:\n{consumer.output()[-3000:]}"
        ),
    )
    assert consumer.process.poll() is None, "the consumer exited"
    exit_code, _ = consumer.terminate(timeout=15)
    tally = platform_tally(platform_stub, order_ids)
    report_figures(
        "PostgreSQL restarted under the consumer",
        events_flowed=len(order_ids),
        lost=len(tally["missing"]),
        doubled=len(tally["doubled"]),
        platform_calls_before_restart=calls_while_down,
        repeated_calls_409=tally["statuses"][409],
    )
    assert exit_code == 0
    assert tally["missing"] == [] and tally["doubled"] == [] and tally["wrong_keys"] == []


def test_two_relays_over_a_backlog_of_1000_rows_send_each_event_once(settings, export_topics, spawn):
    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    for order_id in orders_create(ORDERS):
        order_confirm(order_id=order_id)
    backlog = OutboxEvent.objects.filter(topic=topic, sent_at__isnull=True)
    assert backlog.count() == ORDERS

    # The backlog starts out held by a relay that died mid-claim, and its claim runs out once both
    # relays are up: Python's start-up time then cannot hand the whole backlog to the relay that
    # happened to start first, so the two really compete for it.
    backlog.update(claimed_by="relay-that-died", claimed_until=timezone.now() + timedelta(hours=1))
    env = command_env(
        ORDER_EXPORT_TOPIC=topic,
        TEST_SETTINGS='{"OUTBOX_RELAY_GRACE_SECONDS": 0, "OUTBOX_RELAY_BATCH_SIZE": 50, "OUTBOX_RELAY_INTERVAL": 0.1}',
    )
    relays = [spawn("run_outbox_relay", env), spawn("run_outbox_relay", env)]
    wait_until(
        lambda: all("relay: started" in relay.output() for relay in relays),
        timeout=60,
        message=lambda: "a relay did not start:\n" + "\n".join(relay.output() for relay in relays),
    )
    OutboxEvent.objects.filter(claimed_by="relay-that-died").update(claimed_until=timezone.now() - timedelta(seconds=1))
    wait_until(
        lambda: not backlog.exists(),
        timeout=60,
        message=lambda: (
            f"{backlog.count()} row(s) still unsent; the relays said:\n"
            + "\n".join(relay.output()[-2000:] for relay in relays)
        ),
    )
    stops = [relay.terminate(timeout=15) for relay in relays]
    outputs = [relay.output() for relay in relays]
    for (exit_code, _), output in zip(stops, outputs):
        assert exit_code == 0, output
    sent_by = [int(re.search(r"relay: stopped after sending (\d+) event\(s\)", output).group(1)) for output in outputs]

    records = read_records(topic, expected=ORDERS, timeout=30)
    outbox = {
        str(event_id): (pk, key) for pk, event_id, key in OutboxEvent.objects.values_list("pk", "event_id", "key")
    }
    record_event_ids = [dict(record.headers)["event_id"].decode() for record in records]
    per_event = records_per_event(records)
    outbox_ids_by_key: dict[str, list[int]] = defaultdict(list)
    for record, event_id in zip(records, record_event_ids):  # records come sorted by (partition, offset)
        outbox_ids_by_key[record.key.decode()].append(outbox[event_id][0])
    report_figures(
        "two relays",
        events_flowed=len(records),
        lost=len(set(outbox) - set(per_event)),
        doubled=sum(n - 1 for n in per_event.values()),
        sent_per_relay=sent_by,
        batches_per_relay=[output.count("relay: sent ") for output in outputs],
    )

    assert len(records) == ORDERS
    assert len(per_event) == ORDERS
    assert set(per_event) == set(outbox)
    assert all(record.key.decode() == outbox[event_id][1] for record, event_id in zip(records, record_event_ids))
    assert all(ids == sorted(ids) for ids in outbox_ids_by_key.values())
    assert sum(sent_by) == ORDERS, sent_by
    assert all(n > 0 for n in sent_by), f"one relay sent everything: {sent_by}"
    # Each row records where its one send landed.
    landed = {(record.partition, record.offset) for record in records}
    assert set(OutboxEvent.objects.values_list("partition", "offset")) == landed
