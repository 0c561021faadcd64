"""What a Kafka admin client opens, it closes, also when no broker answers: the health check, the
admin's Kafka status page and `admin_client` itself leave no thread and no descriptor behind.
kafka-python 3 starts the admin client's I/O thread before it bootstraps, and a failed
bootstrap used to leave one thread and a few sockets per call."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model

from kafka_bridge.connection import BrokerUnavailable, admin_client
from tests.support.helpers import wait_until

CALLS = 20


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_nothing_left_behind(call: Callable[[], object]) -> None:
    """`call` once (it may open what stays open for good, such as the database connection),
    then CALLS times more; threads and descriptors must come back to what they were after the
    first call. Closing is asynchronous in places (the I/O thread ends after its last wake-up),
    hence the wait."""
    call()
    threads, descriptors = threading.active_count(), open_descriptors()

    for _ in range(CALLS):
        call()

    wait_until(
        lambda: threading.active_count() <= threads and open_descriptors() <= descriptors,
        timeout=5,
        message=lambda: (
            f"{threading.active_count() - threads} thread(s) and {open_descriptors() - descriptors} descriptor(s) "
            f"more than before {CALLS} calls: {sorted(t.name for t in threading.enumerate())}"
        ),
    )


@pytest.fixture
def no_broker(settings):
    """Every Kafka client built from the settings points at a port where nothing listens."""
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_KAFKA_TIMEOUT_MS = 200
    settings.KAFKA_STATUS_TIMEOUT_MS = 200
    settings.HEALTH_CACHE_SECONDS = 0


def unreachable_admin_client() -> None:
    with pytest.raises(BrokerUnavailable), admin_client(timeout_ms=200):
        pass


def test_admin_client_leaves_nothing_behind_when_no_broker_answers(no_broker):
    assert_nothing_left_behind(unreachable_admin_client)


def test_admin_client_leaves_nothing_behind_when_a_bootstrap_address_is_malformed(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:not-a-port"]

    def malformed() -> None:
        with pytest.raises(ValueError), admin_client(timeout_ms=200):
            pass

    assert_nothing_left_behind(malformed)


@pytest.mark.django_db
def test_the_health_check_leaves_nothing_behind_when_no_broker_answers(client, no_broker):
    assert_nothing_left_behind(lambda: client.get("/api/health/"))


@pytest.mark.django_db
def test_the_kafka_status_page_leaves_nothing_behind_when_no_broker_answers(client, no_broker):
    client.force_login(get_user_model().objects.create_user(username="ops", password="pw", is_staff=True))

    def page() -> None:
        assert "Kafka is unreachable" in client.get("/admin/kafka-status/").content.decode()

    assert_nothing_left_behind(page)


@pytest.mark.kafka
@pytest.mark.django_db
def test_the_health_check_leaves_nothing_behind_when_the_broker_answers(client, settings):
    settings.HEALTH_CACHE_SECONDS = 0

    def healthy() -> None:
        assert client.get("/api/health/").json()["kafka"] == "ok"

    assert_nothing_left_behind(healthy)
