"""Prometheus metrics: what each process counts, and where it serves them.

The registry is process-wide and other tests move the same counters, so every check is a delta
between a reading before and one after, never an absolute value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from config.env import BASE_DIR
from exports.models import OrderExport
from exports.platform.client import PermanentExportError, TransientExportError
from kafka_bridge.consumer import ConsumerLoop, RetryableError
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag
from orders.services import order_confirm
from tests.support.consumers import CallEach, loop_running
from tests.support.factories import order_factory
from tests.support.helpers import wait_until
from tests.support.platforms import RecordingPlatform
from tests.support.ports import free_port
from tests.support.processes import database_url_of_test_db
from tests.support.records import produce_records

pytestmark = pytest.mark.kafka

METRIC_NAMES = [
    "orderflow_events_published_total",
    "orderflow_events_consumed_total",
    "orderflow_events_exported_total",
    "orderflow_export_attempts_failed_total",
    "orderflow_events_dead_lettered_total",
    "orderflow_export_delay_seconds",
    "orderflow_consumer_lag",
    "orderflow_consumer_calls_in_flight",
    "orderflow_consumer_retries_waiting",
    "orderflow_consumer_done_uncommitted",
    "orderflow_consumer_breaker_state",
    "orderflow_outbox_unsent",
    "orderflow_outbox_oldest_unsent_age_seconds",
    "orderflow_outbox_quarantined",
]


def sample(name: str, **labels: str) -> float:
    """The current value of one sample; 0 when it was never set."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Readings:
    """Samples read now, to compare with the same samples read later."""

    def __init__(self, **samples: tuple[str, dict[str, str]]):
        self.samples = samples
        self.before = {key: sample(name, **labels) for key, (name, labels) in samples.items()}

    def deltas(self) -> dict[str, float]:
        return {key: sample(name, **labels) - self.before[key] for key, (name, labels) in self.samples.items()}


class ScriptedPlatform(RecordingPlatform):
    """The fake platform, except that an order listed in `failures` first fails with those errors."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[int, list[Exception]] = {}

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        pending = self.failures.get(order["id"])
        if pending:
            raise pending.pop(0)
        super().send(order=order, idempotency_key=idempotency_key)


@pytest.fixture
def fake_platform() -> ScriptedPlatform:
    return ScriptedPlatform()


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


# --- the consumer and the fast path -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_confirming_and_exporting_an_order_moves_the_counters_and_the_delay_histogram(
    running_export_consumer, export_topics, export_group, fresh_publisher
):
    topic, _ = export_topics
    readings = Readings(
        published=("orderflow_events_published_total", {"path": "fast"}),
        consumed=("orderflow_events_consumed_total", {"group": export_group, "topic": topic}),
        exported=("orderflow_events_exported_total", {}),
        delays=("orderflow_export_delay_seconds_count", {}),
        delay_sum=("orderflow_export_delay_seconds_sum", {}),
        failed=("orderflow_export_attempts_failed_total", {"kind": "transient"}),
        dead_lettered=("orderflow_events_dead_lettered_total", {"group": export_group, "topic": topic}),
    )

    order = order_factory(confirmed=True)
    wait_until(lambda: readings.deltas()["consumed"] == 1, timeout=30, message=lambda: f"deltas {readings.deltas()}")
    # The fast path counts a send as published once its ack is written to the outbox.
    assert request_publisher().flush(timeout=10)

    deltas = readings.deltas()
    assert running_export_consumer.received_order_ids() == [order.pk]
    assert {key: deltas[key] for key in ("published", "consumed", "exported", "delays", "failed", "dead_lettered")} == {
        "published": 1,
        "consumed": 1,
        "exported": 1,
        "delays": 1,
        "failed": 0,
        "dead_lettered": 0,
    }
    export = OrderExport.objects.get(order_id=order.pk)
    confirmed_to_now = (timezone.now() - order.confirmed_at).total_seconds()
    assert 0 <= deltas["delay_sum"] <= confirmed_to_now
    assert export.exported_at is not None

    # The record is consumed and its partition's lag, as the consumer sees it, is back to 0.
    partition = str(OutboxEvent.objects.get(key=str(order.pk)).partition)
    lag = ("orderflow_consumer_lag", {"group": export_group, "topic": topic, "partition": partition})
    wait_until(lambda: REGISTRY.get_sample_value(*lag) == 0, timeout=10, message="the lag gauge did not reach 0")


@pytest.mark.django_db(transaction=True)
def test_failed_attempts_and_the_dead_letter_are_counted(
    running_export_consumer, export_topics, export_group, fresh_publisher
):
    topic, _ = export_topics
    readings = Readings(
        transient=("orderflow_export_attempts_failed_total", {"kind": "transient"}),
        permanent=("orderflow_export_attempts_failed_total", {"kind": "permanent"}),
        dead_lettered=("orderflow_events_dead_lettered_total", {"group": export_group, "topic": topic}),
        consumed=("orderflow_events_consumed_total", {"group": export_group, "topic": topic}),
        exported=("orderflow_events_exported_total", {}),
    )
    order = order_factory()
    running_export_consumer.failures[order.pk] = [TransientExportError("503"), PermanentExportError("422")]

    order_confirm(order_id=order.pk)
    # Until the record is done with: the dead letter is counted before the dead-letter hook marks
    # the export failed, and the record counted consumed only after that.
    wait_until(lambda: readings.deltas()["consumed"] == 1, timeout=30, message=lambda: f"deltas {readings.deltas()}")

    assert readings.deltas() == {"transient": 1, "permanent": 1, "dead_lettered": 1, "consumed": 1, "exported": 0}
    assert OrderExport.objects.get(order_id=order.pk).status == OrderExport.Status.FAILED


def test_the_lag_gauge_counts_records_behind_a_stuck_partition_and_goes_when_the_consumer_stops(
    kafka_topic, consumer_group
):
    produce_records(kafka_topic, [{"key": b"k", "value": f"v{n}".encode()} for n in range(3)])

    def never(record):
        raise RetryableError("not today")

    loop = ConsumerLoop(
        topics=[kafka_topic],
        group_id=consumer_group,
        processor=CallEach(never),
        stop=StopFlag(),
        max_attempts=1000,
        backoff_base=0.05,
        backoff_max=0.05,
    )
    labels = {"group": consumer_group, "topic": kafka_topic, "partition": "0"}
    with loop_running(loop):
        # Stuck on offset 0 with 3 records on the partition: 3 behind.
        wait_until(
            lambda: REGISTRY.get_sample_value("orderflow_consumer_lag", labels) == 3,
            timeout=30,
            message=lambda: f"lag is {REGISTRY.get_sample_value('orderflow_consumer_lag', labels)}",
        )
    assert REGISTRY.get_sample_value("orderflow_consumer_lag", labels) is None


def test_the_pipeline_gauges_show_a_retried_key_records_done_behind_it_and_calls_in_flight(kafka_topic, consumer_group):
    from kafka_bridge.consumer.pacing import Pacer

    produce_records(kafka_topic, [{"key": key, "value": key} for key in (b"stuck", b"a", b"b", b"slow")])
    release = threading.Event()

    def handler(record):
        if record.key == b"stuck":
            raise RetryableError("not today")
        if record.key == b"slow":
            release.wait(30)

    loop = ConsumerLoop(
        topics=[kafka_topic],
        group_id=consumer_group,
        processor=CallEach(handler),
        stop=StopFlag(),
        concurrency=4,
        pacer=Pacer(breaker_failures=0),
        max_attempts=1000,
        backoff_base=0.05,
        backoff_max=0.05,
    )
    group = {"group": consumer_group}
    with loop_running(loop):
        try:
            wait_until(
                lambda: (
                    (
                        sample("orderflow_consumer_calls_in_flight", **group),
                        sample("orderflow_consumer_retries_waiting", **group),
                        sample("orderflow_consumer_done_uncommitted", **group, topic=kafka_topic, partition="0"),
                    )
                    == (1, 1, 2)
                ),
                timeout=30,
                message=lambda: f"gauges: {loop.status()}",
            )
            assert REGISTRY.get_sample_value("orderflow_consumer_breaker_state", group) == 0
        finally:
            # The slow record's call ends first, so that the loop can stop.
            release.set()
    assert sample("orderflow_consumer_calls_in_flight", **group) == 0


# --- the relay -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_relay_counts_what_it_published_and_sets_the_outbox_gauges(export_topics, settings):
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    first, second = order_factory(confirmed=True), order_factory(confirmed=True)
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == 2
    relayed = Readings(published=("orderflow_events_published_total", {"path": "relay"}))

    relay = OutboxRelay(stop=StopFlag(), batch_size=1, grace=0)
    try:
        relay.run_once()
        assert relayed.deltas() == {"published": 1}
        assert sample("orderflow_outbox_unsent") == 1
        assert sample("orderflow_outbox_oldest_unsent_age_seconds") > 0
        relay.run_once()
    finally:
        relay.publisher.close()

    assert relayed.deltas() == {"published": 2}
    assert sample("orderflow_outbox_unsent") == 0
    assert sample("orderflow_outbox_oldest_unsent_age_seconds") == 0
    assert set(OutboxEvent.objects.values_list("key", flat=True)) == {str(first.pk), str(second.pk)}


# --- where the metrics are served -------------------------------------------------------------


@pytest.mark.django_db
def test_the_web_process_serves_its_metrics_at_slash_metrics(client):
    client.get("/api/orders/")  # one request through django-prometheus' middleware

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    assert "django_http_requests_total_by_view_transport_method_total" in text


@pytest.mark.django_db
def test_with_a_token_set_metrics_need_it_as_a_bearer_token(client, settings):
    settings.METRICS_AUTH_TOKEN = "s3cret"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3crét").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    assert b"orderflow_events_published_total" in response.content


def start_command(command: str, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, list[str]]:
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), command, *args],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


def stop_command(process: subprocess.Popen, lines: list[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, "".join(lines)


@pytest.mark.django_db(transaction=True)
def test_run_export_consumer_serves_metrics_on_its_port(export_topics, export_group, fresh_publisher):
    topic, dlt = export_topics
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "ORDER_EXPORT_TOPIC": topic,
        "ORDER_EXPORT_DLT_TOPIC": dlt,
        "ORDER_EXPORT_CONSUMER_GROUP": export_group,
    }
    process, lines = start_command("run_export_consumer", env, "--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        text = wait_until(
            lambda: scrape(url), timeout=30, message=lambda: f"nothing served; it said:\n{''.join(lines)}"
        )
        for name in METRIC_NAMES:
            assert f"# TYPE {name} " in text, name

        order = order_factory(confirmed=True)
        # The consumer can read the event before the marking thread has written its partition.
        assert request_publisher().flush(timeout=10)
        partition = OutboxEvent.objects.get(key=str(order.pk)).partition
        consumed = f'orderflow_events_consumed_total{{group="{export_group}",topic="{topic}"}} 1.0'
        # The gauges are set once a second: the lag line follows the counters shortly.
        lag = f'orderflow_consumer_lag{{group="{export_group}",partition="{partition}",topic="{topic}"}} 0.0'
        text = wait_until(
            lambda: (page := scrape(url)) and consumed in page and lag in page and page,
            timeout=30,
            message=lambda: f"not consumed; it said:\n{''.join(lines)}",
        )
        assert "orderflow_events_exported_total 1.0" in text
        assert "orderflow_export_delay_seconds_count 1.0" in text
    finally:
        stop_command(process, lines)


@pytest.mark.django_db(transaction=True)
def test_run_outbox_relay_serves_metrics_on_its_port(export_topics, settings):
    topic, _ = export_topics
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    order_factory(confirmed=True)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "ORDER_EXPORT_TOPIC": topic,
        "TEST_SETTINGS": '{"OUTBOX_RELAY_GRACE_SECONDS": 0, "OUTBOX_RELAY_INTERVAL": 0.2}',
    }
    process, lines = start_command("run_outbox_relay", env, "--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        text = wait_until(
            lambda: (page := scrape(url)) and 'orderflow_events_published_total{path="relay"} 1.0' in page and page,
            timeout=30,
            message=lambda: f"not relayed; it said:\n{''.join(lines)}",
        )
        assert "orderflow_outbox_unsent 0.0" in text
        assert "orderflow_outbox_oldest_unsent_age_seconds 0.0" in text
    finally:
        stop_command(process, lines)
    assert OutboxEvent.objects.get().sent_at is not None
