"""Metrics, health, readiness and logging."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env
from config.settings.base import DEBUG

# The web process serves /metrics; with a token set, only to `Authorization: Bearer <token>`.
# (run_export_consumer and run_outbox_relay serve theirs with --metrics-port.)
METRICS_AUTH_TOKEN = env("METRICS_AUTH_TOKEN", default=None)
# Bound on the Kafka part of GET /api/health/ and of export_consumer_ready: a probe answers
# within a kubelet's default timeout when the broker is away.
HEALTH_KAFKA_TIMEOUT_MS = 2000
# GET /api/health/ answers from the last check for this long, so a storm of probes costs one.
HEALTH_CACHE_SECONDS = 2.0
# export_consumer_ready's defaults (--max-lag, --max-outbox-age): the most lag (records) and
# outbox age (seconds) still ready.
READINESS_MAX_LAG = 1000
READINESS_MAX_OUTBOX_AGE_SECONDS = 300.0
# With OUTBOX_PUBLISHER=debezium (--max-slot-lag): the most WAL (bytes) the connector's
# replication slot may hold back and still be ready.
READINESS_MAX_SLOT_LAG_BYTES = 256 * 1024 * 1024

LOG_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# plain: one readable line per record; json: one JSON object per line with the extra fields.
LOG_FORMAT = env("LOG_FORMAT", default="plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of plain, json")
# Levels of loggers, as Spring's logging.level.<name>: `root` is the root logger's (INFO),
# `kafka` kafka-python's own (CRITICAL: it logs every failed reconnect at ERROR; the project
# reports an unreachable broker itself, in one line). The consumer's line per export is at DEBUG
# (at thousands of exports a second it cost more CPU than the export's database writes): shown in
# development (DJANGO_DEBUG=true), and wherever "exports.consumer=DEBUG" asks for it.
LOG_LEVELS = {"root": "INFO", "kafka": "CRITICAL", **({"exports.consumer": "DEBUG"} if DEBUG else {})}
for _entry in env.list("LOG_LEVELS", default=[]):
    _name, _, _level = _entry.partition("=")
    if not _name.strip() or _level.strip().upper() not in LOG_LEVEL_NAMES:
        raise ImproperlyConfigured(f"LOG_LEVELS entry {_entry!r} is not <logger>=<DEBUG|INFO|WARNING|ERROR|CRITICAL>")
    LOG_LEVELS[_name.strip()] = _level.strip().upper()
LOG_LEVEL = LOG_LEVELS.pop("root")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    # No password or URL secret in any line, kafka-python's DEBUG output included; the filter
    # rewrites the record itself, so handlers added after this one get it redacted too.
    "filters": {"secrets": {"()": "config.logging.SecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["secrets"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # runserver prints the same line itself.
        "django.utils.autoreload": {"level": "WARNING"},
        **{name: {"level": level} for name, level in LOG_LEVELS.items()},
    },
}

# OpenTelemetry is configured by its standard OTEL_* variables only (OTEL_TRACES_EXPORTER,
# OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, ...), which kafka_bridge/tracing.py and the SDK read
# as the specification says: they are OpenTelemetry's surface, not orderflow's. This one is the
# operator pages' link to a trace in the tracing UI, e.g. https://tempo.example/trace/{trace_id};
# unset: the trace id without a link.
OTEL_TRACE_URL_TEMPLATE = env("OTEL_TRACE_URL_TEMPLATE", default=None) or None
if OTEL_TRACE_URL_TEMPLATE is not None and (
    "{trace_id}" not in OTEL_TRACE_URL_TEMPLATE or not OTEL_TRACE_URL_TEMPLATE.startswith(("http://", "https://"))
):
    raise ImproperlyConfigured(
        f"OTEL_TRACE_URL_TEMPLATE={OTEL_TRACE_URL_TEMPLATE!r} must be an http(s) URL with {{trace_id}} in it, "
        "e.g. https://tempo.example/trace/{trace_id}"
    )
