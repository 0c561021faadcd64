"""Variables orderflow no longer reads, each with what replaces it. A deployment that still sets
one is refused at start-up with one line naming the replacement, rather than silently running
on a default it did not choose."""

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

CONSTANT = "is now an internal setting; remove it"


def _producer(key: str, example: str) -> str:
    return f"is no longer read: set KAFKA_PRODUCER_OPTIONS='{{\"{key}\": {example}}}'"


def _consumer(key: str, example: str) -> str:
    return f"is no longer read: set KAFKA_CONSUMER_OPTIONS='{{\"{key}\": {example}}}'"


REMOVED_VARIABLES = {
    # Kafka client tuning: the options mappings.
    "KAFKA_PRODUCER_LINGER_MS": _producer("linger_ms", "5"),
    "KAFKA_PRODUCER_BATCH_SIZE": _producer("batch_size", "16384"),
    "KAFKA_PRODUCER_COMPRESSION": _producer("compression_type", '"lz4"'),
    "KAFKA_CONSUMER_MAX_POLL_RECORDS": _consumer("max_poll_records", "500"),
    "KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS": _consumer("max_poll_interval_ms", "300000"),
    "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": _consumer("session_timeout_ms", "10000"),
    "KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS": _consumer("heartbeat_interval_ms", "3000"),
    "KAFKA_CONSUMER_FETCH_MAX_WAIT_MS": _consumer("fetch_max_wait_ms", "500"),
    "KAFKA_RECONNECT_BACKOFF_MAX_MS": 'is no longer read: set "reconnect_backoff_max_ms" in KAFKA_PRODUCER_OPTIONS and KAFKA_CONSUMER_OPTIONS',
    "KAFKA_CLIENT_ID": 'is no longer read: set "client_id" in KAFKA_PRODUCER_OPTIONS and KAFKA_CONSUMER_OPTIONS',
    # Folded into a variable that says the whole decision.
    "DJANGO_SESSION_COOKIE_SECURE": "is no longer read: DJANGO_SECURE_SSL_REDIRECT=true makes both cookies secure",
    "DJANGO_CSRF_COOKIE_SECURE": "is no longer read: DJANGO_SECURE_SSL_REDIRECT=true makes both cookies secure",
    "DJANGO_SECURE_HSTS_SECONDS": "is no longer read: set DJANGO_SECURE_HSTS='max-age=<seconds>'",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "is no longer read: set DJANGO_SECURE_HSTS='max-age=<seconds>; includeSubDomains'",
    "DJANGO_SECURE_HSTS_PRELOAD": "is no longer read: set DJANGO_SECURE_HSTS='max-age=<seconds>; includeSubDomains; preload'",
    "LOG_LEVEL": "is no longer read: set LOG_LEVELS='root=<LEVEL>'",
    "KAFKA_CLIENT_LOG_LEVEL": "is no longer read: set LOG_LEVELS='kafka=<LEVEL>'",
    # Per-process choices: options of the command that runs the process.
    "EXPORT_CONCURRENCY": "is no longer read: pass run_export_consumer --concurrency <calls>",
    "EXPORT_RATE_LIMIT": "is no longer read: pass run_export_consumer --rate-limit <calls per second>",
    "METRICS_ADDR": "is no longer read: pass --metrics-addr <address> to run_export_consumer and run_outbox_relay",
    "EXPORT_CONSUMER_METRICS_PORT": "is no longer read: pass run_export_consumer --metrics-port <port>",
    "OUTBOX_RELAY_METRICS_PORT": "is no longer read: pass run_outbox_relay --metrics-port <port>",
    "EXPORT_PLATFORM": "is no longer read: set EXPORT_PLATFORM_URL for the platform; the fake one runs with DJANGO_DEBUG=true only",
    # The project's own values, no longer the environment's.
    **dict.fromkeys(
        (
            "API_PAGE_SIZE",
            "API_THROTTLE_USER_RATE",
            "API_THROTTLE_ANON_RATE",
            "API_MAX_BODY_BYTES",
            "ORDER_MAX_LINES",
            "KAFKA_ADMIN_TIMEOUT_MS",
            "KAFKA_STATUS_TIMEOUT_MS",
            "KAFKA_BROWSE_TOPICS",
            "KAFKA_PUBLISH_TIMEOUT_MS",
            "KAFKA_PUBLISH_SUSPEND_SECONDS",
            "OUTBOX_RELAY_INTERVAL",
            "OUTBOX_RELAY_BATCH_SIZE",
            "OUTBOX_RELAY_GRACE_SECONDS",
            "OUTBOX_RELAY_SEND_TIMEOUT",
            "OUTBOX_RELAY_MAX_BACKOFF",
            "OUTBOX_RELAY_CLAIM_SECONDS",
            "OUTBOX_QUARANTINE_ATTEMPTS",
            "KAFKA_CONSUMER_POLL_TIMEOUT_MS",
            "KAFKA_CONSUMER_STATS_INTERVAL",
            "KAFKA_CONSUMER_RETRY_BACKOFF_MS",
            "KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS",
            "KAFKA_DLT_SEND_TIMEOUT",
            "EXPORT_MAX_UNCOMMITTED",
            "EXPORT_BREAKER_FAILURES",
            "EXPORT_BREAKER_COOLDOWN",
            "EXPORT_MAX_EVENT_BYTES",
            "EXPORT_ATTEMPTS_KEPT",
            "HEALTH_KAFKA_TIMEOUT_MS",
            "HEALTH_CACHE_SECONDS",
            "READINESS_MAX_LAG",
            "READINESS_MAX_OUTBOX_AGE_SECONDS",
        ),
        CONSTANT,
    ),
}
REMOVED_VARIABLES["OUTBOX_RELAY_INTERVAL"] = (
    "is now an internal setting; remove it, or pass run_outbox_relay --interval"
)
REMOVED_VARIABLES["OUTBOX_RELAY_BATCH_SIZE"] = (
    "is now an internal setting; remove it, or pass run_outbox_relay --batch-size"
)
REMOVED_VARIABLES["READINESS_MAX_LAG"] = (
    "is now an internal setting; remove it, or pass export_consumer_ready --max-lag"
)
REMOVED_VARIABLES["READINESS_MAX_OUTBOX_AGE_SECONDS"] = (
    "is now an internal setting; remove it, or pass export_consumer_ready --max-outbox-age"
)


def removed_variables_refuse(environ: Mapping[str, str] | None = None) -> None:
    """Raise ImproperlyConfigured, in one line naming its replacement, for the first removed
    variable set (from the process environment or the `.env` file, which is read by now)."""
    environ = os.environ if environ is None else environ
    for name, replacement in REMOVED_VARIABLES.items():
        if name in environ:
            raise ImproperlyConfigured(f"{name} {replacement}")
