"""Kafka connection settings and the admin client, built once from Django settings.

Producers, consumers and admin clients all take `connection_config()`, so the contract's
security variables apply to every connection the project opens.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient
from kafka.errors import KafkaError


class KafkaBridgeError(Exception):
    """Base class of the errors kafka_bridge raises to its callers."""


class BrokerUnavailable(KafkaBridgeError):
    """No broker answered within the configured bound."""


def bootstrap_servers() -> str:
    return ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)


def connection_config() -> dict[str, Any]:
    """kafka-python keyword arguments shared by every client: bootstrap, TLS and SASL."""
    protocol = settings.KAFKA_SECURITY_PROTOCOL
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.KAFKA_BOOTSTRAP_SERVERS),
        "security_protocol": protocol,
        # kafka-python backs off up to 30 s between reconnects; after a broker restart that
        # leaves consumers idle for half a minute. The Java client's default is 1 s.
        "reconnect_backoff_max_ms": settings.KAFKA_RECONNECT_BACKOFF_MAX_MS,
    }
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.KAFKA_SASL_MECHANISM or "PLAIN"
        config["sasl_plain_username"] = settings.KAFKA_SASL_USERNAME
        config["sasl_plain_password"] = settings.KAFKA_SASL_PASSWORD
    if protocol.endswith("SSL") and settings.KAFKA_SSL_CAFILE:
        config["ssl_cafile"] = settings.KAFKA_SSL_CAFILE
    return config


@contextmanager
def admin_client(*, timeout_ms: int | None = None) -> Iterator[KafkaAdminClient]:
    """An admin client whose bootstrap and requests are bounded by `timeout_ms`.

    Raises `BrokerUnavailable` with the bootstrap servers named when nothing answers.
    """
    timeout_ms = timeout_ms or settings.KAFKA_ADMIN_TIMEOUT_MS
    try:
        client = KafkaAdminClient(
            **connection_config(),
            client_id="orderflow-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap_servers()} within {timeout_ms / 1000:g} s "
            f"({type(exc).__name__})"
        ) from exc
    try:
        yield client
    finally:
        client.close()
