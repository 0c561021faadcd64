"""The platform's pace, on the real broker against the HTTP platform stub: a 429 with
`Retry-After` holds every call of the process until the moment it names, the circuit breaker
stops calling a failing platform and probes it one call at a time, and EXPORT_RATE_LIMIT holds
the rate of a backlog drain."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from exports.consumer import export_consumer
from exports.models import OrderExport
from exports.platform.http import HttpExternalPlatformClient
from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.runner import StopFlag
from tests.support.consumers import LoopThread
from tests.support.faults import orders_confirmed_on_the_topic, platform_tally
from tests.support.figures import report_figures
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def confirmed_backlog(settings, export_topics) -> Callable[[int], list[int]]:
    """`confirmed_backlog(n)`: n orders confirmed and their events on the topic."""
    settings.KAFKA_PUBLISH_ON_COMMIT = False

    return orders_confirmed_on_the_topic


@pytest.fixture
def http_consumer(settings, export_group, platform_stub) -> Iterator[Callable[..., ConsumerLoop]]:
    """`http_consumer(concurrency=...)` runs the export consumer in a thread, calling the stub
    over HTTP; stopped after the test the way a signal stops it."""
    settings.EXPORT_MAX_ATTEMPTS = 1000
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MS = 20
    settings.KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS = 100
    running: list[tuple[LoopThread, HttpExternalPlatformClient]] = []

    def start(*, concurrency: int = 8) -> ConsumerLoop:
        client = HttpExternalPlatformClient(url=platform_stub.url, timeout=5, pool_size=concurrency)
        consumer = LoopThread(
            export_consumer(stop=StopFlag(), client=client, concurrency=concurrency), name="export-consumer"
        )
        running.append((consumer.start(), client))
        return consumer.loop

    yield start
    for consumer, client in running:
        consumer.stop()
        client.close()
        consumer.check_stopped()


def exported_count() -> int:
    return OrderExport.objects.filter(status=OrderExport.Status.EXPORTED).count()


def test_a_429_with_retry_after_holds_every_call_of_the_process_until_then(
    confirmed_backlog, http_consumer, platform_stub
):
    order_ids = confirmed_backlog(20)
    platform_stub.down_status, platform_stub.retry_after = 429, "3"

    concurrency = 8
    http_consumer(concurrency=concurrency)
    wait_until(lambda: platform_stub.call_count() >= 1, timeout=30, message="no call reached the platform")
    # The platform is ready again at once; the consumer must still wait the 3 s it was told.
    platform_stub.down_status = None
    wait_until(lambda: exported_count() == len(order_ids), timeout=60, message=lambda: f"{exported_count()} exported")

    with platform_stub.lock:
        calls = sorted(platform_stub.calls, key=lambda call: call.at)
    first_refusal = min(call.at for call in calls if call.status == 429)
    # One call per worker may have started before the consumer read the first 429 (on a busy
    # machine they arrive spread over a tenth of a second or more, and are answered as the
    # platform then pleases); every call after that first wave must wait out the 3 s.
    later = [call.at for call in calls[concurrency:]]
    held = min(later) - first_refusal
    report_figures(
        "Retry-After",
        calls_within_the_3_s=sum(1 for call in calls if call.at < first_refusal + 3),
        first_call_after_the_first_wave_seconds=round(held, 2),
        exported=len(order_ids),
    )
    assert held >= 3 - 0.1, f"a call reached the platform {held:.2f} s after the 429"
    tally = platform_tally(platform_stub, order_ids)
    assert tally["missing"] == [] and tally["doubled"] == []


def test_the_breaker_opens_after_consecutive_failures_probes_one_call_at_a_time_and_recovers(
    settings, confirmed_backlog, http_consumer, platform_stub
):
    settings.EXPORT_BREAKER_FAILURES = 5
    settings.EXPORT_BREAKER_COOLDOWN = 1.0
    order_ids = confirmed_backlog(30)
    platform_stub.down_status = 503

    loop = http_consumer(concurrency=8)
    wait_until(lambda: loop.status()["breaker"] == "open", timeout=30, message="the breaker never opened")
    calls_when_opened = platform_stub.call_count()
    # While open: no call for the cooldown (1 s, then doubled after each failed probe); then
    # probes, one at a time.
    wait_until(lambda: platform_stub.call_count() >= calls_when_opened + 1, timeout=30, message="no probe")
    with platform_stub.lock:
        platform_stub.max_in_flight = platform_stub.in_flight
    wait_until(lambda: platform_stub.call_count() >= calls_when_opened + 2, timeout=30, message="no second probe")
    most_at_once_while_probing = platform_stub.max_in_flight
    with platform_stub.lock:
        moments = [call.at for call in platform_stub.calls]
    # The pause the cooldown made: the longest quiet spell up to the second probe.
    first_probe_after = max(b - a for a, b in zip(moments, moments[1:]))

    platform_stub.down_status = None
    wait_until(lambda: exported_count() == len(order_ids), timeout=60, message=lambda: f"{exported_count()} exported")
    wait_until(lambda: loop.status()["breaker"] == "closed", timeout=10)
    report_figures(
        "breaker",
        calls_before_open=calls_when_opened,
        most_calls_at_once_while_probing=most_at_once_while_probing,
        first_probe_after_seconds=round(first_probe_after, 2),
        exported=exported_count(),
    )
    assert first_probe_after >= 1.0 - 0.1, "a call reached the platform during the cooldown"
    assert calls_when_opened <= 5 + 8, "calls went on well past the threshold"
    assert most_at_once_while_probing == 1
    tally = platform_tally(platform_stub, order_ids)
    assert tally["missing"] == [] and tally["doubled"] == []


def test_export_rate_limit_holds_the_rate_of_a_backlog_drain(settings, confirmed_backlog, http_consumer, platform_stub):
    settings.EXPORT_RATE_LIMIT = 20.0
    order_ids = confirmed_backlog(80)

    http_consumer(concurrency=32)
    wait_until(lambda: exported_count() == len(order_ids), timeout=60, message=lambda: f"{exported_count()} exported")

    with platform_stub.lock:
        moments = sorted(call.at for call in platform_stub.calls)
    # The most calls in any one second of the drain: the rate plus the limiter's burst of a
    # tenth of a second (2 calls), and 1 for the boundaries of the window.
    busiest = max(sum(1 for t in moments if start <= t < start + 1.0) for start in moments)
    span = moments[-1] - moments[0]
    report_figures("rate limit 20/s", calls=len(moments), seconds=round(span, 2), busiest_second=busiest)
    assert busiest <= 20 + 2 + 1, f"{busiest} calls in one second"
    assert len(moments) == len(order_ids)
