"""Fixtures shared by the whole suite.

Tests that touch Kafka talk to the real broker at KAFKA_BOOTSTRAP_SERVERS (`make test` starts
one) and isolate themselves with topic and group names of their own, never by wiping what other
tests or a running `make run` keep on the broker.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient

from kafka_bridge.client import BrokerUnavailable, admin_client


def _unique(prefix: str, request: pytest.FixtureRequest) -> str:
    test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:60].strip("-")
    return f"{prefix}-{test_name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_admin() -> Iterator[KafkaAdminClient]:
    """A session-wide admin client; fails the test clearly when no broker runs."""
    try:
        with admin_client(timeout_ms=10_000) as admin:
            yield admin
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}. Start one with `make kafka-up` (make test does it for you).")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`unique_name("topic")` gives a name no other test (or run) uses."""
    return lambda prefix: _unique(prefix, request)


@pytest.fixture
def kafka_topic_factory(
    kafka_admin: KafkaAdminClient, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics on the real broker and deletes them after the test."""
    created: list[str] = []

    def create(*, partitions: int = 1, prefix: str = "t") -> str:
        name = unique_name(prefix)
        kafka_admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
        )
        created.append(name)
        return name

    yield create
    if created:
        kafka_admin.delete_topics(created)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str]) -> str:
    """One fresh single-partition topic."""
    return kafka_topic_factory()


@pytest.fixture
def consumer_group(unique_name: Callable[[str], str]) -> str:
    return unique_name("g")


@pytest.fixture
def event_topics(settings, unique_name: Callable[[str], str], kafka_admin: KafkaAdminClient) -> Iterator[tuple[str, str]]:
    """Points the settings at an event topic and DLT of this test's own (not yet created)."""
    topic = unique_name("order-export")
    settings.ORDER_EXPORT_TOPIC = topic
    settings.ORDER_EXPORT_DLT_TOPIC = f"{topic}.DLT"
    yield topic, f"{topic}.DLT"
    existing = {t["name"] for t in kafka_admin.describe_topics([topic, f"{topic}.DLT"]) if t["error_code"] == 0}
    if existing:
        kafka_admin.delete_topics(sorted(existing))
