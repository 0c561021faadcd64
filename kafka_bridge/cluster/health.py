"""Is Kafka there? The Kafka half of `GET /api/health/`."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from kafka.errors import KafkaError

from kafka_bridge.connection import BrokerUnavailable, admin_client
from kafka_bridge.text import one_line


@dataclass(frozen=True)
class CheckResult:
    """One part of a health answer: ok, or unavailable with two reasons. `reason` is the class
    of the error, safe to show anyone; `detail` is its one-line text, which may name hosts,
    ports and users, for staff and the log."""

    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    @classmethod
    def failed(cls, exc: BaseException, *, detail: str) -> CheckResult:
        return cls(reason=type(exc).__name__, detail=one_line(detail))

    def text(self, *, detailed: bool) -> str:
        """ "ok", or "unavailable: <reason>" (with `detailed`, "unavailable: <detail>")."""
        if self.ok:
            return "ok"
        return f"unavailable: {self.detail if detailed else self.reason}"


OK = CheckResult()


def kafka_check(*, timeout_ms: int | None = None) -> CheckResult:
    """OK when a broker answers a metadata request within `timeout_ms` (default
    HEALTH_KAFKA_TIMEOUT_MS); otherwise the error: `BrokerUnavailable` or
    `BrokerAuthenticationFailed` when no broker let us in, or the KafkaError of the request.
    Never raises for Kafka trouble."""
    try:
        with admin_client(timeout_ms=timeout_ms or settings.HEALTH_KAFKA_TIMEOUT_MS) as admin:
            admin.describe_cluster()
    except BrokerUnavailable as exc:
        return CheckResult.failed(exc, detail=str(exc))
    except KafkaError as exc:
        return CheckResult.failed(exc, detail=f"{type(exc).__name__}: {exc}")
    return OK
