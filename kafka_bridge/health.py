"""Is Kafka there? The Kafka half of `GET /api/health/`."""
from __future__ import annotations

from django.conf import settings
from kafka.errors import KafkaError

from kafka_bridge.client import BrokerUnavailable, admin_client
from kafka_bridge.dead_letter import one_line


def kafka_check(*, timeout_ms: int | None = None) -> str:
    """"ok" when a broker answers a metadata request within `timeout_ms` (default
    HEALTH_KAFKA_TIMEOUT_MS), else "unavailable: <one line>". Never raises for Kafka trouble."""
    try:
        with admin_client(timeout_ms=timeout_ms or settings.HEALTH_KAFKA_TIMEOUT_MS) as admin:
            admin.describe_cluster()
    except BrokerUnavailable as exc:
        return f"unavailable: {one_line(str(exc))}"
    except KafkaError as exc:
        return f"unavailable: {one_line(f'{type(exc).__name__}: {exc}')}"
    return "ok"
